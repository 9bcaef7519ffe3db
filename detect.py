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
project ships one (models/facedet_default). Unreadable images are reported and skipped.

The export's network_int8.tflite (or network.tflite, float, when it has no int8 file) runs
the network (TFLite with XNNPACK, faster than TensorFlow on a CPU: MODEL_CARD.md), inside
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
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

from preprocess.items import IMAGE_EXTENSIONS  # noqa: E402

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
    "network: the export's network_int8.tflite (int8, the fastest on a CPU), network.tflite "
    '(float), the SavedModel, or auto: the first the export has.')
_MAX_PNGS = flags.DEFINE_integer('max_pngs', 100, 'Annotated PNGs to write (0: none).')

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
    per face >= threshold."""
    from PIL import Image, ImageDraw
    image = Image.fromarray(pixels)
    pen = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 300))
    landmarks = result.get('landmarks') or [()] * len(result['boxes'])
    for (x, y, w, h), score, lm in zip(result['boxes'], result['scores'], landmarks):
        if score < threshold:
            continue
        pen.rectangle([x, y, x + w, y + h], outline=(0, 255, 0), width=width)
        pen.text((x + 2, max(0, y - 11)), f'{score:.2f}', fill=(0, 255, 0))
        colours = [(255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
        for i, colour in enumerate(colours if len(lm) else []):
            px, py = lm[2 * i], lm[2 * i + 1]
            pen.ellipse([px - width, py - width, px + width, py + width], fill=colour)
    image.save(path)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    model_dir = _MODEL.value or DEFAULT_MODEL
    try:
        from model import runtime
        from model.multiscale import parse_scales
        images = list_images(_INPUT.value)
        if not os.path.exists(os.path.join(model_dir, 'saved_model.pb')):
            raise FileNotFoundError(
                f'{model_dir} is not a SavedModel; export one with export.py and pass --model')
        scales = (parse_scales(_SCALES.value) if _SCALES.value is not None
                  else runtime.default_passes(model_dir))
        signature, runtime_name = runtime.load(model_dir, _RUNTIME.value)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'detect.py: error: {e}')

    from model.multiscale import describe
    from preprocess.items import SkipItem, load_rgb
    print(f'{model_dir} ({runtime_name}): {describe(scales)}')
    landmarks = model_has_landmarks(model_dir)
    os.makedirs(_OUTPUT.value, exist_ok=True)
    jsonl_path = os.path.join(_OUTPUT.value, 'detections.jsonl')
    faces = skipped = pngs = 0
    draw_threshold = _DRAW_THRESHOLD.value
    if draw_threshold is None:
        draw_threshold = max(_SCORE_THRESHOLD.value, 0.5)
    base = _INPUT.value if os.path.isdir(_INPUT.value) else os.path.dirname(_INPUT.value)
    start = time.time()
    with open(jsonl_path, 'w') as out:
        for i, path in enumerate(images):
            try:
                pixels = load_rgb(path)
            except SkipItem as e:
                print(f'skipped {e.detail}', file=sys.stderr)
                skipped += 1
                continue
            result = {'image': path, **detections_for(signature, pixels, _SCORE_THRESHOLD.value,
                                                       scales, landmarks)}
            out.write(json.dumps(result) + '\n')
            faces += len(result['boxes'])
            if pngs < _MAX_PNGS.value:
                name = os.path.splitext(os.path.relpath(path, base))[0]
                png = os.path.join(_OUTPUT.value, name.replace(os.sep, '__') + '.png')
                draw(pixels, result, png, draw_threshold)
                pngs += 1
            if (i + 1) % 50 == 0:
                rate = (i + 1) / (time.time() - start)
                print(f'{i + 1}/{len(images)} images, {rate:.1f} images/s', file=sys.stderr)
    print(f'{len(images) - skipped} images, {faces} faces at score >= {_SCORE_THRESHOLD.value}'
          f'{f", {skipped} unreadable images skipped" if skipped else ""}')
    print(f'detections: {jsonl_path}')
    print(f'annotated PNGs: {pngs} in {_OUTPUT.value}')


if __name__ == '__main__':
    app.run(main)
