"""CelebA reader (original files, no TF): one labelled face per image.

Two layouts under ``root``, told apart by ``find_layout``. The official one (Google Drive)::

    img_celeba/000001.jpg ...            in-the-wild images (aligned=False)
    img_align_celeba/000001.jpg ...      aligned 178x218 crops (aligned=True)
    Anno/list_bbox_celeba.txt            count, header 'image_id x_1 y_1 width height', rows
    Anno/list_landmarks_celeba.txt       count, header 'lefteye_x lefteye_y ... rightmouth_y'
    Anno/list_landmarks_align_celeba.txt same, for the aligned crops
    Eval/list_eval_partition.txt         '000001.jpg 0' (0 train, 1 val, 2 test)

The Kaggle one (the download most people have), aligned crops only::

    img_align_celeba/img_align_celeba/000001.jpg ...   aligned crops
    list_landmarks_align_celeba.csv      header 'image_id,lefteye_x,...', rows '000001.jpg,69,...'
    list_eval_partition.csv              header 'image_id,partition', rows '000001.jpg,0'
    list_bbox_celeba.csv                 boxes in the in-the-wild photos, which Kaggle lacks

| Layout | Tables | Values | ``aligned=False`` |
|---|---|---|---|
| official | .txt, count line + header | space-separated | reads img_celeba/ |
| kaggle | .csv, one header line | comma-separated | FileNotFoundError naming celeba_aligned |

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
    one per image; a missing table file raises FileNotFoundError, and so does a folder in
    neither layout (one line: what is there and what each layout needs).
"""

import dataclasses
import os
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np

from preprocess import files
from preprocess.items import LayoutError, RawItem, SkipItem

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


_OFFICIAL_NEEDS = ('Anno/list_landmarks[_align]_celeba.txt, Anno/list_bbox_celeba.txt, '
                   'Eval/list_eval_partition.txt, img_celeba/ or img_align_celeba/')
_KAGGLE_NEEDS = ('list_landmarks_align_celeba.csv, list_eval_partition.csv, '
                 'img_align_celeba/img_align_celeba/')


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one layout keeps the files ``read_items`` reads (``bbox`` None when aligned)."""
    name: str  # 'official' or 'kaggle'
    landmarks: str
    bbox: Optional[str]
    partition: str
    image_dir: str
    csv: bool


def _split(text: str, csv: bool):
    return [t.strip() for t in text.split(',')] if csv else text.split()


def find_layout(root: str, aligned: bool) -> Layout:
    """The layout of ``root``. Raises FileNotFoundError (one line) for Kaggle files with
    ``aligned=False`` and for a folder in neither layout."""
    join = lambda *p: os.path.join(root, *p)  # noqa: E731
    if files.exists(join('list_eval_partition.csv')) or files.exists(
            join('list_landmarks_align_celeba.csv')):
        if not aligned:
            raise FileNotFoundError(
                f'CelebA: {root} is the Kaggle layout, which ships only the aligned crops '
                f'(the in-the-wild photos list_bbox_celeba.csv points at are not there); '
                f'use --source=celeba_aligned')
        nested = join('img_align_celeba', 'img_align_celeba')
        return Layout('kaggle', join('list_landmarks_align_celeba.csv'), None,
                      join('list_eval_partition.csv'),
                      nested if files.isdir(nested) else join('img_align_celeba'), csv=True)
    if files.isdir(join('Anno')) or files.isdir(join('Eval')):
        if aligned:
            return Layout('official', join('Anno', 'list_landmarks_align_celeba.txt'), None,
                          join('Eval', 'list_eval_partition.txt'), join('img_align_celeba'),
                          csv=False)
        return Layout('official', join('Anno', 'list_landmarks_celeba.txt'),
                      join('Anno', 'list_bbox_celeba.txt'), join('Eval', 'list_eval_partition.txt'),
                      join('img_celeba'), csv=False)
    names = files.listdir(root) if files.isdir(root) else []
    found = ', '.join(names[:8]) + (f', ... ({len(names)} in all)' if len(names) > 8 else '')
    raise FileNotFoundError(f'CelebA: {root} is in neither layout: found {found or "nothing"}; '
                            f'the official layout needs {_OFFICIAL_NEEDS}; '
                            f'the Kaggle layout needs {_KAGGLE_NEEDS}')


def read_table(path: str, num_values: int, header_start: str, csv: bool = False) -> _Table:
    """Reads a CelebA list file: count line, header line, then 'name v1 ... vK' rows; with
    ``csv`` (Kaggle) a header line, then 'name,v1,...,vK' rows.

    Returns:
      {image name: ([num_values] float64, 'path:line')} with a SkipItem in place of the
      tuple for a malformed row. Raises FileNotFoundError / LayoutError (wrong header).
    """
    if not files.exists(path):
        raise FileNotFoundError(f'CelebA: missing annotation file {path}')
    table: _Table = {}
    with files.open_text(path) as f:
        lines = f.read().splitlines()
    head = 0 if csv else 1
    header = _split(lines[head], csv) if len(lines) > head else []
    if not header or header[0] != header_start:
        first = ' '.join(lines[0].split())[:80] if lines else ''
        raise LayoutError(f'CelebA: {path}:{head + 1}: expected a header starting with '
                          f'{header_start!r}; the file begins {first!r}: not a CelebA table')
    for line_no, text in enumerate(lines[head + 1:], head + 2):
        tokens = _split(text, csv) if text.strip() else []
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


def _partition(path: str, csv: bool = False) -> Iterator[Union[Tuple[str, str, str], SkipItem]]:
    """Yields (name, split, origin) or SkipItem, in file order (a .csv has a header line)."""
    if not files.exists(path):
        raise FileNotFoundError(f'CelebA: missing partition file {path}')
    with files.open_text(path) as f:
        for line_no, text in enumerate(f, 1):
            tokens = _split(text, csv) if text.strip() else []
            if not tokens or (csv and line_no == 1):
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
      root: the CelebA folder, official or Kaggle layout (module docstring).
      aligned: read the aligned crops, box derived from the landmarks.
      ignore_unlabelled: add one whole-image ignore box per image (module docstring).

    Yields:
      RawItem with source_id 'celeba/<name>' or 'celeba_align/<name>', boxes_xywh [1, 4]
      (or [2, 4] with the ignore box), landmarks_xy [1, 5, 2] (NaN row for the ignore
      box), ignore [False] (or [False, True]), split from the partition file.
    """
    layout = find_layout(root, aligned)
    lm_path, box_path, image_dir = layout.landmarks, layout.bbox, layout.image_dir
    prefix = 'celeba_align' if aligned else 'celeba'
    boxes = read_table(box_path, 4, 'image_id') if box_path else None
    # The official landmark files' header has no 'image_id' column; Kaggle's .csv has one.
    landmarks = read_table(lm_path, 10, 'image_id' if layout.csv else 'lefteye_x', layout.csv)
    for entry in _partition(layout.partition, layout.csv):
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
