"""Finds faces in your photos with a model exported by export.py.

Usage:
  python detect.py --model=out/quickstart/saved_model --input=photo.jpg --output=out/detect
  python detect.py --input=photos/ --output=out/detect --score_threshold=0.6

Writes <output>/detections.jsonl, one line per image:
  {"image": "<path as given>", "width": W, "height": H,
   "boxes": [[x, y, w, h], ...], "scores": [...], "landmarks": [[x0, y0, ..., x4, y4], ...]}
(pixels of the image as displayed, EXIF rotation applied; no "landmarks" key when the
model's facedet.json says its landmarks were never trained), and an annotated PNG per image
(--max_pngs caps how many). Without --model, the pretrained default model is used when the
project ships one (models/facedet_default).

Every input gets exactly one line. An input that cannot be read gets
  {"image": "<path as given>", "error": "<what is wrong, naming no Python object>"}
and no other key: no "boxes", so that nothing reads it as a photo without faces. Errors:
"not an image (0 bytes)", "not an image (N bytes in no format PIL reads)", "truncated JPEG
(...)", "WxH = P MP is over max_pixels=..." (--max_pixels, checked from the file's header
before decoding: a 30000x30000 PNG is refused without allocating its 2.7 GB), "no such file".
Each is also printed to stderr ("unreadable: <path>: <error>"), and the summary counts them:
  "N images, M unreadable (listed in <output>/detections.jsonl with an error); F faces ..."

Exit status: 0 when at least one image was read (a folder with a few broken files is still
a finished run, and the broken ones are listed, not lost); 1 when none was (a wrong folder,
a wrong --max_pixels), and 1 for a missing model or --input, as before. A script that must
have every image can check for "error" lines in detections.jsonl.

The export's network.tflite (float; network_int8.tflite instead on a CPU with int8 dot
products, AVX-512 VNNI or AVX-VNNI, where int8 is the faster) runs the network (TFLite with XNNPACK, faster than TensorFlow on a CPU: MODEL_CARD.md), inside
the same preprocessing, decoding and NMS as the SavedModel's (model/runtime.py);
--runtime=savedmodel runs the SavedModel alone, as do exports written before export.py
wrote network.tflite. Each photo runs in the export's default passes (facedet.json
default_passes, e.g. 1.5x for faces under 200 px and 0.5x for faces of 100 px and more,
merged by NMS; model/multiscale.py), or at --scales.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import quiet  # noqa: E402
quiet.import_tensorflow()  # first: without its start-up notices (common/quiet.py)

from absl import app, flags, logging  # noqa: E402

from preprocess.items import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS  # noqa: E402

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'models',
                             'facedet_default')

_MODEL = flags.DEFINE_string('model', None, 'export.py --export_dir (default: the pretrained '
                             'model in models/facedet_default).')
_INPUT = flags.DEFINE_string('input', None, 'An image file or a folder of images (recursive).')
_OUTPUT = flags.DEFINE_string('output', 'out/detect', 'Where detections.jsonl and PNGs go.')
_SCORE_THRESHOLD = flags.DEFINE_float('score_threshold', 0.5, 'Keep faces scoring at least this.')
_DRAW_THRESHOLD = flags.DEFINE_float('draw_threshold', None, 'Draw faces scoring at least this '
                                     'in the PNGs (default: --score_threshold, at least 0.5).')
_SCALES = flags.DEFINE_list(
    'scales', None, "Run the model at each of these image scales and merge the detections "
    "with NMS (boxes in the original pixels), instead of the export's default passes "
    '(facedet.json default_passes: the pretrained model finds small faces at 1.5x and large '
    'ones at 0.5x). 1 runs the photo as it is; 1,1.5 keeps every face of both passes. The '
    'network still caps the long side at the export\'s --max_side.')
_RUNTIME = flags.DEFINE_enum(
    'runtime', 'auto', ['auto', 'tflite_int8', 'tflite', 'savedmodel'], 'What runs the '
    "network: the export's network_int8.tflite (int8, faster only on CPUs with VNNI), "
    'network.tflite (float), the SavedModel, or auto: int8 on a VNNI CPU, else float, else '
    'the SavedModel, the first the export has.')
_MAX_PNGS = flags.DEFINE_integer('max_pngs', 100, 'Annotated PNGs to write (0: none).')
_MAX_PIXELS = flags.DEFINE_float(
    'max_pixels', DEFAULT_MAX_PIXELS, 'Refuse images of more pixels than this (width x '
    "height, read from the file's header before decoding), listing them as errors; the "
    "default is PIL's decompression-bomb limit (179 MP).", lower_bound=1)

flags.mark_flag_as_required('input')


def list_images(path):
    """An image file, or every image under a folder (sorted); raises FileNotFoundError."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f'--input={path}: no such file or folder')
    found = []
    for root, _, files in os.walk(path):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
        raise FileNotFoundError(f'--input={path}: no images ({", ".join(IMAGE_EXTENSIONS)}) in it')
    return sorted(found)


def model_has_landmarks(model_dir):
    """False when export.py wrote that the model's landmark outputs are untrained."""
    from model.runtime import read_info
    return bool(read_info(model_dir).get('landmarks', True))


def detections_for(signature, pixels, score_threshold, scales=(1.0,), landmarks=True):
    """Runs the model on one RGB uint8 image; returns the JSONL fields."""
    import numpy as np
    from model.multiscale import run_scales
    boxes, scores, points = run_scales(signature, pixels, scales)
    keep = scores >= score_threshold
    result = {
        'width': int(pixels.shape[1]), 'height': int(pixels.shape[0]),
        'boxes': np.round(boxes[keep], 2).tolist(), 'scores': np.round(scores[keep], 4).tolist(),
    }
    if landmarks:
        result['landmarks'] = np.round(points[keep], 2).tolist()
    return result


def draw(pixels, result, path, threshold):
    """Writes an annotated PNG: a box, the score and 5 landmark dots (if the result has them)
    per face >= threshold (common/drawing.py)."""
    from common import drawing
    keep = [i for i, score in enumerate(result['scores']) if score >= threshold]
    landmarks = result.get('landmarks')
    drawing.draw_faces(drawing.to_image(pixels), [result['boxes'][i] for i in keep], (0, 255, 0),
                       [result['scores'][i] for i in keep],
                       [landmarks[i] for i in keep] if landmarks else None).save(path)


def _load_model(model_dir):
    """(signature, runtime name, passes, landmarks?) for --model; exits on a bad model."""
    try:
        from model import runtime
        from model.multiscale import parse_scales
        if not os.path.exists(os.path.join(model_dir, 'saved_model.pb')):
            raise FileNotFoundError(
                f'{model_dir} is not a SavedModel; export one with export.py and pass --model')
        scales = (parse_scales(_SCALES.value) if _SCALES.value is not None
                  else runtime.default_passes(model_dir))
        signature, runtime_name = runtime.load(model_dir, _RUNTIME.value)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'detect.py: error: {e}')
    return signature, runtime_name, scales, model_has_landmarks(model_dir)


def detect_one(path, model, max_pixels):
    """(JSONL line, pixels) for one input; pixels is None and the line holds only "image" and
    "error" when the file cannot be read. One image is in memory at a time."""
    from preprocess.items import SkipItem, load_rgb
    signature, _, scales, landmarks = model
    try:
        pixels = load_rgb(path, max_pixels)
    except SkipItem as e:
        # The message without the path it starts with: that is the line's "image" already.
        return {'image': path, 'error': e.detail.removeprefix(f'{path}: ')}, None
    result = detections_for(signature, pixels, _SCORE_THRESHOLD.value, scales, landmarks)
    return {'image': path, **result}, pixels


def _png_path(path):
    """<output>/<path relative to --input, folders joined by __>.png"""
    base = _INPUT.value if os.path.isdir(_INPUT.value) else os.path.dirname(_INPUT.value)
    name = os.path.splitext(os.path.relpath(path, base))[0]
    return os.path.join(_OUTPUT.value, name.replace(os.sep, '__') + '.png')


def run(images, model, jsonl_path):
    """Writes one JSONL line per image, streaming; returns (unreadable, faces, pngs)."""
    draw_threshold = _DRAW_THRESHOLD.value
    if draw_threshold is None:
        draw_threshold = max(_SCORE_THRESHOLD.value, 0.5)
    unreadable = faces = pngs = 0
    start = time.time()
    with open(jsonl_path, 'w') as out:
        for i, path in enumerate(images):
            line, pixels = detect_one(path, model, _MAX_PIXELS.value)
            out.write(json.dumps(line) + '\n')
            out.flush()  # lines written so far survive a crash or ^C
            if pixels is None:
                print(f'unreadable: {path}: {line["error"]}', file=sys.stderr)
                unreadable += 1
                continue
            faces += len(line['boxes'])
            if pngs < _MAX_PNGS.value:
                draw(pixels, line, _png_path(path), draw_threshold)
                pngs += 1
            del pixels  # the next image is decoded without this one still held
            if (i + 1) % 50 == 0:
                rate = (i + 1) / (time.time() - start)
                print(f'{i + 1}/{len(images)} images, {rate:.1f} images/s', file=sys.stderr)
    return unreadable, faces, pngs


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    model_dir = _MODEL.value or DEFAULT_MODEL
    try:
        images = list_images(_INPUT.value)
    except FileNotFoundError as e:
        sys.exit(f'detect.py: error: {e}')
    model = _load_model(model_dir)
    from model.multiscale import describe
    print(f'{model_dir} ({model[1]}): {describe(model[2])}')
    os.makedirs(_OUTPUT.value, exist_ok=True)
    jsonl_path = os.path.join(_OUTPUT.value, 'detections.jsonl')
    unreadable, faces, pngs = run(images, model, jsonl_path)
    print(f'{len(images)} images, {unreadable} unreadable (listed in {jsonl_path} with an '
          f'error); {faces} faces at score >= {_SCORE_THRESHOLD.value}')
    print(f'detections: {jsonl_path}')
    print(f'annotated PNGs: {pngs} in {_OUTPUT.value}')
    if unreadable == len(images):
        sys.exit(f'detect.py: error: none of the {len(images)} images could be read '
                 f'(see {jsonl_path})')


if __name__ == '__main__':
    app.run(main)
