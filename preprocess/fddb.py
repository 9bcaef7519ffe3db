"""FDDB reader: ellipse annotations -> RawItems with boxes (no TF).

Layout under ``root``::

    originalPics/<path>.jpg                       e.g. originalPics/2002/08/11/big/img_591.jpg
    FDDB-folds/FDDB-fold-01-ellipseList.txt ... FDDB-fold-10-ellipseList.txt

Per image: the path without extension, the face count, then one row per face
``major_axis_radius minor_axis_radius angle center_x center_y 1`` (pixels, angle in
radians between the major axis and the x axis).

Rules:
  * Box: the axis-aligned bounding box of the rotated ellipse, half-width
    sqrt(a^2 cos^2 t + b^2 sin^2 t) and half-height sqrt(a^2 sin^2 t + b^2 cos^2 t).
    FDDB ellipses run from the top of the forehead to the chin, higher than WIDER boxes
    start; ``height_scale`` < 1 shortens the box from the top, keeping its bottom (the
    chin) fixed. The default 1.0 keeps the exact bounding box (no unmeasured fudge).
  * Split by fold, fixed: folds 1-8 'train', fold 9 'val', fold 10 'test'.
  * No landmarks (NaN), no ignore flags. A missing fold file is skipped with a warning;
    if none exists, FileNotFoundError. Malformed blocks come out as
    SkipItem('malformed_annotation', ...) (preprocess/counted_blocks.py).
"""

import os
from typing import Iterator, Union

import numpy as np
from absl import logging

from preprocess import files
from preprocess.counted_blocks import parse_counted_blocks
from preprocess.items import RawItem, SkipItem

NUM_FOLDS = 10


def fold_split(fold: int) -> str:
    """Folds 1-8 -> 'train', 9 -> 'val', 10 -> 'test'."""
    return 'train' if fold <= 8 else ('val' if fold == 9 else 'test')


def ellipses_to_boxes(ellipses: np.ndarray, height_scale: float = 1.0) -> np.ndarray:
    """[N, >=5] (a, b, angle, cx, cy, ...) ellipses -> [N, 4] pixel [x, y, w, h] boxes."""
    e = np.asarray(ellipses, np.float64)
    if e.ndim == 1:
        e = e.reshape(1, -1) if e.size else e.reshape(0, 5)
    a, b, t, cx, cy = (e[:, k] for k in range(5))
    half_w = np.sqrt((a * np.cos(t))**2 + (b * np.sin(t))**2)
    half_h = np.sqrt((a * np.sin(t))**2 + (b * np.cos(t))**2)
    height = 2 * half_h * height_scale
    bottom = cy + half_h
    return np.stack([cx - half_w, bottom - height, 2 * half_w, height], axis=1)


def fold_path(root: str, fold: int) -> str:
    return os.path.join(root, 'FDDB-folds', f'FDDB-fold-{fold:02d}-ellipseList.txt')


def read_items(root: str, height_scale: float = 1.0) -> Iterator[Union[RawItem, SkipItem]]:
    """Yields RawItems (or SkipItems) for folds 1..10 in order, file order within a fold.

    Args:
      root: folder holding originalPics/ and FDDB-folds/.
      height_scale: see the module docstring; 1.0 = exact ellipse bounding box.

    Yields:
      RawItem with source_id 'fddb/<path>.jpg', boxes_xywh [N, 4] pixels, split by fold,
      origin '<fold file>:<line>'; or SkipItem for malformed annotation blocks.
    """
    folds = [k for k in range(1, NUM_FOLDS + 1) if files.exists(fold_path(root, k))]
    if not folds:
        raise FileNotFoundError(f'FDDB: no FDDB-fold-NN-ellipseList.txt under '
                                f'{os.path.join(root, "FDDB-folds")}')
    for k in sorted(set(range(1, NUM_FOLDS + 1)) - set(folds)):
        logging.warning('FDDB: skipping missing fold file %s', fold_path(root, k))
    for fold in folds:
        path = fold_path(root, fold)
        for block in parse_counted_blocks(path, 6):
            if isinstance(block, SkipItem):
                yield block
                continue
            name, rows, line_no = block
            if np.any(rows[:, :2] <= 0):
                yield SkipItem('malformed_annotation',
                               f'{path}:{line_no}: non-positive ellipse radius for {name}')
                continue
            yield RawItem(
                source_id=f'fddb/{name}.jpg',
                path=os.path.join(root, 'originalPics', name + '.jpg'),
                boxes_xywh=ellipses_to_boxes(rows, height_scale).astype(np.float32),
                split=fold_split(fold),
                origin=f'{path}:{line_no}')
