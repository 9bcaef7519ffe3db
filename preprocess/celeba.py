"""CelebA reader (original files, no TF): one labelled face per image.

Layout under ``root``::

    img_celeba/000001.jpg ...            in-the-wild images (aligned=False)
    img_align_celeba/000001.jpg ...      aligned 178x218 crops (aligned=True)
    Anno/list_bbox_celeba.txt            count, header 'image_id x_1 y_1 width height', rows
    Anno/list_landmarks_celeba.txt       count, header 'lefteye_x lefteye_y ... rightmouth_y'
    Anno/list_landmarks_align_celeba.txt same, for the aligned crops
    Eval/list_eval_partition.txt         '000001.jpg 0' (0 train, 1 val, 2 test)

Rules:
  * Landmarks: CelebA's 'lefteye' is the eye on the image's left (smaller x: 000001 has
    lefteye_x 165 < righteye_x 244), likewise 'leftmouth'. That is this project's point 0
    and 3, so the 5 points keep CelebA's order (lefteye, righteye, nose, leftmouth,
    rightmouth) and are not re-sorted per face.
  * In the wild: the box is list_bbox_celeba's row as is. (Those boxes are looser than
    WIDER's: they include hair and some background.)
  * Aligned: the box is derived from the 5 landmarks by ``box_from_landmarks``: with E the
    mid-point of the eyes, M the mid-point of the mouth corners and d = |M - E|, the box
    is centred at E + 0.3 (M - E), ``WIDTH_PER_EYE_MOUTH`` (2.0) d wide and
    ``HEIGHT_PER_EYE_MOUTH`` (2.5) d tall. That puts the eyes at 38% and the mouth at 78%
    of the box height, from mid-forehead to chin, with a width/height ratio of 0.8, like
    WIDER boxes of frontal faces. On the mean aligned face (eyes near y 111, mouth near
    y 152, x 70..108 in a 178x218 crop) it gives about x 48..130, y 72..175.
  * Split from Eval/list_eval_partition.txt; images follow that file's order.
  * CelebA labels ONE face per image. Other faces in the picture (crowds behind a
    celebrity, posters, ...) are not labelled, so by default they are taught as
    background. ``ignore_unlabelled=True`` adds, after the labelled face, one ignore box
    covering the whole image (written as [0, 0, WHOLE_IMAGE, WHOLE_IMAGE] pixels and
    clipped to the image by items.encode_item's rules). Meaning: nothing in this image
    is learned as background; only the labelled face gives positives. With
    model/targets.py (points whose centre lies inside an ignored face get zero
    classification weight) that is exactly what happens; an IoU-based ignore test would
    instead ignore only the largest anchors. In evaluation the same box makes every
    unmatched detection "ignored", so such a split measures recall only.
  * Malformed rows (wrong number of fields, non-numeric) and images listed in the
    partition but missing from a table come out as SkipItem('malformed_annotation', ...),
    one per image; a missing table file raises FileNotFoundError.
"""

import os
from typing import Dict, Iterator, Tuple, Union

import numpy as np

from preprocess import files
from preprocess.items import RawItem, SkipItem

PARTITION_SPLITS = {'0': 'train', '1': 'val', '2': 'test'}
WIDTH_PER_EYE_MOUTH = 2.0
HEIGHT_PER_EYE_MOUTH = 2.5
CENTRE_FROM_EYES = 0.3
WHOLE_IMAGE = 1e6
_MALFORMED = 'malformed_annotation'

# name -> (values, origin) or SkipItem for a malformed row.
_Table = Dict[str, Union[Tuple[np.ndarray, str], SkipItem]]


def box_from_landmarks(points_xy: np.ndarray) -> np.ndarray:
    """[N, 5, 2] pixel (x, y) landmarks -> [N, 4] pixel [x, y, w, h] (see module doc)."""
    p = np.asarray(points_xy, np.float64).reshape(-1, 5, 2)
    eyes = (p[:, 0] + p[:, 1]) / 2
    mouth = (p[:, 3] + p[:, 4]) / 2
    d = np.linalg.norm(mouth - eyes, axis=1)
    centre = eyes + CENTRE_FROM_EYES * (mouth - eyes)
    w, h = WIDTH_PER_EYE_MOUTH * d, HEIGHT_PER_EYE_MOUTH * d
    return np.stack([centre[:, 0] - w / 2, centre[:, 1] - h / 2, w, h], axis=1)


def read_table(path: str, num_values: int, header_start: str) -> _Table:
    """Reads a CelebA list file: count line, header line, then 'name v1 ... vK' rows.

    Returns:
      {image name: ([num_values] float64, 'path:line')} with a SkipItem in place of the
      tuple for a malformed row. Raises FileNotFoundError / ValueError (wrong header).
    """
    if not files.exists(path):
        raise FileNotFoundError(f'CelebA: missing annotation file {path}')
    table: _Table = {}
    with files.open_text(path) as f:
        lines = f.read().splitlines()
    if len(lines) < 2 or not lines[1].split() or lines[1].split()[0] != header_start:
        raise ValueError(f'CelebA: {path}:2: expected a header starting with '
                         f'{header_start!r}, got {lines[1] if len(lines) > 1 else ""!r}')
    for line_no, text in enumerate(lines[2:], 3):
        tokens = text.split()
        if not tokens:
            continue
        name, origin = tokens[0], f'{path}:{line_no}'
        problem = None
        if len(tokens) != num_values + 1:
            problem = f'expected {num_values + 1} fields, got {len(tokens)}'
        else:
            try:
                values = np.array([float(t) for t in tokens[1:]], np.float64)
            except ValueError:
                problem = 'non-numeric field'
        table[name] = (SkipItem(_MALFORMED, f'{origin}: {problem}: {text!r}') if problem
                       else (values, origin))
    return table


def _partition(path: str) -> Iterator[Union[Tuple[str, str, str], SkipItem]]:
    """Yields (name, split, origin) or SkipItem, in file order."""
    if not files.exists(path):
        raise FileNotFoundError(f'CelebA: missing partition file {path}')
    with files.open_text(path) as f:
        for line_no, text in enumerate(f, 1):
            tokens = text.split()
            if not tokens:
                continue
            if len(tokens) != 2 or tokens[1] not in PARTITION_SPLITS:
                yield SkipItem(_MALFORMED,
                               f'{path}:{line_no}: expected "<image> 0|1|2": {text.strip()!r}')
                continue
            yield tokens[0], PARTITION_SPLITS[tokens[1]], f'{path}:{line_no}'


def _lookup(table: _Table, name: str, path: str, origin: str):
    """(values, origin) or a SkipItem for an image absent from / malformed in ``table``."""
    entry = table.get(name)
    if entry is None:
        return SkipItem(_MALFORMED, f'{origin}: image has no row in {path}: {name!r}')
    return entry


def read_items(root: str, aligned: bool = False, ignore_unlabelled: bool = False
               ) -> Iterator[Union[RawItem, SkipItem]]:
    """Yields one RawItem (or SkipItem) per image of list_eval_partition.txt, in order.

    Args:
      root: the CelebA folder (img_celeba/ or img_align_celeba/, Anno/, Eval/).
      aligned: read the aligned crops, box derived from the landmarks.
      ignore_unlabelled: add one whole-image ignore box per image (module docstring).

    Yields:
      RawItem with source_id 'celeba/<name>' or 'celeba_align/<name>', boxes_xywh [1, 4]
      (or [2, 4] with the ignore box), landmarks_xy [1, 5, 2] (NaN row for the ignore
      box), ignore [False] (or [False, True]), split from the partition file.
    """
    anno = os.path.join(root, 'Anno')
    header = 'lefteye_x'
    if aligned:
        lm_path = os.path.join(anno, 'list_landmarks_align_celeba.txt')
        image_dir, prefix = os.path.join(root, 'img_align_celeba'), 'celeba_align'
        box_path, boxes = None, None
    else:
        lm_path = os.path.join(anno, 'list_landmarks_celeba.txt')
        image_dir, prefix = os.path.join(root, 'img_celeba'), 'celeba'
        box_path = os.path.join(anno, 'list_bbox_celeba.txt')
        boxes = read_table(box_path, 4, 'image_id')
    landmarks = read_table(lm_path, 10, header)
    for entry in _partition(os.path.join(root, 'Eval', 'list_eval_partition.txt')):
        if isinstance(entry, SkipItem):
            yield entry
            continue
        name, split, origin = entry
        lm = _lookup(landmarks, name, lm_path, origin)
        if isinstance(lm, SkipItem):
            yield lm
            continue
        points = lm[0].reshape(1, 5, 2)
        if aligned:
            box, origin = box_from_landmarks(points), lm[1]
        else:
            row = _lookup(boxes, name, box_path, origin)
            if isinstance(row, SkipItem):
                yield row
                continue
            box, origin = row[0].reshape(1, 4), row[1]
        ignore = np.array([False])
        if ignore_unlabelled:
            box = np.concatenate([box, [[0, 0, WHOLE_IMAGE, WHOLE_IMAGE]]])
            points = np.concatenate([points, np.full([1, 5, 2], np.nan)])
            ignore = np.array([False, True])
        yield RawItem(
            source_id=f'{prefix}/{name}',
            path=os.path.join(image_dir, name),
            boxes_xywh=box.astype(np.float32),
            landmarks_xy=points.astype(np.float32),
            ignore=ignore,
            split=split,
            origin=origin)
