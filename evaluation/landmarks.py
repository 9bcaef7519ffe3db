"""Landmark accuracy: NME (normalised mean error) of the 5 points on matched faces (numpy).

Points are at the project's edge format: ``[x0, y0, ..., x4, y4]`` in pixels of the original
image, in data/features.py's order (left eye, right eye, nose, left and right mouth corner).
A face without labelled points has a row of NaN.

Rules (documented once, here):

| What | Rule |
|---|---|
| Faces measured | A face with labelled points that a detection with score >= the score threshold matches at IoU >= ``IOU_THRESHOLD``, by evaluation/wider.py's matcher (its ignored faces are never matched). Missed faces and false positives are not measured. |
| Error of a face | The mean over the 5 points of the distance between predicted and true point, divided by the inter-ocular distance: the distance between the face's two true eye points. |
| Skipped | Faces whose true eyes coincide (no scale to divide by), and detections without points. |
| Summary | Mean and median of the faces' errors, and their count; NaN with no face measured. |
"""

import dataclasses
from typing import List

import numpy as np

from evaluation import wider

IOU_THRESHOLD = 0.5
NUM_POINTS = 5


def face_nme(predicted, true) -> float:
    """NME of one face: mean point distance / inter-ocular distance (NaN when the true eyes
    coincide).

    Args:
      predicted: [10] pixel (x, y) pairs.
      true: [10] pixel (x, y) pairs; points 0 and 1 are the eyes.
    """
    p = np.asarray(predicted, np.float64).reshape(NUM_POINTS, 2)
    t = np.asarray(true, np.float64).reshape(NUM_POINTS, 2)
    inter_ocular = np.linalg.norm(t[0] - t[1])
    if not inter_ocular > 0:
        return float('nan')
    return float(np.mean(np.linalg.norm(p - t, axis=1)) / inter_ocular)


def image_nmes(gt_boxes, gt_landmarks, det_boxes, det_scores, det_landmarks, gt_ignore=None,
               score_threshold: float = 0.0, min_face: float = 0.0) -> np.ndarray:
    """NME of each measured face of one image (see the module rules).

    Args:
      gt_boxes: [N, 4] pixel xywh.
      gt_landmarks: [N, 10] pixel (x, y) pairs, NaN rows for faces without points.
      det_boxes: [M, 4] pixel xywh.
      det_scores: [M].
      det_landmarks: [M, 10] pixel (x, y) pairs.
      gt_ignore: optional [N] bool.
      score_threshold: detections below it are left out.
      min_face: faces shorter than this (pixels) are ignored, as by evaluation/wider.py.

    Returns:
      [F] float64, one NME per measured face.
    """
    scores = np.asarray(det_scores, np.float64).reshape(-1)
    keep = scores >= score_threshold
    det_marks = np.asarray(det_landmarks, np.float64).reshape(-1, 2 * NUM_POINTS)[keep]
    gt_marks = np.asarray(gt_landmarks, np.float64).reshape(-1, 2 * NUM_POINTS)
    m = wider.match_image(gt_boxes, np.asarray(det_boxes).reshape(-1, 4)[keep], scores[keep],
                          gt_ignore, IOU_THRESHOLD, min_face)
    out = []
    for d, face in zip(m.order, m.face):
        if face >= 0 and np.all(np.isfinite(gt_marks[face])):
            out.append(face_nme(det_marks[d], gt_marks[face]))
    out = np.asarray(out, np.float64)
    return out[np.isfinite(out)]


@dataclasses.dataclass
class NmeResult:
    """NME summary: mean and median over num_faces measured faces (NaN with none)."""
    mean: float
    median: float
    num_faces: int

    def summary(self):
        """A JSON-ready dict (NaN as None)."""
        return {'iou_threshold': IOU_THRESHOLD, 'num_faces': self.num_faces,
                'mean': None if np.isnan(self.mean) else self.mean,
                'median': None if np.isnan(self.median) else self.median}


class NmeAccumulator:
    """Collects image_nmes image by image; result() summarises them."""

    def __init__(self, score_threshold: float = 0.0, min_face: float = 0.0):
        self.score_threshold = float(score_threshold)
        self.min_face = float(min_face)
        self._nmes: List[np.ndarray] = []

    def add_image(self, gt_boxes, gt_landmarks, det_boxes, det_scores, det_landmarks,
                  gt_ignore=None) -> np.ndarray:
        """Adds one image (arguments as image_nmes); returns its faces' NMEs."""
        nmes = image_nmes(gt_boxes, gt_landmarks, det_boxes, det_scores, det_landmarks,
                          gt_ignore, self.score_threshold, self.min_face)
        self._nmes.append(nmes)
        return nmes

    def result(self) -> NmeResult:
        nmes = np.concatenate([np.zeros([0])] + self._nmes)
        if not len(nmes):
            return NmeResult(float('nan'), float('nan'), 0)
        return NmeResult(float(np.mean(nmes)), float(np.median(nmes)), len(nmes))
