"""Loads an export for inference: the SavedModel's detect_image signature, or the same
network run by TFLite (XNNPACK) with the same preprocessing, decoding and NMS around it.

On a 2-core CPU a whole call on a 640x480 photo took 10-16 ms this way against 17-21 ms
for the SavedModel (the network 6.5-11 ms in TFLite, decoding and NMS 2.3-2.9 ms in
TensorFlow; benchmark rows in MODEL_CARD.md). export.py writes
``network.tflite`` beside the SavedModel: the network alone (batch norms folded), with a
``[1, H, W, 3]`` input of any size that is a multiple of 32; the interpreter is resized when
an image of another size comes. Decoding and NMS stay in TensorFlow (model/serving.py's),
so both runtimes return the same detections up to float rounding.

Both loaders return a callable with the signature's interface:
``fn(images=[1, H, W, 3] float32 0..255) -> {'boxes', 'scores', 'landmarks',
'num_detections'}`` as tensors (model/serving.py documents them).
"""

import json
import os
import warnings

import numpy as np

# The files export.py writes beside the SavedModel (this module imports no TensorFlow at the
# top, so export.py and detect.py take these names from here without slowing --help).
NETWORK_FILE = 'network.tflite'
MODEL_INFO = 'facedet.json'
RUNTIMES = ('auto', 'tflite', 'savedmodel')
_MULTIPLE = 32  # the network's largest stride (model/serving.py pads to it too)


def load(export_dir, runtime='auto', num_threads=None):
    """Returns (detect_image callable, runtime name). 'auto' takes TFLite when the export
    has network.tflite and its serving settings in facedet.json (export.py writes both),
    else the SavedModel. Raises FileNotFoundError naming what is missing, ValueError for an
    unknown runtime or an export without the settings."""
    if runtime not in RUNTIMES:
        raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
    if runtime == 'tflite' or (runtime == 'auto' and _has_lite(export_dir)):
        return LiteSignature(export_dir, num_threads), 'tflite'
    if not os.path.exists(os.path.join(export_dir, 'saved_model.pb')):
        raise FileNotFoundError(
            f'{export_dir} is not a SavedModel; export one with export.py and pass --model')
    import tensorflow as tf
    loaded = tf.saved_model.load(export_dir)
    signature = loaded.signatures['detect_image']
    signature.loaded = loaded  # keeps the variables alive as long as the signature
    return signature, 'savedmodel'


def _has_lite(export_dir):
    info_path = os.path.join(export_dir, MODEL_INFO)
    if not (os.path.exists(os.path.join(export_dir, NETWORK_FILE)) and os.path.exists(info_path)):
        return False
    with open(info_path) as f:
        return 'serving' in json.load(f)


class LiteSignature:
    """network.tflite inside model/serving.Detector's preprocessing and postprocessing."""

    def __init__(self, export_dir, num_threads=None):
        import tensorflow as tf

        from data.augment import PAD_VALUE
        from model.detector import DetectorConfig, num_outputs
        from model.serving import Detector
        path = os.path.join(export_dir, NETWORK_FILE)
        info_path = os.path.join(export_dir, MODEL_INFO)
        for required in (path, info_path):
            if not os.path.exists(required):
                raise FileNotFoundError(f'{required}: no such file (export the model again '
                                        'with export.py to run it with TFLite)')
        with open(info_path) as f:
            info = json.load(f)
        if 'serving' not in info:
            raise ValueError(f'{info_path} has no "serving" settings; export the model again')
        config = DetectorConfig.from_json(json.dumps(info['config']))
        detector = Detector(None, config.strides, **info['serving'])
        self._max_side, self._pad_value = info['serving']['max_side'], PAD_VALUE
        with warnings.catch_warnings():  # its deprecation notice, for TF 2.22+ (we pin < 2.22)
            warnings.simplefilter('ignore', UserWarning)
            self._interpreter = tf.lite.Interpreter(model_path=path,
                                                    num_threads=num_threads or os.cpu_count())
        self._input = self._interpreter.get_input_details()[0]['index']
        self._output = self._interpreter.get_output_details()[0]['index']
        self._shape = None
        self._prepare = tf.function(detector.prepare, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32)])
        self._finish = tf.function(detector.finish, input_signature=[
            tf.TensorSpec([1, None, num_outputs(config)], tf.float32),
            tf.TensorSpec([2], tf.int32), tf.TensorSpec([1, 2], tf.int32),
            tf.TensorSpec([1, 2], tf.int32)])

    def __call__(self, images):
        import tensorflow as tf
        images = np.asarray(images, np.float32)
        if not len(images):
            raise ValueError('images: an empty batch')
        outs = [self._one(image[None]) for image in images]
        return {k: tf.concat([o[k] for o in outs], 0) for k in outs[0]}

    def _one(self, image):
        """[1, H, W, 3] -> the signature's outputs for that image."""
        height, width = image.shape[1:3]
        if max(height, width) > self._max_side:  # downscaling: the SavedModel's own code
            padded, sizes, fitted = (t.numpy() for t in self._prepare(image))
        else:  # the common case, without TensorFlow's per-call overhead (about 2 ms)
            sizes = fitted = np.array([[height, width]], np.int32)
            pad_h, pad_w = (-height % _MULTIPLE), (-width % _MULTIPLE)
            padded = image if not (pad_h or pad_w) else np.pad(
                image, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)], constant_values=self._pad_value)
        if self._shape != padded.shape:  # XNNPACK plans its buffers per input shape
            self._interpreter.resize_tensor_input(self._input, padded.shape)
            self._interpreter.allocate_tensors()
            self._shape = padded.shape
        self._interpreter.set_tensor(self._input, padded)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output)
        return self._finish(raw, np.array(padded.shape[1:3], np.int32), sizes, fitted)
