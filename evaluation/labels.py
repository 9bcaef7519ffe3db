"""Ground truth and detections for evaluation, and the rule that pairs them by image path.

Ground truth is a dict ``{key: Faces}``: per image ``boxes`` [N, 4] float32 pixel xywh,
``ignore`` [N] bool and ``landmarks`` [N, 10] float32 pixel (x, y) pairs (NaN rows for faces
without points), loaded from one of:
  * a JSONL labels file (``.jsonl``): ``{"image", "boxes": [[x, y, w, h], ...],
    optional "ignore": [0/1, ...], optional "landmarks": [[x0, y0, ..., x4, y4] or null,
    ...]}`` per line (one landmarks entry per box, null for a face without points; the
    points in data/features.py's order, pixels as in detections.jsonl); key = the image
    path joined to the labels file's folder (absolute, normalised);
  * the official WIDER FACE gt txt (``.txt``), parsed by ``preprocess.widerface``;
    key = the path as written there (relative to ``WIDER_*/images``); ``invalid=1`` faces
    are ignored; malformed entries are skipped and reported; no landmarks;
  * TFRecords written by ``data.features`` (any other pattern, globbed): key =
    ``source_id``; normalized yxyx boxes and (y, x) landmarks are turned into pixels with
    the record's size (faces with ``landmarks_valid`` 0 get NaN rows).

Detections come from ``detections.jsonl``: ``{"image", "width", "height", "boxes":
[[x, y, w, h], ...], "scores": [...], optional "landmarks": [[x0, y0, ..., x4, y4], ...]}``
per line (no "landmarks" when the model has none).

Pairing rule (``pair``): paths are split into components after normalisation ('\\' -> '/',
'.' and '..' resolved where possible). A detection entry goes to the label key sharing
the longest common suffix of components with it; at least the file name must agree, and
the best key must be unique (otherwise the entry is "ambiguous"). So absolute detection
paths meet labels relative to their file, and a bare file name still matches when it is
unique. Each label key takes at most one detection entry (a second one is "duplicate").
Labelled images with no detection entry count as all missed; detection entries with no
label are reported and not counted.
"""

import collections
import dataclasses
import glob
import json
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np


class Faces(NamedTuple):
    """One image's ground truth (see the module docstring)."""
    boxes: np.ndarray
    ignore: np.ndarray
    landmarks: np.ndarray


GroundTruth = Dict[str, Faces]
_WIDER_INVALID = 3  # column of ``invalid`` in WIDER's six attributes


class InputError(Exception):
    """Bad evaluation input; the message names the file (and line)."""


def _components(path: str) -> Tuple[str, ...]:
    """Normalised path components, e.g. '/a/./b\\c.jpg' -> ('a', 'b', 'c.jpg')."""
    norm = os.path.normpath(path.replace('\\', '/')).replace('\\', '/')
    return tuple(c for c in norm.split('/') if c not in ('', '.'))


def _boxes(value, where: str) -> np.ndarray:
    """[[x, y, w, h], ...] -> [N, 4] float32, or InputError."""
    try:
        b = np.asarray(value if value is not None else [], np.float32).reshape(-1, 4)
    except (TypeError, ValueError):
        raise InputError(f'{where}: "boxes" must be a list of [x, y, w, h]') from None
    if not np.all(np.isfinite(b)):
        raise InputError(f'{where}: "boxes" holds a non-finite number')
    return b


def _no_landmarks(n: int) -> np.ndarray:
    return np.full([n, 10], np.nan, np.float32)


def _landmarks(value, n: int, where: str) -> np.ndarray:
    """[[x0, y0, ..., x4, y4] or null, ...] (one per box) -> [n, 10] float32 with NaN rows
    for null, or InputError; a missing key gives all NaN."""
    if value is None:
        return _no_landmarks(n)
    if not isinstance(value, list) or len(value) != n:
        raise InputError(f'{where}: "landmarks" must hold one entry per box ({n})')
    out = _no_landmarks(n)
    for i, points in enumerate(value):
        if points is None:
            continue
        try:
            out[i] = np.asarray(points, np.float32).reshape(10)
        except (TypeError, ValueError):
            raise InputError(f'{where}: "landmarks" entry {i} must be null or 10 numbers '
                             '[x0, y0, ..., x4, y4]') from None
        if not np.all(np.isfinite(out[i])):
            raise InputError(f'{where}: "landmarks" entry {i} holds a non-finite number')
    return out


def _json_lines(path: str):
    """Yields (where, dict) for each non-blank line of a JSONL file."""
    if not os.path.isfile(path):
        raise InputError(f'{path}: no such file')
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f'{path}:{line_no}'
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f'{where}: not valid JSON ({e.msg})') from None
            if not isinstance(obj, dict) or not isinstance(obj.get('image'), str):
                raise InputError(f'{where}: expected an object with an "image" path')
            yield where, obj


def _put(gt: GroundTruth, key: str, value, where: str):
    if key in gt:
        raise InputError(f'{where}: image {key} is labelled twice')
    gt[key] = value


def load_jsonl_labels(path: str) -> GroundTruth:
    """Reads a JSONL labels file; keys are absolute normalised image paths."""
    root = os.path.dirname(os.path.abspath(path))
    gt: GroundTruth = {}
    for where, obj in _json_lines(path):
        boxes = _boxes(obj.get('boxes'), where)
        ignore = np.asarray(obj.get('ignore', np.zeros(len(boxes))), bool).reshape(-1)
        if len(ignore) != len(boxes):
            raise InputError(f'{where}: {len(boxes)} boxes but {len(ignore)} ignore flags')
        landmarks = _landmarks(obj.get('landmarks'), len(boxes), where)
        _put(gt, os.path.normpath(os.path.join(root, obj['image'])),
             Faces(boxes, ignore, landmarks), where)
    return gt


def load_wider_labels(path: str, skipped: List[str] = None) -> GroundTruth:
    """Reads the official WIDER FACE gt txt; ``invalid`` faces are ignored.

    Args:
      path: e.g. wider_face_val_bbx_gt.txt.
      skipped: if given, receives one message per malformed entry (they are skipped).
    """
    if not os.path.isfile(path):
        raise InputError(f'{path}: no such file')
    from preprocess import items, widerface  # pylint: disable=g-import-not-at-top
    gt: GroundTruth = {}
    for entry in widerface.parse_gt_file(path):
        if isinstance(entry, items.SkipItem):
            if skipped is not None:
                skipped.append(f'{entry.reason}: {entry.detail}')
            continue
        rel_path, boxes, attrs, line_no = entry
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        attrs = np.asarray(attrs, np.int64)
        ignore = np.zeros(len(boxes), bool)
        if attrs.size:
            ignore = attrs.reshape(len(boxes), -1)[:, _WIDER_INVALID] != 0
        _put(gt, rel_path, Faces(boxes, ignore, _no_landmarks(len(boxes))), f'{path}:{line_no}')
    return gt


def load_tfrecord_labels(pattern: str) -> GroundTruth:
    """Reads TFRecords written with data.features; keys are source ids."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise InputError(f'{pattern}: no TFRecord file matches')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from data import boxes as box_lib  # pylint: disable=g-import-not-at-top
    from data import features  # pylint: disable=g-import-not-at-top
    gt: GroundTruth = {}
    for path in files:
        ds = tf.data.TFRecordDataset(path).map(
            lambda s: features.parse_example(s, decode_image=False))
        try:
            for i, ex in enumerate(ds.as_numpy_iterator()):
                boxes = box_lib.normalized_to_xywh(ex['boxes'], ex['height'], ex['width'])
                marks = box_lib.normalized_to_landmarks_xy(
                    ex['landmarks'], ex['height'], ex['width']).reshape(-1, 10)
                marks[~ex['landmarks_valid'].astype(bool)] = np.nan
                _put(gt, ex['source_id'].decode('utf-8'),
                     Faces(boxes, ex['ignore'].astype(bool), marks), f'{path}: record {i}')
        except tf.errors.OpError as e:
            raise InputError(f'{path}: unreadable TFRecord ({e.message})') from None
    return gt


def load_labels(spec: str, skipped: List[str] = None) -> GroundTruth:
    """Loads ground truth, choosing the reader by name: .jsonl, .txt, else a TFRecord glob."""
    if spec.endswith('.jsonl'):
        return load_jsonl_labels(spec)
    if spec.endswith('.txt'):
        return load_wider_labels(spec, skipped)
    return load_tfrecord_labels(spec)


@dataclasses.dataclass
class Detections:
    """One detections.jsonl entry: boxes [M, 4] pixel xywh, scores [M] and landmarks
    [M, 10] pixel (x, y) pairs (None when the entry has none)."""
    image: str
    boxes: np.ndarray
    scores: np.ndarray
    where: str
    error: str = ''  # detect.py could not read the image: no boxes, its faces are missed
    landmarks: Optional[np.ndarray] = None


def load_detections(path: str) -> List[Detections]:
    """Reads detections.jsonl; raises InputError naming the file and line."""
    out = []
    for where, obj in _json_lines(path):
        boxes = _boxes(obj.get('boxes'), where)
        try:
            scores = np.asarray(obj.get('scores', []), np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f'{where}: "scores" must be a list of numbers') from None
        if len(scores) != len(boxes):
            raise InputError(f'{where}: {len(boxes)} boxes but {len(scores)} scores')
        if not np.all(np.isfinite(scores)):
            raise InputError(f'{where}: "scores" holds a non-finite number')
        landmarks = None
        if obj.get('landmarks') is not None:
            landmarks = _landmarks(obj['landmarks'], len(boxes), where)
            if np.isnan(landmarks).any():
                raise InputError(f'{where}: "landmarks" must be 10 numbers for every box')
        out.append(Detections(obj['image'], boxes, scores, where, str(obj.get('error') or ''),
                              landmarks))
    return out


@dataclasses.dataclass
class Pairing:
    """Result of ``pair``.

    Attributes:
      matched: label key -> its Detections.
      missing: label keys with no detection entry (counted as all missed).
      unlabelled: detection entries with no label (not counted).
      ambiguous: detection entries whose best label key is not unique (not counted).
      duplicate: detection entries for a label key already taken (not counted).
    """
    matched: Dict[str, Detections]
    missing: List[str]
    unlabelled: List[Detections]
    ambiguous: List[Detections]
    duplicate: List[Detections]


def _common_suffix(a: Tuple[str, ...], b: Tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def pair(gt_keys, detections: List[Detections]) -> Pairing:
    """Pairs detection entries with label keys by the module's longest-suffix rule."""
    by_name = collections.defaultdict(list)
    for key in gt_keys:
        comps = _components(key)
        by_name[comps[-1] if comps else ''].append((key, comps))
    result = Pairing({}, [], [], [], [])
    for det in detections:
        comps = _components(det.image)
        candidates = by_name.get(comps[-1] if comps else None, [])
        if not candidates:
            result.unlabelled.append(det)
            continue
        lengths = [_common_suffix(comps, c) for _, c in candidates]
        best = max(lengths)
        keys = [k for (k, _), n in zip(candidates, lengths) if n == best]
        if len(keys) > 1:
            result.ambiguous.append(det)
        elif keys[0] in result.matched:
            result.duplicate.append(det)
        else:
            result.matched[keys[0]] = det
    result.missing = [k for k in gt_keys if k not in result.matched]
    return result
