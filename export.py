"""Exports a trained detector as a SavedModel with decoding and NMS inside the graph.

Usage:
  python export.py --model_dir=out/quickstart/model --export_dir=out/quickstart/saved_model

Signatures:
  serving_default(images: [B] tf.string, encoded JPEG/PNG)          # any sizes
  detect_image(images: [B, H, W, 3] float32 RGB 0..255)              # one size per batch
  detect_pass(images: [B, H, W, 3] float32 RGB 0..255)               # one pass at 1x
serving_default and detect_image run the --passes (the default passes, merged as detect.py
merges them: model/serving.py); detect_pass runs the image once, as it is. All return
boxes [B, K, 4] as [x, y, width, height] pixels of each image, scores [B, K], landmarks
[B, K, 10] as (x, y) pixel pairs and num_detections [B] (at most K, --max_detections).

<export_dir>/network.tflite holds the same network for TFLite (XNNPACK), raw outputs, with a
bilinear resize in front: inputs [1, H, W, 3] float of any size and the size [2] to resize it
to (multiples of 32), which model/lite_network.py fixes before running it; detect.py and the
benchmarks run it by default with the SavedModel's decoding and NMS around it
(model/runtime.py), faster on a CPU (MODEL_CARD.md).

--tflite_size=N also writes facedet_N.tflite for devices: one signature ``serve`` taking
[1, N, N, 3] float32 RGB 0..255 (resize or pad your image to N x N first), with the same
outputs (pixels of that N x N input) and NMS inside (TFLite's builtin NMS op).

The network's shape comes from <model_dir>/model_config.json, written by train.py, so an
export cannot disagree with its training run. --checkpoint=best takes the checkpoint with
the best validation AP, latest the last one, or give a checkpoint path.

The export is written into <export_dir>.partial and renamed to <export_dir> when complete
(an earlier export there is replaced only then), so no half-written export looks whole.

<export_dir>/facedet.json records the network config, the checkpoint, whether the
landmark outputs were trained (only if the training data had landmark labels) and the
serving settings (max_side, NMS) that network.tflite runs with.
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import quiet  # noqa: E402
quiet.import_tensorflow()  # first: without its start-up notices (common/quiet.py)

from absl import app, flags, logging  # noqa: E402

from common import output_dirs  # noqa: E402
from common import preemption  # noqa: E402
from model.runtime import MODEL_INFO, NETWORK_FILE, NETWORK_INT8_FILE, read_info  # noqa: E402

_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Training directory (train.py --model_dir), or an export to write '
    'again (other serving settings, passes or an int8 network; its weights are kept).')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None, 'Where to write the SavedModel.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best',
                                  "'best', 'latest', or a checkpoint path prefix.")
_MAX_SIDE = flags.DEFINE_integer('max_side', 640, 'Longer images are downscaled to this side.')
_SCORE_THRESHOLD = flags.DEFINE_float(
    'score_threshold', 0.05, 'Lowest score kept by the in-graph NMS (callers filter higher; '
    'keep it low so average precision can be measured).')
_IOU_THRESHOLD = flags.DEFINE_float('iou_threshold', 0.4, 'NMS IoU threshold.')
_MAX_DETECTIONS = flags.DEFINE_integer('max_detections', 300, 'Detections per image (padded).')
_PASSES = flags.DEFINE_list(
    'passes', ['1'], 'The passes detect.py and the benchmarks run by default, written to '
    'facedet.json: SCALE, or SCALE:MIN_SIZE:MAX_SIZE to keep only faces whose longer side '
    '(pixels of the photo) is in [MIN_SIZE, MAX_SIZE) (empty: no bound), merged by NMS; e.g. '
    '1.5:0:200,0.5:100: finds small faces in a 1.5x pass and large ones in a 0.5x pass '
    '(model/multiscale.py).')
_INT8_RECORDS = flags.DEFINE_string(
    'int8_records', None, 'Also write network_int8.tflite (int8 weights and activations, '
    'calibrated on images of these TFRecords at the first pass\'s scale), which detect.py '
    'then runs by default.')
_INT8_IMAGES = flags.DEFINE_integer(
    'int8_images', 384, 'Calibration images for the int8 network (the default model scored AP '
    '0.665 with 128, 0.668 with 384: MODEL_CARD.md).')
_TFLITE_SIZE = flags.DEFINE_integer(
    'tflite_size', 0, 'Also write <export_dir>/facedet_<N>.tflite for [1, N, N, 3] float inputs '
    '(N a multiple of 32; 0: no TFLite file).')

flags.mark_flags_as_required(['model_dir', 'export_dir'])

_MIN_FREE_GB = 0.1  # an export is a few MB; this catches a full disk, not a small one
PARTIAL_SUFFIX = '.partial'  # the export is written here, then renamed to --export_dir


def write_model_info(export_dir, config, checkpoint_path, landmarks, serving, passes=None,
                     landmarks_trained_on=None):
    """<export_dir>/facedet.json: what detect.py and a reader need to know about the model.
    serving: the Detector settings (max_side, score_threshold, iou_threshold,
    max_detections) of the export; passes: the default passes (model/multiscale.Pass),
    written when they are other than one pass at 1x; landmarks_trained_on: the export whose
    training last taught the landmarks, when this run's data had none."""
    info = {'landmarks': bool(landmarks), 'checkpoint': checkpoint_path,
            'config': json.loads(config.to_json()), 'serving': serving}
    if landmarks_trained_on:
        info['landmarks_trained_on'] = landmarks_trained_on
    if passes and [p.to_json() for p in passes] != [{'scale': 1.0}]:
        info['default_passes'] = [p.to_json() for p in passes]
    with open(os.path.join(export_dir, MODEL_INFO), 'w') as f:
        json.dump(info, f, indent=2)
    return info


def export(model, config, export_dir, max_side=640, score_threshold=0.05, iou_threshold=0.4,
           max_detections=300, folded=False, passes=None):
    """Writes the SavedModel of the network with its batch norms folded into the convolutions
    (model.detector.fold_batch_norms; folded=True: `model` is already the folded network, as
    load_export returns it); returns the serving.Detector behind its signatures.
    passes (model/multiscale.Pass): serving_default and detect_image run them, merged, as
    detect.py does, and detect_pass runs one pass at 1x (detect.py's passes call it); None
    or one pass at 1x: all three run one pass."""
    import keras
    import tensorflow as tf
    from model.detector import fold_batch_norms
    from model.serving import Detector
    if not folded:
        model = fold_batch_norms(model, config)  # same outputs, faster
    detector = Detector(model, config.strides, max_side=max_side, score_threshold=score_threshold,
                        iou_threshold=iou_threshold, max_detections=max_detections,
                        passes=None if _one_pass(passes) else list(passes))
    # No archive.track(model): the endpoints capture the weights themselves, and track() would
    # store every weight a second time under another name (keras-team/keras#23553; 2.5 MB
    # instead of 1.4 MB for the default model). The TFLite path below keeps track(), as its
    # conversion test (no NaN, same outputs) was written against.
    archive = keras.export.ExportArchive()
    archive.add_endpoint('serving_default', detector.detect_encoded,
                         input_signature=[tf.TensorSpec([None], tf.string, name='images')])
    images = [tf.TensorSpec([None, None, None, 3], tf.float32, name='images')]
    archive.add_endpoint('detect_image', detector.detect_images if _one_pass(passes)
                         else detector.detect_passes, input_signature=images)
    archive.add_endpoint('detect_pass', detector.detect_images, input_signature=images)
    archive.write_out(export_dir, verbose=False)
    export_network_tflite(model, os.path.join(export_dir, NETWORK_FILE))
    return detector


def _one_pass(passes):
    from model.multiscale import Pass
    return not passes or list(passes) == [Pass(1.0)]


def export_network_tflite(folded, path, int8_inputs=None):
    """Writes the (folded) network alone as TFLite; returns its bytes. Its inputs: `images`
    [1, None, None, 3] float 0..255 and `size` [2] int32, the height and width (multiples of
    32) the images are resized to inside, bilinearly with half-pixel centres like
    tf.image.resize. model/lite_network.py makes the size a constant before running it, so
    that XNNPACK runs the resize too. Batch one, because XNNPACK plans its buffers per input
    shape and one image at a time is what detect.py runs.

    With int8_inputs ((image [1, H, W, 3], size [2]) pairs) the weights and activations are
    int8, their ranges measured on those inputs (the input and output stay float): XNNPACK
    runs it about twice as fast on x86 CPUs with VNNI, and the scores move a little
    (MODEL_CARD.md has the AP of both)."""
    import tempfile

    import keras
    import tensorflow as tf

    def network(images, size):
        resized = tf.raw_ops.ResizeBilinear(images=images, size=size, half_pixel_centers=True)
        return folded(resized, training=False)

    archive = keras.export.ExportArchive()
    archive.track(folded)
    archive.add_endpoint('network', network, input_signature=[
        tf.TensorSpec([1, None, None, 3], tf.float32, name='images'),
        tf.TensorSpec([2], tf.int32, name='size')])
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=['network'])
        if int8_inputs is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                {'images': image, 'size': size} for image, size in int8_inputs)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converted = _convert(converter)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        f.write(converted)
    return converted


def _convert(converter):
    """converter.convert(), without the converter's harmless E0000 NodeDef notice."""
    with quiet.drop_notices(quiet.CONVERTER_NOTICES):
        return converter.convert()


def parse_pass_flags(values):
    """--passes strings -> [model.multiscale.Pass]; raises ValueError naming a bad one."""
    from model.multiscale import Pass
    passes = []
    for v in values:
        parts = v.split(':')
        try:
            if len(parts) not in (1, 3):
                raise ValueError('give SCALE or SCALE:MIN_SIZE:MAX_SIZE')
            bounds = [float(b) if b else d for b, d in zip(parts[1:], (0.0, float('inf')))]
            passes.append(Pass(float(parts[0]), *bounds))
        except ValueError as e:
            raise ValueError(f'--passes: {v!r}: {e}') from None
    if not passes:
        raise ValueError('--passes: give at least one pass, e.g. 1')
    return passes


def calibration_inputs(file_pattern, count, scale, max_side, seed=0):
    """Up to `count` (image [1, H, W, 3] float, size [2] int32) pairs of the TFRecords,
    picked at random with a fixed seed: each photo and the size a pass at `scale` resizes it
    to inside the network (capped at max_side, as detect.py does, and rounded to a multiple
    of 32), the inputs from which int8 conversion measures each layer's range."""
    import numpy as np
    import tensorflow as tf
    from data.features import parse_example
    from data.pipeline import list_shards
    from model.lite_network import MULTIPLE
    records = tf.data.TFRecordDataset(list_shards(file_pattern))
    total = sum(1 for _ in records)  # streamed twice rather than held in memory
    if not total:
        raise ValueError(f'{file_pattern}: no records to calibrate the int8 network on')
    picked = set(np.random.default_rng(seed).choice(total, min(count, total), replace=False))
    inputs = []
    for i, serialized in enumerate(records):
        if i not in picked:
            continue
        image = parse_example(serialized)['image'].numpy().astype(np.float32)
        h, w = image.shape[:2]
        fit = min(scale, max_side / max(h, w))
        size = [max(MULTIPLE, round(side * fit / MULTIPLE) * MULTIPLE) for side in (h, w)]
        inputs.append((image[None], np.array(size, np.int32)))
    return inputs


def export_tflite(model, config, path, size, score_threshold=0.05, iou_threshold=0.4,
                  max_detections=300, folded=False):
    """Writes a TFLite file for [1, size, size, 3] inputs; returns its bytes (folded: `model`
    is the folded network already)."""
    import tempfile

    import keras
    import tensorflow as tf
    from model.detector import fold_batch_norms
    from model.serving import Detector
    if size % 32:
        raise ValueError(f'--tflite_size must be a multiple of 32, got {size}')
    if not folded:
        model = fold_batch_norms(model, config)
    detector = Detector(model, config.strides, max_side=size, score_threshold=score_threshold,
                        iou_threshold=iou_threshold, max_detections=max_detections)
    archive = keras.export.ExportArchive()
    archive.track(model)
    # A static batch of one keeps NMS out of a WHILE loop, which TFLite fails to run here.
    archive.add_endpoint('serve', detector.detect_images, input_signature=[
        tf.TensorSpec([1, size, size, 3], tf.float32, name='images')])
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        converted = _convert(tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=['serve']))
    with open(path, 'wb') as f:
        f.write(converted)
    return converted


def load_source(model_dir, checkpoint):
    """(model, config, checkpoint path, landmarks trained, whether the model is folded) of a
    training directory (its network with batch norms) or of an export (its folded network,
    written again as it is; its facedet.json's checkpoint and landmarks carry over)."""
    from training.checkpoints import (is_export, landmarks_trained, load_export, load_trained,
                                      non_finite_weight)
    if is_export(model_dir):
        folded, config = load_export(model_dir)
        info = read_info(model_dir)
        source = folded, config, info.get('checkpoint'), info.get('landmarks', True), True
    else:
        model, config, path = load_trained(model_dir, checkpoint)
        source = model, config, path, landmarks_trained(path), False
    bad = non_finite_weight(source[0])
    if bad:
        raise ValueError(f'{source[2] or model_dir}: weight {bad} holds NaN or inf; export '
                         'an earlier checkpoint (--checkpoint=PATH) or retrain')
    return source


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        passes = parse_pass_flags(_PASSES.value)
        if os.path.abspath(_MODEL_DIR.value) == os.path.abspath(_EXPORT_DIR.value):
            raise ValueError('--export_dir must differ from --model_dir')
        output_dirs.check_output_dir(os.path.dirname(os.path.abspath(_EXPORT_DIR.value)),
                                     _MIN_FREE_GB)
        if _INT8_RECORDS.value:  # before anything is written
            from data.pipeline import list_shards
            list_shards(_INT8_RECORDS.value)
        model, config, path, landmarks, folded = load_source(_MODEL_DIR.value, _CHECKPOINT.value)
    except (FileNotFoundError, ValueError, output_dirs.OutputDirError) as e:
        sys.exit(f'export.py: error: {e}')
    serving = dict(max_side=_MAX_SIDE.value, score_threshold=_SCORE_THRESHOLD.value,
                   iou_threshold=_IOU_THRESHOLD.value, max_detections=_MAX_DETECTIONS.value)
    passes, serving, landmarks, landmarks_from = inherit_from_source(
        _MODEL_DIR.value, passes, serving, landmarks)
    preemption.raise_on_sigterm()  # the finally below runs, as for Ctrl-C
    staging = staging_dir(_EXPORT_DIR.value)
    try:
        _write_all(staging, model, config, path, landmarks, folded, serving, passes,
                   landmarks_from)
        publish(staging, _EXPORT_DIR.value)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'export.py: error: {e}')
    except preemption.Terminated:
        print(f'export.py: terminated (SIGTERM): nothing written to {_EXPORT_DIR.value}',
              file=sys.stderr)
        sys.exit(preemption.EXIT_STATUS)
    finally:  # whatever stopped it, no half-written export is left behind
        shutil.rmtree(staging, ignore_errors=True)
    print(f'exported {path} -> {_EXPORT_DIR.value} (signatures: serving_default, detect_image, '
          f'detect_pass; {NETWORK_FILE} for TFLite)')
    print('default passes: ' + ', '.join(p.describe() for p in passes))
    if landmarks_from:
        print(f'landmarks: as trained for {landmarks_from} (this run\'s data had no landmark '
              'labels, so it left them as they were)')
    elif not landmarks:
        print('note: no landmark labels were in the training data; the landmark outputs are '
              'untrained, and detect.py leaves them out')


def inherit_from_source(model_dir, passes, serving, landmarks):
    """(passes, serving, landmarks, landmarks_trained_on) for a run that started from an
    export (train.py --init_from=<export>): the source's default passes and serving
    settings where export.py's flags do not name others, and its landmarks when it had them
    and this run's data had no landmark labels (faces without labels add no landmark loss,
    so the outputs stay what the source learnt)."""
    from model.multiscale import parse_passes
    from training.checkpoints import init_export, is_export
    source = None if is_export(model_dir) else init_export(model_dir)
    if source is None:
        return passes, serving, landmarks, None
    info = read_info(source)
    if not _PASSES.present and info.get('default_passes'):
        passes = parse_passes(info['default_passes'], f'{source}: default_passes')
    serving = {k: v if flags.FLAGS[k].present else info.get('serving', {}).get(k, v)
               for k, v in serving.items()}
    if landmarks or not info.get('landmarks'):
        return passes, serving, landmarks, None
    return passes, serving, True, info.get('landmarks_trained_on') or source


def staging_dir(export_dir):
    """A fresh <export_dir>.partial to write the export into (a killed export's is removed)."""
    staging = os.path.abspath(export_dir).rstrip(os.sep) + PARTIAL_SUFFIX
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    return staging


def publish(staging, export_dir):
    """Moves the complete export from staging to export_dir; an earlier export there is
    replaced only now (moved aside, then removed), so export_dir always holds a whole one."""
    old = os.path.abspath(export_dir).rstrip(os.sep) + '.old'
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(export_dir):
        os.replace(export_dir, old)
    os.replace(staging, export_dir)
    shutil.rmtree(old, ignore_errors=True)


def _write_all(out_dir, model, config, path, landmarks, folded, serving, passes,
               landmarks_from=None):
    """Every file of the export, into out_dir (the staging folder)."""
    detector = export(model, config, out_dir, folded=folded, passes=passes, **serving)
    if _INT8_RECORDS.value:
        try:
            inputs = calibration_inputs(_INT8_RECORDS.value, _INT8_IMAGES.value,
                                        passes[0].scale, serving['max_side'])
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f'--int8_records: {e}') from None
        export_network_tflite(detector.model, os.path.join(out_dir, NETWORK_INT8_FILE), inputs)
        print(f'{NETWORK_INT8_FILE}: int8, calibrated on {len(inputs)} images of '
              f'{_INT8_RECORDS.value} at {passes[0].scale:g}x')
    if _TFLITE_SIZE.value:
        name = f'facedet_{_TFLITE_SIZE.value}.tflite'
        export_tflite(detector.model, config, os.path.join(out_dir, name), _TFLITE_SIZE.value,
                      score_threshold=_SCORE_THRESHOLD.value,
                      iou_threshold=_IOU_THRESHOLD.value,
                      max_detections=_MAX_DETECTIONS.value, folded=True)
        print(f'TFLite: {os.path.join(_EXPORT_DIR.value, name)}')
    # facedet.json last: is_export() needs it, so an export cut short never looks whole.
    write_model_info(out_dir, config, path, landmarks, serving, passes, landmarks_from)

if __name__ == '__main__':
    app.run(main)
