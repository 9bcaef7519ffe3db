"""Detection loss: quality focal loss + GIoU box loss + smooth-L1 landmark loss.

The classification target of a positive point is the IoU between its predicted box and its
face (stop-gradient), as in GFL's quality focal loss: the score then ranks detections by
how well they are localised, which is what average precision rewards. Negatives target 0.

With a quality head (DetectorConfig.quality_head, raw outputs with a 16th column) the two
jobs are split, as in YuNet: the face logit's focal target is 1 on every positive and 0 on
background, and the IoU logit learns the IoU by binary cross-entropy on positives only
(the ``quality`` term); postprocess.scores combines them.

Everything is normalized by the number of positive points (at least 1), so an image
without faces contributes only background terms and never divides by zero.
"""

import tensorflow as tf

from data import boxes as box_lib
from model import postprocess
from model.detector import QUALITY

BOX_WEIGHT = 2.0
LANDMARK_WEIGHT = 0.1
QFL_BETA = 2.0
QUALITY_WEIGHT = 1.0


def detection_loss(raw, targets, points, point_strides):
    """Computes the loss of a batch.

    Args:
      raw: [B, P, 15 or 16] float32 head outputs.
      targets: dict of [B, P, ...] tensors from model.targets.assign (batched).
      points: [P, 2], point_strides: [P].

    Returns:
      dict with ``loss`` (scalar, the sum of the weighted terms), ``cls``, ``box``,
      ``landmarks``, ``quality`` (only with a quality head) and ``num_positive``.
    """
    raw = tf.cast(raw, tf.float32)
    logits, boxes_px, landmarks_px = postprocess.decode(raw, points, point_strides)
    positive = tf.cast(targets['positive'], tf.float32)
    num_pos = tf.maximum(tf.reduce_sum(positive), 1.0)

    iou, giou = box_lib.elementwise_iou_and_giou(boxes_px, targets['box'])
    quality = tf.stop_gradient(tf.maximum(iou, 0.0)) * positive
    with_quality = postprocess.has_quality(raw)
    cls_target = positive if with_quality else quality
    prob = tf.sigmoid(logits)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=cls_target, logits=logits)
    qfl = bce * tf.pow(tf.abs(cls_target - prob), QFL_BETA) * targets['cls_weight']
    cls_loss = tf.reduce_sum(qfl) / num_pos

    box_loss = tf.reduce_sum((1.0 - giou) * positive) / num_pos

    # Landmarks are compared in stride units so every level weighs the same.
    scale = point_strides[None, :, None]
    diff = (landmarks_px - targets['landmarks']) / scale
    lm_weight = targets['landmark_weight']
    smooth_l1 = tf.where(tf.abs(diff) < 1.0, 0.5 * tf.square(diff), tf.abs(diff) - 0.5)
    lm_loss = tf.reduce_sum(tf.reduce_sum(smooth_l1, -1) * lm_weight) / tf.maximum(
        tf.reduce_sum(lm_weight), 1.0)

    total = cls_loss + BOX_WEIGHT * box_loss + LANDMARK_WEIGHT * lm_loss
    terms = {'cls': cls_loss, 'box': box_loss, 'landmarks': lm_loss}
    if with_quality:
        quality_logits = raw[..., QUALITY][..., 0]
        quality_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=quality,
                                                              logits=quality_logits)
        terms['quality'] = tf.reduce_sum(quality_bce * positive) / num_pos
        total += QUALITY_WEIGHT * terms['quality']
    return {'loss': total, **terms, 'num_positive': tf.reduce_sum(positive)}


def pool_batch_losses(batch_terms):
    """Losses per positive point over several batches (validation), from detection_loss's
    per-batch terms.

    Each batch's terms are normalized by its own positives (at least 1), so a plain mean of
    batches lets a batch of face-free photos, divided by 1, outweigh everything else. Each
    batch is weighted by its positives instead (the landmark term too, an approximation:
    it is normalized by landmark-labelled positives).
    """
    weights = [max(t['num_positive'], 1.0) for t in batch_terms]
    total = max(sum(weights), 1.0)
    keys = [k for k in (batch_terms[0] if batch_terms else {}) if k != 'num_positive']
    return {k: sum(w * t[k] for w, t in zip(weights, batch_terms)) / total for k in keys}
