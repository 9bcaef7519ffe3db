"""Multi-scale testing on an exported model: run the detect_image signature at several
image scales and merge the passes with NMS (used by detect.py --scales and the benchmarks).
"""

import numpy as np
import tensorflow as tf


def parse_scales(values):
    """--scales strings -> positive floats; raises ValueError naming a bad one."""
    scales = []
    for v in values:
        try:
            scale = float(v)
        except ValueError:
            scale = 0.0
        if not scale > 0:
            raise ValueError(f'--scales: {v!r} is not a positive number')
        scales.append(scale)
    if not scales:
        raise ValueError('--scales: give at least one scale, e.g. 1')
    return scales


def run_scales(signature, pixels, scales=(1.0,), merge_iou=0.4):
    """Runs the detect_image signature at each scale; returns boxes [K, 4] xywh, scores [K]
    and landmarks [K, 10] in the pixels of ``pixels``, best first.

    With several scales the detections of all passes are merged by NMS at merge_iou (the
    export's own NMS threshold by default), as multi-scale testing does in RetinaFace and
    SCRFD's evaluations.
    """
    image = tf.constant(pixels[None], tf.float32)
    boxes, scores, landmarks = [], [], []
    for scale in scales:
        scaled = image
        if scale != 1.0:
            scaled = tf.image.resize(image, [max(1, round(pixels.shape[0] * scale)),
                                             max(1, round(pixels.shape[1] * scale))])
        out = signature(images=scaled)
        n = int(out['num_detections'][0])
        boxes.append(out['boxes'][0, :n].numpy() / scale)
        scores.append(out['scores'][0, :n].numpy())
        landmarks.append(out['landmarks'][0, :n].numpy() / scale)
    boxes, scores, landmarks = (np.concatenate(x) for x in (boxes, scores, landmarks))
    if len(scales) > 1 and len(scores):
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        keep = tf.image.non_max_suppression(xyxy[:, [1, 0, 3, 2]], scores, len(scores),
                                            iou_threshold=merge_iou).numpy()
    else:
        keep = np.argsort(-scores, kind='stable')
    return boxes[keep], scores[keep], landmarks[keep]
