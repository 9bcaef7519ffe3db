"""Target assignment: which anchor points learn which face (ATSS, Zhang et al. 2020).

For each face: on every level take the ``top_k`` points whose centres are closest to the
face centre; their anchor boxes (squares of side ``anchor_scale * stride``) give IoUs with
the face; the face's threshold is mean + std of those IoUs. A candidate point becomes
positive when its IoU reaches the threshold and its centre lies inside the face. A point
claimed by several faces goes to the one with the highest IoU. The adaptive threshold is
what lets tiny and huge faces both get positives without hand-tuned scale ranges.

Ignored faces get no positives; points whose centre lies inside an ignored face (and that
are not positive for another face) get zero classification weight, so they are learned
neither as face nor as background.
"""

import tensorflow as tf

from data import boxes as box_lib

DEFAULT_TOP_K = 9


def assign(points, point_strides, level_sizes, boxes_px, ignore, landmarks_px, landmarks_valid,
           anchor_scale=4.0, top_k=DEFAULT_TOP_K):
    """Assigns faces of one image to anchor points.

    Args:
      points: [P, 2] (y, x) pixels; point_strides: [P]; level_sizes: python ints per level.
      boxes_px: [M, 4] yxyx pixel faces (M may be 0); ignore: [M] bool.
      landmarks_px: [M, 10] (y, x) pixels; landmarks_valid: [M] bool.

    Returns:
      dict of per-point targets: ``positive`` [P] bool, ``cls_weight`` [P] float32,
      ``box`` [P, 4] yxyx pixels (zeros on negatives), ``landmarks`` [P, 10] pixels,
      ``landmark_weight`` [P] float32.
    """
    num_points = tf.shape(points)[0]
    num_faces = tf.shape(boxes_px)[0]
    half = tf.expand_dims(point_strides * anchor_scale / 2.0, -1)
    anchor_boxes = tf.concat([points - half, points + half], axis=-1)
    ious = box_lib.pairwise_iou(anchor_boxes, boxes_px)                       # [P, M]

    centres = (boxes_px[:, :2] + boxes_px[:, 2:]) / 2.0
    dist = tf.norm(points[:, None, :] - centres[None, :, :], axis=-1)        # [P, M]

    candidate_parts = []
    start = 0
    for size in level_sizes:
        level_dist = tf.transpose(dist[start:start + size])                  # [M, size]
        k = min(top_k, size)
        _, idx = tf.math.top_k(-level_dist, k=k)                              # [M, k]
        one_hot = tf.reduce_max(tf.one_hot(idx, size, dtype=tf.float32), axis=1)
        candidate_parts.append(tf.transpose(one_hot))                         # [size, M]
        start += size
    candidate = tf.concat(candidate_parts, axis=0) > 0                       # [P, M]

    cand_iou = tf.where(candidate, ious, 0.0)
    num_cand = tf.maximum(tf.reduce_sum(tf.cast(candidate, tf.float32), axis=0), 1.0)
    mean = tf.reduce_sum(cand_iou, axis=0) / num_cand
    var = tf.reduce_sum(tf.where(candidate, tf.square(ious - mean), 0.0), axis=0) / num_cand
    threshold = mean + tf.sqrt(var)                                           # [M]

    inside = _points_inside(points, boxes_px)                                # [P, M]
    usable = tf.logical_not(ignore)[None, :]
    is_pos = candidate & (ious >= threshold[None, :]) & inside & usable     # [P, M]

    masked_iou = tf.where(is_pos, ious, -1.0)
    best = tf.argmax(tf.concat([masked_iou, -tf.ones([num_points, 1])], axis=1), axis=1,
                     output_type=tf.int32)
    positive = tf.reduce_any(is_pos, axis=1)
    safe_boxes = tf.concat([boxes_px, tf.zeros([1, 4])], axis=0)
    safe_landmarks = tf.concat([landmarks_px, tf.zeros([1, 10])], axis=0)
    safe_valid = tf.concat([landmarks_valid, [False]], axis=0)
    best = tf.where(positive, best, num_faces)  # sentinel row of zeros for negatives

    in_ignored = tf.reduce_any(inside & tf.logical_not(usable), axis=1)
    cls_weight = tf.where(positive | tf.logical_not(in_ignored), 1.0, 0.0)
    return {
        'positive': positive,
        'cls_weight': cls_weight,
        'box': tf.gather(safe_boxes, best),
        'landmarks': tf.gather(safe_landmarks, best),
        'landmark_weight': tf.cast(tf.gather(safe_valid, best) & positive, tf.float32),
    }


def _points_inside(points, boxes_px):
    """[P, M] whether each point lies strictly inside each box."""
    y = points[:, None, 0]
    x = points[:, None, 1]
    return ((y > boxes_px[None, :, 0]) & (y < boxes_px[None, :, 2]) &
            (x > boxes_px[None, :, 1]) & (x < boxes_px[None, :, 3]))
