"""Raw head outputs -> scores, boxes and landmarks, and NMS. The single decoding path used by
the loss, validation, export and detect.
"""

import tensorflow as tf

from data import boxes as box_lib
from model import anchors as anchor_lib
from model.detector import BOX, CLS, LMK, NUM_OUTPUTS, QUALITY


def decode(raw, points, point_strides):
    """Decodes raw outputs at every anchor point.

    Args:
      raw: [B, P, 15 or 16] float32 head outputs.
      points: [P, 2] (y, x) pixel anchor points; point_strides: [P] (or [B, P, 2] and
        [B, P]: each image's own points).

    Returns:
      logits [B, P], boxes_px [B, P, 4] yxyx pixels of the network input,
      landmarks_px [B, P, 10] (y, x) pixels.
    """
    distances = tf.nn.softplus(raw[..., BOX])
    boxes_px = box_lib.decode_distances(points, distances, point_strides)
    landmarks_px = box_lib.decode_landmarks(points, raw[..., LMK], point_strides)
    return raw[..., CLS][..., 0], boxes_px, landmarks_px


def has_quality(raw):
    """Whether raw outputs carry the IoU logit (DetectorConfig.quality_head)."""
    return raw.shape[-1] > NUM_OUTPUTS


def scores(raw):
    """Detection scores [B, P] of raw outputs: the face probability, or with a quality head
    the face probability times the IoU probability. The product keeps the scale of the
    quality focal score (which learns face-ness times IoU in one logit), so thresholds mean
    the same for both; their geometric mean, which ranks the same, would lift background
    points over the in-graph NMS's score floor and slow it down."""
    face = tf.sigmoid(raw[..., CLS][..., 0])
    if has_quality(raw):
        return face * tf.sigmoid(raw[..., QUALITY][..., 0])
    return face


# The best-scoring points that enter NMS (model/runtime.py's NumPy twin of detect() too).
PRE_NMS_TOP_K = 2000


def detect(raw, input_height, input_width, strides=anchor_lib.DEFAULT_STRIDES,
           max_detections=200, score_threshold=0.3, iou_threshold=0.4,
           pre_nms_top_k=PRE_NMS_TOP_K):
    """Raw outputs -> final detections per image, padded to max_detections.

    Args:
      raw: [B, P, 15 or 16] head outputs for an input of input_height x input_width pixels.
      max_detections, score_threshold, iou_threshold: NMS settings.
      pre_nms_top_k: only the best-scoring points enter NMS (bounds its cost).

    Returns:
      dict with ``boxes`` [B, K, 4] normalized yxyx (of the network input), ``scores``
      [B, K], ``landmarks`` [B, K, 10] normalized (y, x), ``num_detections`` [B] int32;
      rows past num_detections are zero.
    """
    points, point_strides, _ = anchor_lib.anchor_points(input_height, input_width, strides)
    point_scores = scores(raw)
    # Only the best points are decoded (a 640x480 input has 6,300 points, 25,500 with the
    # stride-4 level).
    k = tf.minimum(pre_nms_top_k, tf.shape(point_scores)[1])
    top_scores, top_idx = tf.math.top_k(point_scores, k=k)
    _, boxes_px, landmarks_px = decode(tf.gather(raw, top_idx, batch_dims=1),
                                       tf.gather(points, top_idx),
                                       tf.gather(point_strides, top_idx))
    top_boxes = tf.clip_by_value(box_lib.to_normalized(boxes_px, input_height, input_width),
                                 0.0, 1.0)
    hw = tf.cast(tf.stack([input_height, input_width] * 5), tf.float32)
    top_landmarks = landmarks_px / hw

    def nms_one(args):
        b, s, lm = args
        # NonMaxSuppressionV4 is one C++ kernel (and a TFLite builtin); TF2's
        # non_max_suppression_padded is a tiled TF loop made for TPUs, 4x slower on CPUs.
        idx, n = tf.raw_ops.NonMaxSuppressionV4(
            boxes=b, scores=s, max_output_size=max_detections, iou_threshold=iou_threshold,
            score_threshold=score_threshold, pad_to_max_output_size=True)
        valid = tf.range(max_detections) < n
        mask = tf.cast(valid, tf.float32)
        return (tf.gather(b, idx) * mask[:, None], tf.gather(s, idx) * mask,
                tf.gather(lm, idx) * mask[:, None], n)

    if raw.shape[0] == 1:
        # A static batch of one (the TFLite export) runs NMS directly: TFLite's WHILE, which
        # map_fn becomes, fails on this graph.
        outs = nms_one((top_boxes[0], top_scores[0], top_landmarks[0]))
        out_boxes, out_scores, out_landmarks, count = [t[None] for t in outs]
    else:
        out_boxes, out_scores, out_landmarks, count = tf.map_fn(
            nms_one, (top_boxes, top_scores, top_landmarks),
            fn_output_signature=(tf.float32, tf.float32, tf.float32, tf.int32))
    return {'boxes': out_boxes, 'scores': out_scores, 'landmarks': out_landmarks,
            'num_detections': count}
