"""Loads an export for inference: the SavedModel's detect_image signature, or the same
network run by TFLite (XNNPACK) with the same preprocessing, decoding and NMS around it.

export.py writes ``network.tflite`` beside the SavedModel: the network alone (batch norms
folded) with a resize in front (model/lite_network.py), and with --int8_records
``network_int8.tflite``, the same network with int8 weights and activations. An
interpreter is planned per input size and resize size (a few are kept): a pass at another
scale (model/multiscale.py) resizes inside the network where it can
(``LiteSignature.can_resize``). Decoding and NMS are a NumPy twin of model/serving.py's
finish around TensorFlow's NMS kernel (tests/test_export.py checks that both runtimes
return the same detections): on a 2-core CPU about 0.3-1 ms a call, most of it the NMS
kernel, against 2.5 ms for the same steps as a TensorFlow graph, whose cost per op
dominates at these sizes (timings in MODEL_CARD.md).

Both loaders return a callable with the signature's interface:
``fn(images=[1, H, W, 3] float32 0..255) -> {'boxes', 'scores', 'landmarks',
'num_detections'}`` (model/serving.py documents them), as tensors from the SavedModel and
NumPy arrays from TFLite. The TFLite one also takes ``resize_to=(height, width)``: the
images resized to that size inside the network, and the boxes in its pixels.
"""

import collections
import json
import os
import warnings

import numpy as np

from common import quiet
from model.lite_network import MULTIPLE as _MULTIPLE

# The files export.py writes beside the SavedModel (this module imports no TensorFlow at the
# top, so export.py and detect.py take these names from here without slowing --help).
NETWORK_FILE = 'network.tflite'
# The same network with int8 weights and activations (export.py --int8_records): faster only
# on CPUs with int8 dot products; 'auto' takes it there (fast_int8).
NETWORK_INT8_FILE = 'network_int8.tflite'
# /proc/cpuinfo flags of x86 int8 dot products (AVX-512 VNNI, AVX-VNNI). Without them int8
# was slower: 22.9 against 18.4 ms per 640x480 photo on an AMD EPYC with AVX2 (README).
INT8_CPU_FLAGS = ('avx512_vnni', 'avx_vnni')
CPUINFO = '/proc/cpuinfo'
MODEL_INFO = 'facedet.json'
RUNTIMES = ('auto', 'tflite_int8', 'tflite', 'savedmodel')
_PLANNED_SHAPES = 4  # interpreters kept, one per input shape (LiteSignature._interpreter)


def load(export_dir, runtime='auto', num_threads=None):
    """Returns (detect_image callable, runtime name). 'auto' takes network_int8.tflite on a
    CPU with int8 dot products (fast_int8), else network.tflite, when the export has it and
    its serving settings in facedet.json (export.py writes them), else the SavedModel. Raises FileNotFoundError naming what is
    missing, ValueError for an unknown runtime or an export without the settings."""
    if runtime not in RUNTIMES:
        raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
    if runtime == 'auto':
        lites = (('tflite_int8', NETWORK_INT8_FILE),) if fast_int8() else ()
        runtime = next((name for name, file in lites + (('tflite', NETWORK_FILE),)
                        if _has_lite(export_dir, file)), 'savedmodel')
    if runtime in ('tflite', 'tflite_int8'):
        file = NETWORK_INT8_FILE if runtime == 'tflite_int8' else NETWORK_FILE
        return LiteSignature(export_dir, num_threads, file), runtime
    if not os.path.exists(os.path.join(export_dir, 'saved_model.pb')):
        raise FileNotFoundError(
            f'{export_dir} is not a SavedModel; export one with export.py and pass --model')
    import tensorflow as tf
    loaded = tf.saved_model.load(export_dir)
    # detect_pass: one pass (model/multiscale.run_scales runs the passes on it); exports
    # before it have detect_image alone, one pass too.
    signature = loaded.signatures.get('detect_pass', loaded.signatures['detect_image'])
    signature.loaded = loaded  # keeps the variables alive as long as the signature
    # The longest side its network takes (model/multiscale.run_scales reads it); exports
    # without facedet.json leave it unset.
    signature.max_side = read_info(export_dir).get('serving', {}).get('max_side')
    return signature, 'savedmodel'


def fast_int8(cpuinfo=None):
    """Whether the CPU has int8 dot products (INT8_CPU_FLAGS in /proc/cpuinfo's flags), where
    network_int8.tflite beats network.tflite. False where the file is missing (not Linux)."""
    try:
        with open(cpuinfo or CPUINFO) as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), [])
    except OSError:
        return False
    return any(flag in flags for flag in INT8_CPU_FLAGS)


def read_info(export_dir):
    """The export's facedet.json as a dict; {} for an export without one (written before
    export.py wrote it)."""
    info_path = os.path.join(export_dir, MODEL_INFO)
    if not os.path.exists(info_path):
        return {}
    with open(info_path) as f:
        return json.load(f)


def default_passes(export_dir):
    """The export's default passes (facedet.json 'default_passes', model/multiscale.Pass
    dicts), or one pass at 1x for exports without them."""
    from model.multiscale import Pass, parse_passes
    passes = read_info(export_dir).get('default_passes')
    if passes is None:
        return [Pass(1.0)]
    return parse_passes(passes, f'{os.path.join(export_dir, MODEL_INFO)}: default_passes')


def _has_lite(export_dir, file=NETWORK_FILE):
    return (os.path.exists(os.path.join(export_dir, file)) and
            'serving' in read_info(export_dir))


class LiteSignature:
    """network.tflite (or network_int8.tflite) inside model/serving.Detector's preprocessing
    and the same postprocessing."""

    def __init__(self, export_dir, num_threads=None, file=NETWORK_FILE):
        import tensorflow as tf

        from data.augment import PAD_VALUE
        from model.detector import BOX, CLS, LMK, QUALITY, DetectorConfig
        from model.lite_network import Network
        from model.postprocess import PRE_NMS_TOP_K
        from model.serving import Detector
        path = os.path.join(export_dir, file)
        info_path = os.path.join(export_dir, MODEL_INFO)
        for required in (path, info_path):
            if not os.path.exists(required):
                raise FileNotFoundError(f'{required}: no such file (export the model again '
                                        'with export.py to run it with TFLite)')
        info = read_info(export_dir)
        if 'serving' not in info:
            raise ValueError(f'{info_path} has no "serving" settings; export the model again')
        config = DetectorConfig.from_json(json.dumps(info['config']))
        detector = Detector(None, config.strides, **info['serving'])
        self.max_side = info['serving']['max_side']  # longer sides downscaled, as Detector's
        self._pad_value = PAD_VALUE
        with open(path, 'rb') as f:
            self._network = Network(f.read(), path)
        self._num_threads = num_threads or os.cpu_count()
        self._interpreters = collections.OrderedDict()  # (shape, resize size) -> interpreter
        self._prepare = tf.function(detector.prepare, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32)])
        self._strides, self._nms = tuple(config.strides), dict(info['serving'])
        # The raw outputs' columns (model/detector.py) and the points NMS takes.
        self._cls, self._box, self._lmk = CLS.start, BOX, LMK
        self._quality, self._top_k = QUALITY.start, PRE_NMS_TOP_K
        self._point_cache = {}

    def __call__(self, images, resize_to=None):
        images = np.asarray(images)  # float32, or uint8 as decoded: cast in the input buffer
        if not len(images):
            raise ValueError('images: an empty batch')
        if resize_to is not None and not self.can_resize(*images.shape[1:3], *resize_to):
            raise ValueError(f'cannot resize {images.shape[1]}x{images.shape[2]} images to '
                             f'{resize_to[0]}x{resize_to[1]} inside the network (see '
                             'can_resize)')
        outs = [self._one(image[None], resize_to) for image in images]
        return {k: np.concatenate([o[k] for o in outs], 0) for k in outs[0]}

    def can_resize(self, height, width, to_height, to_width):
        """Whether images of height x width can be resized to to_height x to_width inside
        the network (a pass at another scale, model/multiscale.py): see _resize_plan."""
        return self._resize_plan((height, width), (to_height, to_width)) is not None

    def _resize_plan(self, size, resize_to):
        """(canvas, network size) to resize images of `size` to `resize_to` inside the
        network, or None. The network takes multiples of 32: another size is reached by
        padding the image (grey, as the SavedModel pads its input) to a canvas that resizes
        to the next multiple of 32 at the same scale, where that canvas is whole pixels
        (a 480-row photo at 0.5x: 512 rows resized to 256, of which 240 hold the photo).
        None for files without the resize (exports before it) and beyond max_side."""
        if not self._network.resizes:
            return None
        canvas, network = [], []
        for side, to in zip(size, resize_to):
            target = to + -to % _MULTIPLE
            padded, rest = divmod(target * side, to) if to > 0 else (0, 1)
            if rest or target > self.max_side:
                return None
            canvas.append(padded)
            network.append(target)
        return tuple(canvas), tuple(network)

    def _one(self, image, resize_to=None):
        """[1, H, W, 3] -> the signature's outputs for that image (resized to resize_to
        inside the network, and the boxes in its pixels, when given)."""
        height, width = image.shape[1:3]
        if resize_to is not None:
            (canvas_h, canvas_w), network = self._resize_plan((height, width), resize_to)
            shape, source, canvas = (1, canvas_h, canvas_w, 3), image, network
            # The network's pixels are the resized image's, padded beyond resize_to.
            sizes = fitted = np.array([resize_to], np.int32)
        else:
            if max(height, width) > self.max_side:  # downscaling: the SavedModel's own code
                source, sizes, fitted = (t.numpy() for t in self._prepare(
                    np.asarray(image, np.float32)))
            else:  # the common case, without TensorFlow's per-call overhead (about 2 ms)
                source = image
                sizes = fitted = np.array([[height, width]], np.int32)
            canvas = tuple(side + -side % _MULTIPLE for side in source.shape[1:3])
            shape, network = (1, *canvas, 3), None
        interpreter, input_index, output_index = self._interpreter(shape, network)
        # The image goes straight into the interpreter's input buffer (cast there, padded
        # there), and the output is read where it lies: no float or padded copy of a photo
        # per call (fresh arrays of megabytes each call cost milliseconds here; see
        # model/multiscale._resize).
        _fill(interpreter.tensor(input_index)(), source, self._pad_value)
        interpreter.invoke()
        return self._finish(interpreter.tensor(output_index)()[0], canvas, sizes[0], fitted[0])

    def _interpreter(self, shape, resize_to=None):
        """(interpreter, input index, output index) planned for inputs of `shape`, resized to
        `resize_to` inside (None: no resize). XNNPACK plans its buffers per input shape,
        which costs more than a pass itself, so each of the last few keeps its own
        interpreter: passes at two scales (default_passes) alternate between two."""
        import tensorflow as tf
        key = (tuple(shape), resize_to)
        if key in self._interpreters:
            self._interpreters.move_to_end(key)
            return self._interpreters[key]
        # TFLite's C++ logger says "Created TensorFlow Lite XNNPACK delegate" for each one,
        # with no setting to stop it: common/quiet.py drops that line and keeps the rest.
        with warnings.catch_warnings(), quiet.drop_notices():
            warnings.simplefilter('ignore', UserWarning)  # its deprecation notice, TF 2.22+
            interpreter = tf.lite.Interpreter(model_content=self._network.for_size(resize_to),
                                              num_threads=self._num_threads)
            input_index = interpreter.get_input_details()[0]['index']
            interpreter.resize_tensor_input(input_index, shape)
            interpreter.allocate_tensors()
        self._interpreters[key] = (interpreter, input_index,
                                   interpreter.get_output_details()[0]['index'])
        if len(self._interpreters) > _PLANNED_SHAPES:
            self._interpreters.popitem(last=False)
        return self._interpreters[key]

    def _points(self, height, width):
        """model/anchors.py's points (y, x) [P, 2] and strides [P] for a padded input size,
        cached (photos of one size share them)."""
        from model.anchors import anchor_points
        key = (height, width)
        if key not in self._point_cache:
            if len(self._point_cache) >= _PLANNED_SHAPES:
                self._point_cache.pop(next(iter(self._point_cache)))
            points, strides, _ = anchor_points(height, width, self._strides)
            self._point_cache[key] = (points.numpy(), strides.numpy())
        return self._point_cache[key]

    def _finish(self, raw, padded_size, size, fitted):
        """Raw outputs [P, C] of one image -> the signature's outputs, as model/serving.py's
        finish computes them (scores, the best pre_nms_top_k points, decoding, NMS, boxes in
        the original image's pixels) but in NumPy around TensorFlow's NMS kernel: about 1 ms
        instead of 2.5 for the graph, whose fixed cost per op dominates at these sizes."""
        import tensorflow as tf
        pad_h, pad_w = (int(v) for v in padded_size)
        points, strides = self._points(pad_h, pad_w)
        scores = _sigmoid(raw[:, self._cls])
        if raw.shape[1] > self._quality:
            scores = scores * _sigmoid(raw[:, self._quality])
        candidates = np.flatnonzero(scores > self._nms['score_threshold'])
        if len(candidates) > self._top_k:
            candidates = candidates[np.argpartition(-scores[candidates], self._top_k)[
                :self._top_k]]
        candidates = candidates[np.argsort(-scores[candidates], kind='stable')]
        rows, at, stride = raw[candidates], points[candidates], strides[candidates, None]
        d = np.logaddexp(0.0, rows[:, self._box]) * stride  # softplus distances, in pixels
        canvas = np.array([pad_h, pad_w], np.float32)
        boxes = np.clip(np.concatenate([at - d[:, :2], at + d[:, 2:]], 1) / np.tile(canvas, 2),
                        0.0, 1.0)
        keep = tf.raw_ops.NonMaxSuppressionV4(
            boxes=boxes, scores=scores[candidates],
            max_output_size=self._nms['max_detections'],
            iou_threshold=self._nms['iou_threshold'],
            score_threshold=self._nms['score_threshold'],
            pad_to_max_output_size=False)[0].numpy()
        # Normalized (of the padded canvas) -> pixels of the original image.
        to_px = canvas * np.asarray(size, np.float32) / np.asarray(fitted, np.float32)
        yxyx = np.clip(boxes[keep] * np.tile(to_px, 2), 0.0,
                       np.tile(np.asarray(size, np.float32), 2))
        marks = ((rows[keep, self._lmk] * stride[keep] + np.tile(at[keep], 5)) /
                 np.tile(canvas, 5))
        marks = (marks.reshape(-1, 5, 2) * to_px)[..., ::-1].reshape(-1, 10)
        n, k = len(keep), self._nms['max_detections']
        out = {'boxes': np.zeros([1, k, 4], np.float32), 'scores': np.zeros([1, k], np.float32),
               'landmarks': np.zeros([1, k, 10], np.float32),
               'num_detections': np.array([n], np.int32)}
        out['boxes'][0, :n] = np.stack([yxyx[:, 1], yxyx[:, 0], yxyx[:, 3] - yxyx[:, 1],
                                        yxyx[:, 2] - yxyx[:, 0]], 1)
        out['scores'][0, :n] = scores[candidates][keep]
        out['landmarks'][0, :n] = marks
        return out


def _fill(buffer, image, pad_value):
    """Writes image [1, h, w, 3] into the top left of buffer [1, H, W, 3], the rest pad_value."""
    height, width = image.shape[1:3]
    buffer[:, :height, :width] = image
    buffer[:, height:] = pad_value
    buffer[:, :height, width:] = pad_value


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # 1 / (1 + exp(-x)) without overflow
