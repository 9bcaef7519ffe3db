"""Writes the images of TFRecord shards back out as JPEG files plus a labels.jsonl.

Usage:
  python preprocess/records_to_images.py --records='out/records/synthetic/val-*' \
      --output_dir=out/quickstart/val_images

The labels.jsonl uses the project's public format (pixel [x, y, w, h] boxes, "ignore", and
"landmarks": one [x0, y0, ..., x4, y4] pixel list per box, null where the record's
landmarks_valid is 0; evaluation/labels.py reads it), so evaluate.py can score detect.py's output on the same images, and a person
can look at what the records hold.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import quiet  # noqa: E402
quiet.import_tensorflow()  # first: without its start-up notices (common/quiet.py)

from absl import app, flags, logging  # noqa: E402

_RECORDS = flags.DEFINE_string('records', None, 'Glob(s) of TFRecord shards.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Folder for images/ and labels.jsonl.')
_LIMIT = flags.DEFINE_integer('limit', 0, 'Write at most this many images (0: all).')

flags.mark_flags_as_required(['records', 'output_dir'])


def records_to_images(file_pattern, output_dir, limit=0):
    """Writes images/<n>.jpg and labels.jsonl; returns the number of images written."""
    import tensorflow as tf
    from data import boxes as box_lib
    from data import features
    from data.pipeline import list_shards

    os.makedirs(os.path.join(output_dir, 'images'), exist_ok=True)
    count = 0
    with open(os.path.join(output_dir, 'labels.jsonl'), 'w') as labels:
        for serialized in tf.data.TFRecordDataset(list_shards(file_pattern)):
            ex = features.parse_example(serialized, decode_image=False)
            h, w = int(ex['height']), int(ex['width'])
            name = f'images/{count:06d}.jpg'
            with open(os.path.join(output_dir, name), 'wb') as f:
                f.write(ex['encoded'].numpy())  # the record's own JPEG bytes, not re-encoded
            labels.write(json.dumps({
                'image': name, 'width': w, 'height': h,
                'boxes': box_lib.normalized_to_xywh(ex['boxes'].numpy(), h, w).round(2).tolist(),
                'ignore': ex['ignore'].numpy().astype(int).tolist(),
                'landmarks': _landmarks_px(ex, h, w),
                'source_id': ex['source_id'].numpy().decode('utf-8'),
            }) + '\n')
            count += 1
            if limit and count >= limit:
                break
    return count


def _landmarks_px(ex, height, width):
    """[[x0, y0, ..., x4, y4] or None per box] in pixels, from a parsed record."""
    from data import boxes as box_lib
    points = box_lib.normalized_to_landmarks_xy(ex['landmarks'].numpy(), height, width)
    return [p.reshape(10).round(2).tolist() if valid else None
            for p, valid in zip(points, ex['landmarks_valid'].numpy())]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        n = records_to_images(_RECORDS.value, _OUTPUT_DIR.value, _LIMIT.value)
    except ValueError as e:
        sys.exit(f'records_to_images.py: error: {e}')
    print(f'wrote {n} images and labels.jsonl to {_OUTPUT_DIR.value}')


if __name__ == '__main__':
    app.run(main)
