"""CelebA through TensorFlow Datasets ('celeb_a', the aligned 178x218 crops) -> RawItems.

Never downloads. The data must already be prepared under ``data_dir``; otherwise
``read_items`` fails at once with PREPARE_HELP, before importing tensorflow_datasets.
tfds' own download pulls five files from Google Drive, which often fails with quota
errors, so prepare it from files fetched by hand (see PREPARE_HELP).

tfds' celeb_a has no box, only the 5 aligned landmarks ('lefteye_x', ... as in CelebA's
list_landmarks_align_celeba.txt), so the box is derived exactly as for the original
aligned files: ``preprocess.celeba.box_from_landmarks`` (rule in preprocess/celeba.py).
Landmark order and the one-labelled-face-per-image caveat are those of preprocess/celeba.py.
Splits: tfds 'train', 'validation', 'test' -> 'train', 'val', 'test'. Items carry pixels
(RawItem.pixels), not paths; source_id is 'tfds_celeb_a/<split>/<index in split, 6 digits>'.
"""

import glob
import os
from typing import Dict, Iterator

import numpy as np

from preprocess.celeba import box_from_landmarks
from preprocess.items import RawItem

TFDS_NAME = 'celeb_a'
TFDS_SPLITS = (('train', 'train'), ('validation', 'val'), ('test', 'test'))
LANDMARK_KEYS = ('lefteye', 'righteye', 'nose', 'leftmouth', 'rightmouth')

PREPARE_HELP = """\
tfds 'celeb_a' is not prepared under {data_dir}. facedet never downloads it. To prepare it:
  1. fetch by hand (CelebA site / its Google Drive, 'Align&Cropped Images' and 'Anno',
     'Eval' folders): img_align_celeba.zip, list_eval_partition.txt, list_attr_celeba.txt,
     list_landmarks_align_celeba.txt, identity_CelebA.txt;
  2. put those 5 files, as they are, into one folder, e.g. ~/tensorflow_datasets/downloads/manual;
  3. run: tfds build celeb_a --data_dir={data_dir} --manual_dir=<that folder>
     (tfds picks the files from --manual_dir instead of downloading them; the automatic
     Google Drive download usually fails with a quota error).
Or use preprocess/celeba.py on the unzipped original files."""


def is_prepared(data_dir: str) -> bool:
    """True if some version of celeb_a has a dataset_info.json under data_dir."""
    return bool(glob.glob(os.path.join(data_dir, TFDS_NAME, '*', 'dataset_info.json')))


def example_to_item(example: Dict, source_id: str, split: str) -> RawItem:
    """Converts one tfds example (numpy) to a RawItem.

    Args:
      example: {'image': uint8 [H, W, 3], 'landmarks': {'lefteye_x': int, ...}, ...};
        an optional 'bbox' ([4] or [N, 4], normalized yxyx, tfds' BBoxFeature) is used
        instead of the landmark rule when present.
      source_id, split: copied into the item.

    Returns:
      RawItem with pixels, boxes_xywh [1, 4] pixels, landmarks_xy [1, 5, 2] pixel (x, y).
    """
    image = np.asarray(example['image'], np.uint8)
    height, width = image.shape[:2]
    lm = example['landmarks']
    points = np.array([[[lm[f'{k}_x'], lm[f'{k}_y']] for k in LANDMARK_KEYS]], np.float64)
    if example.get('bbox') is not None:
        b = np.asarray(example['bbox'], np.float64).reshape(-1, 4)
        boxes = np.stack([b[:, 1] * width, b[:, 0] * height, (b[:, 3] - b[:, 1]) * width,
                          (b[:, 2] - b[:, 0]) * height], axis=1)
    else:
        boxes = box_from_landmarks(points)
    return RawItem(source_id=source_id, path=None, boxes_xywh=boxes.astype(np.float32),
                   landmarks_xy=points.astype(np.float32), ignore=np.zeros([1], bool),
                   split=split, pixels=image, origin=source_id)


def read_items(data_dir: str) -> Iterator[RawItem]:
    """Returns an iterator of RawItems from a prepared tfds celeb_a (train, val, test).

    Raises:
      FileNotFoundError: with PREPARE_HELP, at call time (not on first next()), when
        celeb_a is not prepared; checked before tensorflow_datasets is imported, so
        nothing is downloaded.
    """
    data_dir = os.path.expanduser(data_dir)
    if not is_prepared(data_dir):
        raise FileNotFoundError(PREPARE_HELP.format(data_dir=data_dir))
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(PREPARE_HELP.format(data_dir=data_dir))
    return _iterate(builder, tfds)


def _iterate(builder, tfds) -> Iterator[RawItem]:
    for tfds_split, split in TFDS_SPLITS:
        dataset = builder.as_dataset(split=tfds_split, shuffle_files=False)
        for index, example in enumerate(tfds.as_numpy(dataset)):
            yield example_to_item(example, f'tfds_celeb_a/{split}/{index:06d}', split)
