"""JSONL manifest reader (no TF): one JSON object per line, one line per image.

Format::

    {"image": "images/x.jpg", "boxes": [[x, y, w, h], ...],
     "landmarks": [...], "ignore": [...], "split": "val"}

  * ``image``: path, relative to the manifest's folder (or absolute).
  * ``boxes``: [N][4] pixel [x, y, w, h] in the image as displayed; ``[]`` is a valid image
    with no face.
  * ``landmarks`` (optional): N entries, each null (not labelled), [5][2] pixel (x, y)
    points, or 10 numbers x0, y0, x1, y1, ... Point order: left eye (smaller x in a
    frontal face), right eye, nose, left mouth corner, right mouth corner.
  * ``ignore`` (optional): N booleans (or 0/1).
  * ``split`` (optional): 'train', 'val' or 'test'. When absent:
    ``splits.split_by_hash(image, val_fraction)`` on the ``image`` string as written.
  * Any other key (``width``, ``height``, ``classes``, ...) is ignored.

Box conventions differ between datasets: WIDER FACE boxes run from the hairline to the chin,
some other sets box the face lower and tighter. ``box_adjust=(dx, dy, sw, sh)`` maps every
box of a manifest, in units of its own width and height: x += dx * w, y += dy * h,
w *= sw, h *= sh (the record writer then clips it to the image), so one model learns one
convention.

A line that is not valid JSON or breaks these rules comes out as
SkipItem('malformed_annotation', 'manifest:line: problem: text') and reading goes on.
"""

import json
import os
from typing import Iterator, Optional, Union

import numpy as np

from preprocess import files
from preprocess.items import RawItem, SkipItem
from preprocess.splits import SPLITS, split_by_hash


class _Malformed(ValueError):
    pass


def _numbers(value, what: str) -> np.ndarray:
    """A nested JSON list of numbers (not strings or booleans) -> float64 array."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):  # ragged lists
        a = np.asarray([], object).reshape(1, 0)
    if a.size and a.dtype.kind not in 'iuf' or a.dtype == object:
        raise _Malformed(f'{what} must be a (rectangular) list of numbers')
    return a.astype(np.float64)


def _landmarks(value, n: int) -> Optional[np.ndarray]:
    """JSON landmarks -> [N, 5, 2] float64 with NaN rows for null entries."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        raise _Malformed(f'"landmarks" must be a list of {n} entries')
    out = np.full([n, 5, 2], np.nan)
    for k, face in enumerate(value):
        if face is None:
            continue
        p = _numbers(face, f'landmarks of face {k}')
        if p.size != 10 or p.shape not in ((10,), (5, 2)):
            raise _Malformed(f'landmarks of face {k} must be [5][2] or [10]')
        out[k] = p.reshape(5, 2)
    return out


def _decode(text: str):
    """json.loads, raising _Malformed for every way a line can fail to decode."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Malformed(f'invalid JSON ({e.msg})') from None
    except ValueError:  # an integer of more than 4300 digits
        raise _Malformed('invalid JSON (a number too long to read)') from None
    except RecursionError:
        raise _Malformed('invalid JSON (nested too deeply)') from None


def _image_path(obj) -> str:
    """The "image" string of a line; raises _Malformed when there is none or it is not a
    path (a lone UTF-16 surrogate such as "\\ud800" cannot name a file)."""
    image = obj.get('image') if isinstance(obj, dict) else None
    if not isinstance(image, str) or not image:
        raise _Malformed('expected an object with a non-empty "image" string')
    try:
        image.encode('utf-8')
    except UnicodeEncodeError:
        raise _Malformed('"image" is not valid Unicode (a lone surrogate escape)') from None
    return image


def check_box_adjust(box_adjust):
    """Returns box_adjust as 4 floats (dx, dy, sw, sh); raises ValueError when it is not."""
    try:
        values = tuple(float(v) for v in box_adjust)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)) or min(values[2:]) <= 0:
        raise ValueError(f'box adjustment must be 4 numbers dx,dy,sw,sh with sw and sh > 0, '
                         f'got {box_adjust!r}')
    return values


def adjust_boxes(boxes_xywh: np.ndarray, box_adjust) -> np.ndarray:
    """[N, 4] pixel xywh -> the same boxes in another convention (see the module doc)."""
    dx, dy, sw, sh = box_adjust
    x, y, w, h = (boxes_xywh[:, i] for i in range(4))
    return np.stack([x + dx * w, y + dy * h, w * sw, h * sh], axis=1).astype(boxes_xywh.dtype)


def parse_line(obj, base_dir: str, source_name: str, val_fraction: float,
               box_adjust=None) -> RawItem:
    """One decoded JSON object -> RawItem (origin left empty). Raises ValueError."""
    image = _image_path(obj)
    if not isinstance(obj.get('boxes'), list):
        raise _Malformed('"boxes" must be a list of [x, y, w, h]')
    boxes = _numbers(obj['boxes'], '"boxes"')
    # [] is an image without faces; [[]] is one face without its numbers.
    if obj['boxes'] and not (boxes.ndim == 2 and boxes.shape[1] == 4):
        raise _Malformed('"boxes" must be a list of [x, y, w, h]')
    boxes = boxes.reshape(-1, 4)
    if box_adjust is not None:
        boxes = adjust_boxes(boxes, box_adjust)
    n = len(boxes)
    landmarks = _landmarks(obj.get('landmarks'), n)
    ignore = obj.get('ignore')
    if ignore is not None:
        if not isinstance(ignore, list) or len(ignore) != n or not all(
                isinstance(v, (bool, int)) for v in ignore):
            raise _Malformed(f'"ignore" must be a list of {n} booleans')
        ignore = np.asarray(ignore, bool)
    split = obj.get('split')
    if split is None:
        split = split_by_hash(image, val_fraction)
    elif split not in SPLITS:
        raise _Malformed(f'"split" must be one of {SPLITS}')
    return RawItem(
        source_id=f'{source_name}/{image}',
        path=os.path.join(base_dir, image),
        boxes_xywh=boxes.astype(np.float32),
        landmarks_xy=landmarks,
        ignore=ignore,
        split=split)


def read_items(manifest_path: str, source_name: Optional[str] = None,
               val_fraction: float = 0.1, box_adjust=None) -> Iterator[Union[RawItem, SkipItem]]:
    """Yields one RawItem (or SkipItem) per non-blank manifest line, in file order.

    Args:
      manifest_path: the .jsonl file.
      source_name: prefix of source_id; default: the manifest folder's name (so
        'face_mask/labels.jsonl' gives 'face_mask/images/x.jpg').
      val_fraction: for lines without "split" (see splits.split_by_hash).
      box_adjust: optional (dx, dy, sw, sh) convention change of every box (module doc).
    """
    if box_adjust is not None:
        box_adjust = check_box_adjust(box_adjust)
    base_dir = os.path.dirname(files.absolute(manifest_path))
    if source_name is None:
        source_name = os.path.basename(base_dir)
    with files.open_text(manifest_path) as f:
        for line_no, text in enumerate(f, 1):
            text = text.strip()
            if not text:
                continue
            try:
                item = parse_line(_decode(text), base_dir, source_name, val_fraction,
                                  box_adjust)
            except _Malformed as e:
                yield SkipItem('malformed_annotation',
                               f'{manifest_path}:{line_no}: {e}: {text[:200]!r}')
                continue
            item.origin = f'{manifest_path}:{line_no}'
            yield item
