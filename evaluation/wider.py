"""WIDER FACE style detection accuracy: matching, PR curve and AP (pure numpy, no TF).

Boxes here are at the project's edge format: ``[x, y, width, height]`` in pixels of the
original image (``boxes_xywh``), for both ground truth and detections.

Rules (documented once, here):
  * Ignored faces. A face is ignored when its label says so (``gt_ignore``; WIDER's
    ``invalid`` flag), when it is degenerate (width or height <= 0, e.g. the all-zero line
    of a face-free WIDER entry), or when its **height** is below ``min_face`` pixels. Height
    follows the WIDER FACE paper and the community reading of the official hard-set lists
    ("faces under 10 px tall are not evaluated"); ``min_face=0`` ignores nothing by size.
    Ignored faces are not in recall's denominator.
  * Matching, per image. Detections are visited in descending score order (a stable sort,
    so equal scores keep their input order). A detection is a true positive when some
    non-ignored, not yet matched face has IoU >= ``iou_threshold`` with it; it takes the
    one with the highest IoU. Otherwise, when an ignored face has IoU >= threshold, the
    detection is ignored (neither TP nor FP; an ignored face may absorb any number of
    detections). Otherwise it is a false positive; this includes a second detection on an
    already matched face. Preferring a free valid face over an ignored one follows COCO's
    matcher; the WIDER python port instead looks only at the single highest-IoU face.
  * Curve. True and false positives of all images are pooled and sorted by score. One PR
    point per distinct score ``t``: precision and recall of all detections with
    score >= t, so ties across images cannot change the result. (The official tool samples
    1000 thresholds of min-max normalised scores; using every distinct score is exact.)
  * AP is VOC all-point interpolation (also what the WIDER python port computes): recall
    padded with 0 and 1, precision with 0 and 0, precision made non-increasing from the
    right, then summed over the recall steps.
  * Size bands (``max_face``, ``band_detections``; COCO's area-range rule applied to
    heights): faces whose height is outside [min_face, max_face) are ignored, and so is an
    unmatched detection whose height is outside the band, so that a band's AP is not charged
    with the false positives of other sizes. Used for "AP by face height" tables; the
    headline AP keeps WIDER's rule (every unmatched detection is a false positive).
  * Undefined values are NaN: AP and recall with no counted face, precision at a threshold
    no detection reaches, false positives per face-free image with no face-free image.
"""

import dataclasses
from typing import Dict, Iterable, List

import numpy as np

from data.boxes import iou_matrix_np, xywh_to_xyxy


def ignored_faces(gt_boxes, gt_ignore=None, min_face: float = 0.0,
                  max_face: float = np.inf) -> np.ndarray:
    """Which faces are left out of evaluation (see the module rules).

    Args:
      gt_boxes: [N, 4] pixel xywh.
      gt_ignore: optional [N] bool, the label's own ignore flag.
      min_face: faces with height < min_face pixels are ignored.
      max_face: faces with height >= max_face pixels are ignored.

    Returns:
      [N] bool.
    """
    b = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    ignore = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 3] < min_face) | (b[:, 3] >= max_face)
    if gt_ignore is not None:
        ignore |= np.asarray(gt_ignore, bool).reshape(-1)
    return ignore


@dataclasses.dataclass
class ImageMatch:
    """Outcome of matching one image's detections.

    Attributes:
      scores: [M] float64, detection scores in descending order.
      is_tp, is_fp: [M] bool; both False for an ignored detection.
      num_faces: faces that count (not ignored).
      num_ignored_faces: faces left out.
      order: [M] int, the input index of each detection (scores[i] is det_scores[order[i]]).
      face: [M] int, the face each true positive matched (an index into gt_boxes), else -1.
    """
    scores: np.ndarray
    is_tp: np.ndarray
    is_fp: np.ndarray
    num_faces: int
    num_ignored_faces: int
    order: np.ndarray = None
    face: np.ndarray = None


def match_image(gt_boxes, det_boxes, det_scores, gt_ignore=None,
                iou_threshold: float = 0.5, min_face: float = 0.0, max_face: float = np.inf,
                band_detections: bool = False) -> ImageMatch:
    """Greedy WIDER/VOC matching of one image (see the module rules).

    Args:
      gt_boxes: [N, 4] pixel xywh; N may be 0.
      det_boxes: [M, 4] pixel xywh; M may be 0.
      det_scores: [M] float.
      gt_ignore: optional [N] bool.
      iou_threshold: minimum IoU for a match.
      min_face: faces shorter than this (pixels) are ignored.
      max_face: faces this tall or taller are ignored.
      band_detections: also ignore unmatched detections whose height is outside
        [min_face, max_face) (a size band's AP; see the module rules).

    Returns:
      An ImageMatch.
    """
    gt_xyxy = xywh_to_xyxy(gt_boxes)
    det_xyxy = xywh_to_xyxy(det_boxes)
    scores = np.asarray(det_scores, np.float64).reshape(-1)
    if len(scores) != len(det_xyxy):
        raise ValueError(f'{len(det_xyxy)} detection boxes but {len(scores)} scores')
    ignore = ignored_faces(gt_boxes, gt_ignore, min_face, max_face)
    if len(ignore) != len(gt_xyxy):
        raise ValueError(f'{len(gt_xyxy)} faces but {len(ignore)} ignore flags')
    order = np.argsort(-scores, kind='stable')
    scores, det_xyxy = scores[order], det_xyxy[order]
    det_height = det_xyxy[:, 3] - det_xyxy[:, 1]
    out_of_band = band_detections & ((det_height < min_face) | (det_height >= max_face))
    iou = iou_matrix_np(det_xyxy, gt_xyxy).reshape(len(det_xyxy), len(gt_xyxy))
    matched = np.zeros(len(gt_xyxy), bool)
    is_tp = np.zeros(len(scores), bool)
    is_fp = np.zeros(len(scores), bool)
    face = np.full(len(scores), -1)
    for d in range(len(scores)):
        hit = iou[d] >= iou_threshold
        free = hit & ~ignore & ~matched
        if free.any():
            face[d] = np.argmax(np.where(free, iou[d], -1.0))
            matched[face[d]] = True
            is_tp[d] = True
        elif not (hit & ignore).any() and not out_of_band[d]:
            is_fp[d] = True
    return ImageMatch(scores, is_tp, is_fp, int((~ignore).sum()), int(ignore.sum()), order, face)


def average_precision(recall, precision) -> float:
    """VOC all-point interpolated AP.

    Args:
      recall: [K] non-decreasing recall values.
      precision: [K] precision at the same points.

    Returns:
      The area under the interpolated curve, a float in [0, 1].
    """
    mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclasses.dataclass
class EvalResult:
    """Accuracy of a detector on a set of images.

    Attributes:
      ap: average precision (NaN with no counted face).
      thresholds: [K] distinct detection scores, descending.
      precision, recall: [K] over detections with score >= thresholds[k].
      iou_threshold, min_face, max_face: the settings used.
      num_images, num_faces, num_ignored_faces, num_face_free_images: counts; a face-free
        image is one whose labels hold no box of positive size (ignored ones included).
      num_detections: all detections; num_ignored_detections of them matched ignored faces.
      face_free_scores: [F] scores of every detection on a face-free image.
    """
    ap: float
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    iou_threshold: float
    min_face: float
    num_images: int
    num_faces: int
    num_ignored_faces: int
    num_face_free_images: int
    num_detections: int
    num_ignored_detections: int
    face_free_scores: np.ndarray
    max_face: float = np.inf

    def _index(self, score_threshold: float) -> int:
        """Index of the last PR point whose threshold is >= score_threshold, or -1."""
        return int(np.searchsorted(-self.thresholds, -score_threshold, side='right')) - 1

    def recall_at(self, score_threshold: float) -> float:
        """Recall of the detections with score >= score_threshold."""
        if self.num_faces == 0:
            return float('nan')
        k = self._index(score_threshold)
        return float(self.recall[k]) if k >= 0 else 0.0

    def precision_at(self, score_threshold: float) -> float:
        """Precision of the detections with score >= score_threshold (NaN when none)."""
        k = self._index(score_threshold)
        return float(self.precision[k]) if k >= 0 else float('nan')

    def false_positives_per_face_free_image(self, score_threshold: float) -> float:
        """Mean number of detections with score >= threshold on face-free images."""
        if self.num_face_free_images == 0:
            return float('nan')
        return float(np.sum(self.face_free_scores >= score_threshold)) / self.num_face_free_images

    def band_summary(self) -> Dict[str, float]:
        """A size band's row as a JSON-ready dict: heights, counted faces and AP (an open
        end and an undefined AP are None)."""
        return {'min_face': self.min_face,
                'max_face': self.max_face if np.isfinite(self.max_face) else None,
                'faces': self.num_faces, 'ap': None if np.isnan(self.ap) else self.ap}

    def summary(self, score_threshold: float) -> Dict[str, float]:
        """Scalar metrics as a JSON-ready dict."""
        return {
            'iou_threshold': self.iou_threshold, 'min_face': self.min_face,
            'score_threshold': score_threshold, 'ap': self.ap,
            'recall': self.recall_at(score_threshold),
            'precision': self.precision_at(score_threshold),
            'fp_per_face_free_image': self.false_positives_per_face_free_image(score_threshold),
            'num_images': self.num_images, 'num_faces': self.num_faces,
            'num_ignored_faces': self.num_ignored_faces,
            'num_face_free_images': self.num_face_free_images,
            'num_detections': self.num_detections,
            'num_ignored_detections': self.num_ignored_detections,
        }


class Accumulator:
    """Streaming evaluation: add images one at a time, ask for the result at any point.

    Keeps only (score, is_tp, is_fp) per counted detection, the scores of detections on
    face-free images and a few counts, so a validation split never has to sit in memory.

    Usage:
      acc = Accumulator(iou_threshold=0.5)
      for each image: acc.add_image(gt_boxes_xywh, det_boxes_xywh, det_scores, gt_ignore)
      result = acc.result()
    """

    def __init__(self, iou_threshold: float = 0.5, min_face: float = 0.0,
                 max_face: float = np.inf, band_detections: bool = False):
        self.iou_threshold = float(iou_threshold)
        self.min_face = float(min_face)
        self.max_face = float(max_face)
        self.band_detections = bool(band_detections)
        self.reset()

    def reset(self):
        """Forgets every image added so far."""
        self._scores: List[np.ndarray] = []
        self._tp: List[np.ndarray] = []
        self._fp: List[np.ndarray] = []
        self._face_free_scores: List[np.ndarray] = []
        self.num_images = 0
        self.num_faces = 0
        self.num_ignored_faces = 0
        self.num_face_free_images = 0
        self.num_detections = 0
        self.num_ignored_detections = 0

    def add_image(self, gt_boxes, det_boxes, det_scores, gt_ignore=None) -> ImageMatch:
        """Adds one image.

        Args:
          gt_boxes: [N, 4] pixel xywh faces; N may be 0 (a face-free image).
          det_boxes: [M, 4] pixel xywh detections; M may be 0.
          det_scores: [M] scores.
          gt_ignore: optional [N] bool.

        Returns:
          The image's ImageMatch.
        """
        m = match_image(gt_boxes, det_boxes, det_scores, gt_ignore, self.iou_threshold,
                        self.min_face, self.max_face, self.band_detections)
        counted = m.is_tp | m.is_fp
        self._scores.append(m.scores[counted])
        self._tp.append(m.is_tp[counted])
        self._fp.append(m.is_fp[counted])
        self.num_images += 1
        self.num_faces += m.num_faces
        self.num_ignored_faces += m.num_ignored_faces
        self.num_detections += len(m.scores)
        self.num_ignored_detections += int((~counted).sum())
        if not np.any(np.all(np.asarray(gt_boxes, np.float64).reshape(-1, 4)[:, 2:] > 0, -1)):
            self.num_face_free_images += 1
            self._face_free_scores.append(m.scores)
        return m

    def add(self, image: Dict[str, np.ndarray]) -> ImageMatch:
        """Adds one image given as the dict that ``evaluate`` takes."""
        return self.add_image(image['gt_boxes'], image['det_boxes'], image['det_scores'],
                              image.get('gt_ignore'))

    def result(self) -> EvalResult:
        """The PR curve and AP of everything added so far."""
        scores = np.concatenate([np.zeros([0])] + self._scores)
        order = np.argsort(-scores, kind='stable')
        scores = scores[order]
        tp = np.cumsum(np.concatenate([np.zeros([0], bool)] + self._tp)[order])
        fp = np.cumsum(np.concatenate([np.zeros([0], bool)] + self._fp)[order])
        # One PR point per distinct score: the last detection of each run of equal scores.
        last = np.nonzero(np.append(scores[1:] != scores[:-1], True))[0] if len(scores) else []
        thresholds = scores[last]
        tp, fp = tp[last].astype(np.float64), fp[last].astype(np.float64)
        precision = tp / np.maximum(tp + fp, 1.0)
        if self.num_faces:
            recall = tp / self.num_faces
            ap = average_precision(recall, precision)
        else:
            recall = np.full_like(tp, np.nan)
            ap = float('nan')
        return EvalResult(
            ap=ap, thresholds=thresholds, precision=precision, recall=recall,
            iou_threshold=self.iou_threshold, min_face=self.min_face,
            num_images=self.num_images, num_faces=self.num_faces,
            num_ignored_faces=self.num_ignored_faces,
            num_face_free_images=self.num_face_free_images,
            num_detections=self.num_detections,
            num_ignored_detections=self.num_ignored_detections,
            face_free_scores=np.concatenate([np.zeros([0])] + self._face_free_scores),
            max_face=self.max_face)


def evaluate(images: Iterable[Dict[str, np.ndarray]], iou_threshold: float = 0.5,
             min_face: float = 0.0) -> EvalResult:
    """Evaluates a list of images at once.

    Args:
      images: dicts with ``gt_boxes`` [N, 4] pixel xywh, optional ``gt_ignore`` [N] bool,
        ``det_boxes`` [M, 4] pixel xywh and ``det_scores`` [M].
      iou_threshold: minimum IoU for a match.
      min_face: faces shorter than this many pixels are ignored.

    Returns:
      An EvalResult.
    """
    acc = Accumulator(iou_threshold, min_face)
    for image in images:
        acc.add(image)
    return acc.result()


def false_positives_per_image(images: Iterable[Dict[str, np.ndarray]],
                              score_threshold: float) -> float:
    """Mean count of detections with score >= threshold over face-free images (NaN if none).

    Args:
      images: dicts as for ``evaluate``; only those with no ``gt_boxes`` row of positive
        size are used.
      score_threshold: detections below it are not counted.
    """
    counts: List[int] = []
    for image in images:
        if not np.any(np.all(np.asarray(image['gt_boxes']).reshape(-1, 4)[:, 2:] > 0, -1)):
            counts.append(int(np.sum(np.asarray(image['det_scores']) >= score_threshold)))
    return float(np.mean(counts)) if counts else float('nan')


def size_bands(edges, min_face: float = 0.0):
    """[(low, high)] face-height bands from sorted edges: [min_face, e0), [e0, e1), ...,
    [e_last, inf). Edges at or below min_face are dropped."""
    edges = sorted(float(e) for e in edges if float(e) > min_face)
    lows = [float(min_face)] + edges
    return list(zip(lows, edges + [np.inf]))


def band_name(low: float, high=None) -> str:
    """'10-16 px', or '>= 80 px' for an open band (high None or inf)."""
    return f'{low:g}-{high:g} px' if high is not None and np.isfinite(high) else f'>= {low:g} px'
