"""The box convention's single owner: conversions, distance encoding, flips and IoU.

Inside the project: ``boxes`` are [..., 4] float32 ``[ymin, xmin, ymax, xmax]`` normalized
to the image (see data/features.py). The model works in pixels of its input tensor
(``boxes_px`` in yxyx); the edges use ``boxes_xywh``: ``[x, y, width, height]`` in pixels
of the original image. Every conversion between those lives here.
"""

import numpy as np
import tensorflow as tf

# Horizontal flip: the subject's left eye becomes the right eye, etc. Index i of the flipped
# face takes point LANDMARK_FLIP_ORDER[i] of the original.
LANDMARK_FLIP_ORDER = (1, 0, 2, 4, 3)


# ---- edge conversions (numpy; used by preprocess, detect, evaluate) ----

def xywh_to_normalized(boxes_xywh, height, width):
    """[N, 4] pixel [x, y, w, h] -> [N, 4] normalized yxyx (float32)."""
    b = np.asarray(boxes_xywh, np.float32).reshape(-1, 4)
    return np.stack([b[:, 1] / height, b[:, 0] / width,
                     (b[:, 1] + b[:, 3]) / height, (b[:, 0] + b[:, 2]) / width], axis=-1)


def normalized_to_xywh(boxes, height, width):
    """[N, 4] normalized yxyx -> [N, 4] pixel [x, y, w, h] (float32)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([b[:, 1] * width, b[:, 0] * height,
                     (b[:, 3] - b[:, 1]) * width, (b[:, 2] - b[:, 0]) * height], axis=-1)


def xywh_to_xyxy(boxes_xywh):
    """[N, 4] pixel [x, y, w, h] -> [N, 4] pixel [xmin, ymin, xmax, ymax] (float64)."""
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=-1)


def landmarks_xy_to_normalized(points_xy, height, width):
    """[N, 5, 2] pixel (x, y) -> [N, 10] normalized (y, x) pairs."""
    p = np.asarray(points_xy, np.float32).reshape(-1, 5, 2)
    return np.stack([p[..., 1] / height, p[..., 0] / width], axis=-1).reshape(-1, 10)


def normalized_to_landmarks_xy(landmarks, height, width):
    """[N, 10] normalized (y, x) pairs -> [N, 5, 2] pixel (x, y)."""
    p = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    return np.stack([p[..., 1] * width, p[..., 0] * height], axis=-1)


def iou_matrix_np(a, b):
    """IoU between [N, 4] and [M, 4] boxes of the same format (yxyx or xyxy) -> [N, M]."""
    a = np.asarray(a, np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, np.float64).reshape(1, -1, 4)
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[..., 2:] - a[..., :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


# ---- in-graph helpers (TF) ----

def flip_left_right(boxes, landmarks):
    """Mirrors normalized boxes [..., 4] and landmarks [..., 10] horizontally."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    boxes = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
    shape = tf.shape(landmarks)
    points = tf.reshape(landmarks, tf.concat([shape[:-1], [5, 2]], 0))
    points = tf.stack([points[..., 0], 1.0 - points[..., 1]], axis=-1)
    points = tf.gather(points, LANDMARK_FLIP_ORDER, axis=-2)
    return boxes, tf.reshape(points, shape)


def to_pixels(boxes, height, width):
    """Normalized yxyx -> yxyx in pixels of an image of the given size."""
    scale = tf.cast(tf.stack([height, width, height, width]), boxes.dtype)
    return boxes * scale


def to_normalized(boxes_px, height, width):
    """yxyx in pixels -> normalized yxyx."""
    scale = tf.cast(tf.stack([height, width, height, width]), boxes_px.dtype)
    return boxes_px / scale


def encode_distances(points, boxes_px, strides):
    """Encodes boxes as distances from anchor points, in units of the point's stride.

    Args:
      points: [..., 2] (y, x) pixel centres of anchor points.
      boxes_px: [..., 4] yxyx pixel boxes (broadcastable against points).
      strides: [...] stride of each point in pixels.

    Returns:
      [..., 4] (top, left, bottom, right) distances divided by the stride.
    """
    s = tf.expand_dims(strides, -1)
    top = points[..., 0] - boxes_px[..., 0]
    left = points[..., 1] - boxes_px[..., 1]
    bottom = boxes_px[..., 2] - points[..., 0]
    right = boxes_px[..., 3] - points[..., 1]
    return tf.stack([top, left, bottom, right], axis=-1) / s


def decode_distances(points, distances, strides):
    """Inverse of encode_distances: [..., 4] distances/stride -> [..., 4] yxyx pixel boxes."""
    d = distances * tf.expand_dims(strides, -1)
    return tf.stack([points[..., 0] - d[..., 0], points[..., 1] - d[..., 1],
                     points[..., 0] + d[..., 2], points[..., 1] + d[..., 3]], axis=-1)


def encode_landmarks(points, landmarks_px, strides):
    """[..., 10] pixel (y, x) landmarks -> offsets from the anchor point, in strides."""
    centre = tf.tile(points, [1] * (len(points.shape) - 1) + [5])
    return (landmarks_px - centre) / tf.expand_dims(strides, -1)


def decode_landmarks(points, offsets, strides):
    """Inverse of encode_landmarks."""
    centre = tf.tile(points, [1] * (len(points.shape) - 1) + [5])
    return offsets * tf.expand_dims(strides, -1) + centre


def pairwise_iou(a, b):
    """IoU between [N, 4] and [M, 4] yxyx boxes -> [N, M]."""
    a = a[:, None, :]
    b = b[None, :, :]
    lo = tf.maximum(a[..., :2], b[..., :2])
    hi = tf.minimum(a[..., 2:], b[..., 2:])
    inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), axis=-1)
    area_a = tf.reduce_prod(tf.maximum(a[..., 2:] - a[..., :2], 0.0), axis=-1)
    area_b = tf.reduce_prod(tf.maximum(b[..., 2:] - b[..., :2], 0.0), axis=-1)
    return inter / tf.maximum(area_a + area_b - inter, 1e-9)


def elementwise_iou_and_giou(a, b):
    """IoU and GIoU of matching yxyx boxes [..., 4] -> ([...], [...])."""
    lo = tf.maximum(a[..., :2], b[..., :2])
    hi = tf.minimum(a[..., 2:], b[..., 2:])
    inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), axis=-1)
    area_a = tf.reduce_prod(tf.maximum(a[..., 2:] - a[..., :2], 0.0), axis=-1)
    area_b = tf.reduce_prod(tf.maximum(b[..., 2:] - b[..., :2], 0.0), axis=-1)
    union = tf.maximum(area_a + area_b - inter, 1e-9)
    iou = inter / union
    enclose = tf.reduce_prod(
        tf.maximum(tf.maximum(a[..., 2:], b[..., 2:]) - tf.minimum(a[..., :2], b[..., :2]), 0.0),
        axis=-1)
    giou = iou - (enclose - union) / tf.maximum(enclose, 1e-9)
    return iou, giou
