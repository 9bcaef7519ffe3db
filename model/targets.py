"""Target assignment: which anchor points learn which face (ATSS, Zhang et al. 2020).

For each face: on every level take the ``top_k`` points whose centres are closest to the
face centre; their anchor boxes (squares of side ``anchor_scale * stride``) give IoUs with
the face; the face's threshold is mean + std of those IoUs. A candidate point becomes
positive when its IoU reaches the threshold and its centre lies inside the face. A point
claimed by several faces goes to the one with the highest IoU (the lowest face index on a
tie). The adaptive threshold is what lets tiny and huge faces both get positives without
hand-tuned scale ranges.

Ignored faces get no positives; points whose centre lies inside an ignored face (and that
are not positive for another face) get zero classification weight, so they are learned
neither as face nor as background.

Assignment runs on whole batches inside the train step (as SCRFD and YOLO assign inside the
loss), so it runs on the accelerator and the input pipeline only crops and decodes. Only
the candidates (top_k per level and face) are scored, so the cost grows with faces times
candidates, not faces times all points.
"""

import tensorflow as tf

from data import boxes as box_lib
from model import anchors as anchor_lib

DEFAULT_TOP_K = 9


def assign(points, point_strides, level_shapes, boxes_px, face_mask, ignore, landmarks_px,
           landmarks_valid, anchor_scale=4.0, top_k=DEFAULT_TOP_K):
    """Assigns the faces of a batch of images to anchor points.

    Args:
      points: [P, 2] (y, x) pixels, level by level and row-major inside a level (as
        model.anchors.anchor_points orders them); point_strides: [P]; level_shapes: the
        (rows, columns) of each level (model.anchors.feature_sizes).
      boxes_px: [B, M, 4] yxyx pixel faces, padded (M may be 0); face_mask: [B, M] bool,
        False on padding; ignore: [B, M] bool.
      landmarks_px: [B, M, 10] (y, x) pixels; landmarks_valid: [B, M] bool.

    Returns:
      dict of per-point targets: ``positive`` [B, P] bool, ``cls_weight`` [B, P] float32,
      ``box`` [B, P, 4] yxyx pixels (zeros on negatives), ``landmarks`` [B, P, 10] pixels,
      ``landmark_weight`` [B, P] float32.
    """
    batch, num_faces = tf.shape(boxes_px)[0], tf.shape(boxes_px)[1]
    num_points = tf.shape(points)[0]
    candidates = _nearest_points(points, level_shapes, boxes_px, top_k)      # [B, M, K]
    cand_points = tf.gather(points, candidates)                              # [B, M, K, 2]
    half = tf.gather(point_strides, candidates)[..., None] * (anchor_scale / 2.0)
    anchor_boxes = tf.concat([cand_points - half, cand_points + half], axis=-1)
    faces = boxes_px[:, :, None, :]
    iou, _ = box_lib.elementwise_iou_and_giou(anchor_boxes, faces)           # [B, M, K]
    threshold = tf.reduce_mean(iou, -1) + tf.math.reduce_std(iou, -1)        # [B, M]
    inside = _inside(cand_points, faces)
    usable = face_mask & tf.logical_not(ignore)
    is_pos = (iou >= threshold[..., None]) & inside & usable[..., None]

    # Each point keeps its best face: segments are the batch's points, b * P + point.
    segment = tf.reshape(candidates + (tf.range(batch) * num_points)[:, None, None], [-1])
    score = tf.reshape(tf.where(is_pos, iou, -1.0), [-1])
    total = batch * num_points
    best_iou = tf.math.unsorted_segment_max(score, segment, total)
    winner = (score >= 0.0) & (score >= tf.gather(best_iou, segment))
    face_index = tf.broadcast_to(tf.range(num_faces)[None, :, None], tf.shape(candidates))
    chosen = tf.math.unsorted_segment_min(
        tf.where(winner, tf.reshape(face_index, [-1]), num_faces), segment, total)
    positive = tf.reshape(best_iou >= 0.0, [batch, num_points])
    chosen = tf.where(positive, tf.reshape(chosen, [batch, num_points]), num_faces)

    # Row num_faces of each image is a sentinel of zeros for the negatives.
    def gather(values):
        padded = tf.pad(values, [[0, 0], [0, 1], [0, 0]])
        return tf.gather(padded, chosen, batch_dims=1)

    in_ignored = _inside_any(points, boxes_px, face_mask & ignore)
    cls_weight = tf.where(positive | tf.logical_not(in_ignored), 1.0, 0.0)
    return {
        'positive': positive,
        'cls_weight': cls_weight,
        'box': gather(boxes_px),
        'landmarks': gather(landmarks_px),
        'landmark_weight': tf.where(positive, gather(tf.cast(landmarks_valid, tf.float32)[..., None])[..., 0], 0.0),
    }


def for_batch(batch, image_size, strides, anchor_scale=4.0):
    """Targets of a batch from the input pipeline (data/pipeline.build_dataset).

    Args:
      batch: dict with ``boxes`` [B, M, 4] normalized yxyx, ``face_mask``, ``ignore``,
        ``landmarks_valid`` [B, M] and ``landmarks`` [B, M, 10] normalized (y, x).
      image_size: side of the square images in pixels; strides: the network's strides.
    """
    points, point_strides, _ = anchor_lib.anchor_points(image_size, image_size, strides)
    shapes = anchor_lib.feature_sizes(image_size, image_size, strides)
    size = float(image_size)
    return assign(points, point_strides, shapes, batch['boxes'] * size, batch['face_mask'],
                  batch['ignore'], batch['landmarks'] * size, batch['landmarks_valid'],
                  anchor_scale=anchor_scale)


def _nearest_points(points, level_shapes, boxes_px, top_k):
    """[B, M, K] indices of the top_k points of each level nearest each face centre.

    The top_k nearest points of a grid lie among its top_k nearest rows crossed with its
    top_k nearest columns (ties going to the lower index, as tf.math.top_k breaks them), so
    only that window of top_k**2 points is ranked instead of the whole level.
    """
    centres = (boxes_px[..., :2] + boxes_px[..., 2:]) / 2.0                  # [B, M, 2]
    batch, num_faces = tf.shape(boxes_px)[0], tf.shape(boxes_px)[1]
    parts, start = [], 0
    for height, width in level_shapes:
        level = points[start:start + height * width]
        ys, xs = level[::width, 0], level[:width, 1]
        rows, dy2 = _nearest(ys, centres[..., 0], min(top_k, height))         # [B, M, kr]
        cols, dx2 = _nearest(xs, centres[..., 1], min(top_k, width))          # [B, M, kc]
        window = tf.reshape(rows[..., :, None] * width + cols[..., None, :], [batch, num_faces, -1])
        dist2 = tf.reshape(dy2[..., :, None] + dx2[..., None, :], [batch, num_faces, -1])
        _, idx = tf.math.top_k(-dist2, k=min(top_k, height * width))
        parts.append(tf.gather(window, idx, batch_dims=2) + start)
        start += height * width
    return tf.concat(parts, axis=-1)


def _nearest(coords, values, k):
    """The k coords [n] nearest each value [B, M] (indices ascending) and their squared
    distances."""
    _, idx = tf.math.top_k(-tf.square(coords - values[..., None]), k=k)
    idx = tf.sort(idx, axis=-1)
    return idx, tf.square(tf.gather(coords, idx) - values[..., None])


def _inside(points, boxes_px):
    """Whether points [..., 2] lie strictly inside the boxes [..., 4] they broadcast with."""
    y, x = points[..., 0], points[..., 1]
    return ((y > boxes_px[..., 0]) & (y < boxes_px[..., 2]) &
            (x > boxes_px[..., 1]) & (x < boxes_px[..., 3]))


def _inside_any(points, boxes_px, mask):
    """[B, P]: whether each point lies inside any box [B, M, 4] whose mask [B, M] is True."""
    # Masked-out boxes become empty, so no point is inside them.
    boxes = tf.where(mask[..., None], boxes_px, 0.0)
    return tf.reduce_any(_inside(points[None, :, None, :], boxes[:, None, :, :]), axis=-1)
