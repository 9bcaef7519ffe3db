"""WIDER FACE reader: the official layout -> RawItems (no TF).

Layout under ``root``::

    WIDER_train/images/<event>/<file>.jpg
    WIDER_val/images/<event>/<file>.jpg
    wider_face_split/wider_face_train_bbx_gt.txt
    wider_face_split/wider_face_val_bbx_gt.txt

Ground truth, per image: the path relative to ``WIDER_<split>/images``, the face count,
then one row per face ``x y w h blur expression illumination invalid occlusion pose``
(pixels, top-left corner). An image with no face has a count of 0 and one all-zero row.

Rules:
  * ``invalid == 1`` faces are kept with ``ignore=True``; all six attribute columns are
    kept in ``RawItem.attributes`` as [N] int arrays under ATTRIBUTE_NAMES.
  * Zero-size and out-of-image boxes are passed through unchanged: ``items.encode_item``
    drops and counts them (``box_empty`` / ``box_outside``).
  * WIDER has no landmarks in this format: ``landmarks_xy`` is None (all unlabelled).
  * Malformed blocks come out as SkipItem('malformed_annotation', ...) (see
    preprocess/counted_blocks.py); missing or corrupt image files are left to encode_item.
  * A requested split whose gt file is absent is skipped with a logged warning naming the
    file (WIDER's test split never has one); if splits are requested and none has one,
    FileNotFoundError (a wrong root fails loudly). ``splits=()`` yields nothing.
"""

import os
from typing import Iterator, Sequence, Tuple, Union

import numpy as np
from absl import logging

from preprocess import files
from preprocess.counted_blocks import parse_counted_blocks
from preprocess.items import RawItem, SkipItem

ATTRIBUTE_NAMES = ('blur', 'expression', 'illumination', 'invalid', 'occlusion', 'pose')
_NUM_FIELDS = 4 + len(ATTRIBUTE_NAMES)


def gt_path(root: str, split: str) -> str:
    """Path of the official gt file of ``split`` ('train', 'val', 'test')."""
    return os.path.join(root, 'wider_face_split', f'wider_face_{split}_bbx_gt.txt')


def parse_gt_file(path: str) -> Iterator[Union[Tuple[str, np.ndarray, np.ndarray, int],
                                               SkipItem]]:
    """Parses one WIDER gt file, in file order.

    Yields:
      (relative_path, boxes_xywh [N, 4] float64 pixel [x, y, w, h], attrs [N, 6] int64
      (blur, expression, illumination, invalid, occlusion, pose), line_no of the path
      line, 1-based), or SkipItem('malformed_annotation', 'file:line: problem: text') for
      a block that cannot be trusted. N may be 0.
    """
    for block in parse_counted_blocks(path, _NUM_FIELDS, zero_placeholder=True):
        if isinstance(block, SkipItem):
            yield block
            continue
        name, rows, line_no = block
        yield name, rows[:, :4].copy(), rows[:, 4:].astype(np.int64), line_no


_WARNED = set()  # ground-truth files already reported missing


def read_items(root: str, splits: Sequence[str] = ('train', 'val')
               ) -> Iterator[Union[RawItem, SkipItem]]:
    """Yields one RawItem per annotated image (or a SkipItem), split by split, file order.

    Args:
      root: folder holding WIDER_<split>/ and wider_face_split/.
      splits: any of 'train', 'val' (and 'test', which has no public ground truth).

    Yields:
      RawItem with source_id 'wider/<event>/<file>.jpg', boxes_xywh [N, 4] pixels,
      ignore [N] bool (invalid faces), attributes {name: [N] int64}, split as given,
      origin '<gt file>:<line>'; or SkipItem for malformed annotation blocks.
    """
    present = [s for s in splits if files.exists(gt_path(root, s))]
    for s in splits:
        if s not in present and gt_path(root, s) not in _WARNED:
            # Once per file: the scan and then each shard writer read the items again
            # (forked workers inherit this set).
            _WARNED.add(gt_path(root, s))
            logging.warning('WIDER FACE: skipping split %r: no ground-truth file %s', s,
                            gt_path(root, s))
    if splits and not present:
        raise FileNotFoundError(
            f'WIDER FACE: none of the splits {tuple(splits)} has a gt file under '
            f'{os.path.join(root, "wider_face_split")}')
    for split in present:
        path = gt_path(root, split)
        image_dir = os.path.join(root, f'WIDER_{split}', 'images')
        for entry in parse_gt_file(path):
            if isinstance(entry, SkipItem):
                yield entry
                continue
            rel, boxes, attrs, line_no = entry
            yield RawItem(
                source_id=f'wider/{rel}',
                path=os.path.join(image_dir, rel),
                boxes_xywh=boxes.astype(np.float32),
                landmarks_xy=None,
                ignore=attrs[:, ATTRIBUTE_NAMES.index('invalid')] == 1,
                split=split,
                origin=f'{path}:{line_no}',
                attributes={n: attrs[:, k] for k, n in enumerate(ATTRIBUTE_NAMES)})
