"""Teacher landmarks and ignore regions from a YuNet face detector (``--landmark_teacher``).

make_records runs the teacher on each image of a face source as it will be stored (after
the ``--max_side`` resize, at that size) and changes the image's faces by these rules:

| case | what is stored |
|---|---|
| labelled face without landmarks, matched by a detection (IoU >= ``match_iou``) | the detection's 5 points, ``landmarks_valid`` 1 |
| labelled face without landmarks, no match | unchanged (``landmarks_valid`` 0) |
| labelled face with landmarks (e.g. CelebA, synthetic) | unchanged; it still takes part in matching |
| detection, score >= ``ignore_score``, IoU < ``UNLABELLED_IOU`` with every label | a new face with ``ignore`` 1, ``landmarks_valid`` 0 |
| any other detection | dropped |
| negatives (source ids ``negatives_*``: verified face-free folder, crops, generated) | not run through the teacher |

Labelled boxes, their ``ignore`` flags and any labelled landmarks are never changed.
Matching is one-to-one and greedy: the pair with the highest IoU first. Detections are
taken down to ``DETECT_SCORE`` so that hard labelled faces can still be matched.

Thresholds (YuNet-n on the shared records: WIDER FACE 1,000 photos, face-mask 853):

| setting | value | why |
|---|---|---|
| ``DETECT_SCORE`` | 0.3 | matching needs the hard faces too; an IoU >= 0.5 with a label already vouches for a detection |
| ``match_iou`` | 0.5 | the usual detection match; matched points sit on the face the label boxes |
| ``ignore_score`` | 0.7 | of the unlabelled face-mask detections, 64/64 sampled at >= 0.8 and ~35/40 at 0.7-0.8 are faces (crowd faces the labels skip); YuNet's own 0.9 found only 4 of them. A wrong ignore region only takes a patch out of the background loss; a missed face teaches the model to call it background |

Point order: YuNet's rows are ``x, y, w, h``, then (x, y) of the subject's right eye, left
eye, nose, right and left mouth corner, then the score. The subject's right eye is the one
with the smaller x in a frontal face, which is our "left eye" (data/features.py), so the
order maps one to one (``YUNET_TO_OURS``).

The detector is any callable ``rgb uint8 [H, W, 3] -> [K, 15]`` rows in YuNet's format, in
pixels of that image; ``YuNet`` wraps ``cv2.FaceDetectorYN`` (OpenCV is imported only
here, only when a teacher is asked for) and tests inject a fake.
"""

import dataclasses
import os
from typing import Callable, Dict, Tuple

import numpy as np

from data import boxes as box_lib
from data.features import FaceRecord

DETECT_SCORE = 0.3     # detections kept for matching
UNLABELLED_IOU = 0.3   # a detection overlapping every label less than this is an unlabelled face
NEGATIVE_PREFIX = 'negatives_'
YUNET_TO_OURS = (0, 1, 2, 3, 4)  # our point i is YuNet's point YUNET_TO_OURS[i]
COUNT_KEYS = ('landmarks_added', 'ignore_added')

_DETECTORS: Dict[Tuple[str, float], object] = {}  # one cv2 detector per process and model


class TeacherError(Exception):
    """The teacher cannot run (no OpenCV, unreadable model): one line naming the problem."""


class YuNet:
    """``cv2.FaceDetectorYN`` as a picklable callable; the detector is made on first use in
    each process (a worker unpickles only the path)."""

    def __init__(self, model_path: str, score_threshold: float = DETECT_SCORE):
        self.model_path = model_path
        self.score_threshold = score_threshold

    def _detector(self):
        key = (self.model_path, self.score_threshold)
        if key not in _DETECTORS:
            cv2 = _import_cv2()
            if not os.path.isfile(self.model_path):
                raise TeacherError(f'--landmark_teacher={self.model_path}: no such file')
            try:
                _DETECTORS[key] = cv2.FaceDetectorYN.create(
                    self.model_path, '', (320, 320), self.score_threshold, 0.3, 5000)
            except cv2.error:
                raise TeacherError(f'--landmark_teacher={self.model_path}: OpenCV cannot read '
                                   'it as an ONNX face detector') from None
        return _DETECTORS[key]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        detector = self._detector()
        height, width = rgb.shape[:2]
        detector.setInputSize((width, height))
        _, rows = detector.detect(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV wants BGR
        return np.zeros([0, 15], np.float32) if rows is None else rows


def _import_cv2():
    try:
        import cv2
    except ImportError:
        raise TeacherError('--landmark_teacher needs OpenCV: pip install opencv-python-headless') from None
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its backend notices
    return cv2


def load_yunet(model_path: str) -> YuNet:
    """A YuNet teacher, checked here (one detection on a blank image) so that a missing
    OpenCV or a bad file fails before any work. Raises TeacherError."""
    teacher = YuNet(model_path)
    teacher(np.zeros([64, 64, 3], np.uint8))
    return teacher


def greedy_match(overlaps: np.ndarray, min_iou: float) -> Dict[int, int]:
    """One-to-one matches {label: detection}, highest IoU first, each >= min_iou."""
    matches, used = {}, set()
    order = np.argsort(-overlaps, axis=None, kind='stable')
    for label, det in zip(*np.unravel_index(order, overlaps.shape)):
        if overlaps[label, det] < min_iou:
            break
        if label not in matches and det not in used:
            matches[int(label)] = int(det)
            used.add(int(det))
    return matches


def to_normalized(rows: np.ndarray, height: int, width: int):
    """YuNet rows [K, 15] in pixels -> (boxes [K, 4] yxyx, landmarks [K, 10] (y, x) in our
    order, scores [K]), normalized and clipped to the image."""
    rows = np.asarray(rows, np.float64).reshape(-1, 15)
    boxes = box_lib.xywh_to_normalized(rows[:, :4], height, width)
    points = rows[:, 4:14].reshape(-1, 5, 2)[:, YUNET_TO_OURS]
    landmarks = box_lib.landmarks_xy_to_normalized(points, height, width)
    return np.clip(boxes, 0, 1), np.clip(landmarks, 0, 1).reshape(-1, 10), rows[:, 14]


@dataclasses.dataclass
class Teacher:
    """A detector plus the rules above. ``name`` (the model file's basename) is for the manifest."""
    detect: Callable[[np.ndarray], np.ndarray]
    name: str
    match_iou: float = 0.5
    ignore_score: float = 0.7  # see the module doc

    def applies_to(self, source_id: str) -> bool:
        return not source_id.startswith(NEGATIVE_PREFIX)

    def label(self, pixels: np.ndarray, record: FaceRecord) -> Tuple[FaceRecord, Dict[str, int]]:
        """``record`` (of the image ``pixels``) with teacher landmarks and ignore regions
        added, and the counts {'landmarks_added': n, 'ignore_added': m}."""
        boxes, points, scores = to_normalized(self.detect(pixels), *pixels.shape[:2])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        overlaps = box_lib.iou_matrix_np(record.boxes, boxes)
        landmarks = np.array(record.landmarks, np.float32).reshape(-1, 10)
        valid = np.array(record.landmarks_valid, np.int64).reshape(-1)
        added = 0
        for face, det in greedy_match(overlaps, self.match_iou).items():
            if not valid[face]:
                landmarks[face], valid[face] = points[det], 1
                added += 1
        unlabelled = (scores >= self.ignore_score) & np.all(overlaps < UNLABELLED_IOU, axis=0)
        new = boxes[unlabelled].astype(np.float32)
        n = len(new)
        record = dataclasses.replace(
            record, boxes=np.concatenate([np.asarray(record.boxes, np.float32).reshape(-1, 4), new]),
            landmarks=np.concatenate([landmarks, np.zeros([n, 10], np.float32)]),
            landmarks_valid=np.concatenate([valid, np.zeros([n], np.int64)]),
            ignore=np.concatenate([np.asarray(record.ignore, np.int64).reshape(-1), np.ones([n], np.int64)]))
        return record, {'landmarks_added': added, 'ignore_added': n}
