r"""facedet and its peers on degraded copies of the validation photos. Not a test.

Reads the validation records, makes each variant of every photo (evaluation/variants.py:
grey, blur, jpeg, large-face crops, low_contrast), runs every detector on the plain photos
and on each variant, and prints AP@0.5 (evaluation.wider, faces shorter than --min_face
ignored, as benchmarks/peers.py) with one row per variant, one column per detector, and a
last row with the mean over the rows. Detectors are benchmarks/detectors.py's, run as
peers.py runs them (facedet: the export in its default passes, model/runtime.py).

  python benchmarks/robustness.py --model=models/facedet_default \
      --records='out/records/shared/val-*.tfrecord' --peers_dir=../shared/peers
  python benchmarks/robustness.py --model=models/facedet_default --variants=grey,large \
      --detectors=facedet,yunet_n --max_images=60 --json=out/bench/robustness.json

The AP pools every photo of the records (WIDER, face_mask, face-free), as training
validation does; a variant that leaves photos out (``large``) is scored on the rest.
"""

import json
import os
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

from benchmarks.detectors import ALL_DETECTORS, build_detector  # noqa: E402
from evaluation import variants as variants_lib  # noqa: E402

_MODEL = flags.DEFINE_string('model', None, 'facedet SavedModel dir (export.py); without it '
                             'facedet is left out.')
_RECORDS = flags.DEFINE_string('records', 'out/records/shared/val-*.tfrecord',
                               'Glob(s) of the validation TFRecord shards.')
_PEERS_DIR = flags.DEFINE_string('peers_dir', '../shared/peers', 'Folder of the YuNet ONNX files.')
_DETECTORS = flags.DEFINE_list('detectors', ['facedet', 'yunet_n', 'yunet_s'],
                               f'Which detectors to run, of {",".join(ALL_DETECTORS)}.')
_VARIANTS = flags.DEFINE_list('variants', list(variants_lib.NAMES),
                              'Variants scored beside the plain photos.')
_FACEDET_RUNTIME = flags.DEFINE_enum(
    'facedet_runtime', 'auto', ['auto', 'tflite_int8', 'tflite', 'savedmodel'],
    'Runtime of the facedet column (model/runtime.py), as in peers.py.')
_MIN_FACE = flags.DEFINE_float('min_face', 10.0, 'Faces shorter than this (px) are ignored.')
_MAX_IMAGES = flags.DEFINE_integer('max_images', 0, 'Use N evenly spaced photos (0: all).')
_JSON = flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')


def load_photos(records, max_images=0):
    """[variants.Variant] of the records' photos (with ``source_id``), evenly thinned to
    max_images when given (the records are grouped by source)."""
    import tensorflow as tf
    from data import features, pipeline
    photos = []
    for example in tf.data.TFRecordDataset(pipeline.list_shards(records)).map(
            features.parse_example):
        photos.append(variants_lib.Variant(
            example['image'].numpy(), example['boxes'].numpy(), example['ignore'].numpy(),
            example['source_id'].numpy().decode('utf-8', 'replace')))
    if max_images and len(photos) > max_images:
        photos = [photos[i * len(photos) // max_images] for i in range(max_images)]
    return photos


def variant_photos(photos, name):
    """The photos as variant `name` ('plain': unchanged); photos it leaves out are dropped."""
    if name == 'plain':
        return photos
    out = [variants_lib.apply(name, p.rgb, p.boxes, p.ignore, p.source_id) for p in photos]
    return [p for p in out if p is not None]


def score(detector, photos, min_face):
    """(AP@0.5, faces counted) of detector on photos (evaluation.wider rules)."""
    import numpy as np
    from data.boxes import normalized_to_xywh
    from evaluation.wider import Accumulator
    accumulator = Accumulator(0.5, min_face)
    for p in photos:
        h, w = p.rgb.shape[:2]
        boxes, scores = detector.detect(p.rgb)
        accumulator.add_image(normalized_to_xywh(p.boxes, h, w),
                              np.asarray(boxes, np.float64).reshape(-1, 4),
                              np.asarray(scores, np.float64).reshape(-1), p.ignore)
    result = accumulator.result()
    return result.ap, result.num_faces


def markdown_table(rows, names):
    """Rows {'variant', 'photos', 'faces', name: AP...} and a mean row, as markdown."""
    lines = ['| variant | photos | faces | ' + ' | '.join(names) + ' |',
             '|' + '---|' * (len(names) + 3)]
    for r in rows:
        cells = ' | '.join('n/a' if r[n] != r[n] else f'{r[n]:.3f}' for n in names)
        lines.append(f'| {r["variant"]} | {r["photos"]} | {r["faces"]} | {cells} |')
    return '\n'.join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import numpy as np
    try:
        names = ('plain',) + variants_lib.parse_names(_VARIANTS.value)
    except ValueError as e:
        sys.exit(f'robustness.py: error: --variants: {e}')
    detectors = {}
    for name in _DETECTORS.value:
        try:
            detectors[name] = build_detector(name, _MODEL.value, _PEERS_DIR.value, None,
                                             facedet_runtime=_FACEDET_RUNTIME.value)
        except (ImportError, OSError, ValueError) as e:
            print(f'{name}: skipped ({e})', flush=True)
    if not detectors:
        sys.exit('robustness.py: error: no detector could run')
    photos = load_photos(_RECORDS.value, _MAX_IMAGES.value)
    if not photos:
        sys.exit(f'robustness.py: error: no photo in --records={_RECORDS.value}')
    rows = []
    for variant in names:
        chosen = variant_photos(photos, variant)
        row = {'variant': variant, 'photos': len(chosen)}
        for name, detector in detectors.items():
            start = time.time()
            row[name], row['faces'] = score(detector, chosen, _MIN_FACE.value)
            print(f'{variant}: {name} AP@0.5 {row[name]:.3f} ({len(chosen)} photos, '
                  f'{time.time() - start:.0f} s)', flush=True)
        rows.append(row)
    mean = {'variant': 'mean', 'photos': '', 'faces': ''}
    mean.update({n: float(np.mean([r[n] for r in rows])) for n in detectors})
    table = markdown_table(rows + [mean], list(detectors))
    print(f'\n{len(photos)} photos of {_RECORDS.value}; AP@0.5, faces >= {_MIN_FACE.value:g} '
          f'px\n\n{table}\n')
    if _JSON.value:
        os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
        with open(_JSON.value, 'w') as f:
            json.dump({'records': _RECORDS.value, 'min_face': _MIN_FACE.value,
                       'num_photos': len(photos), 'rows': rows, 'mean': mean}, f, indent=1)


if __name__ == '__main__':
    app.run(main)
