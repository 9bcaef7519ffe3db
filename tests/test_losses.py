"""The loss: finite on images without faces, lower for a good prediction than a bad one."""

import numpy as np
import tensorflow as tf

from data import boxes as box_lib
from model import anchors
from model import losses
from model import postprocess
from model import targets as target_lib
from tests.test_postprocess import _raw_with_faces


def _targets(faces):
    points, strides, _ = anchors.anchor_points(64, 64)
    m = len(faces)
    t = target_lib.assign(points, strides, anchors.feature_sizes(64, 64),
                          tf.constant(faces, tf.float32, [1, m, 4]), tf.ones([1, m], tf.bool),
                          tf.zeros([1, m], tf.bool), tf.zeros([1, m, 10]), tf.zeros([1, m], tf.bool))
    return t, points, strides


class LossesTest(tf.test.TestCase):

    def test_all_background_is_finite(self):
        t, points, strides = _targets(np.zeros([0, 4]))
        raw = tf.random.normal([1, points.shape[0], 15])
        out = losses.detection_loss(raw, t, points, strides)
        for k, v in out.items():
            self.assertTrue(np.isfinite(v.numpy()), k)
        self.assertEqual(float(out['box']), 0.0)
        self.assertEqual(float(out['num_positive']), 0.0)

    def test_good_prediction_beats_bad_one(self):
        face = [[16.0, 16.0, 48.0, 48.0]]
        t, points, strides = _targets(face)
        good = _raw_with_faces(face).numpy()
        positive = t['positive'][0].numpy()
        # Every positive point predicts the face exactly, with a high score.
        d = box_lib.encode_distances(points, tf.constant(face[0]), strides).numpy()
        good[0, positive, 1:5] = np.log(np.expm1(np.maximum(d[positive], 1e-3)))
        good[0, positive, 0] = 4.0
        bad = np.zeros_like(good)
        good_loss = losses.detection_loss(tf.constant(good), t, points, strides)
        bad_loss = losses.detection_loss(tf.constant(bad), t, points, strides)
        self.assertLess(float(good_loss['box']), 1e-3)
        self.assertLess(float(good_loss['loss']), float(bad_loss['loss']))

    def test_quality_head_splits_face_or_not_from_the_iou(self):
        face = [[16.0, 16.0, 48.0, 48.0]]
        t, points, strides = _targets(face)
        positive = t['positive'][0].numpy()
        # Every positive point predicts a box shifted off the face (IoU about 0.6) with a
        # confident face logit.
        raw = _raw_with_faces(face).numpy()
        d = box_lib.encode_distances(points, tf.constant([20.0, 20.0, 52.0, 52.0]),
                                     strides).numpy()
        raw[0, positive, 1:5] = np.log(np.expm1(np.maximum(d[positive], 1e-3)))
        raw[0, positive, 0] = 6.0
        iou = box_lib.elementwise_iou_and_giou(
            postprocess.decode(tf.constant(raw), points, strides)[1],
            t['box'])[0][0].numpy()[positive]
        self.assertTrue(np.all((iou > 0.4) & (iou < 0.8)), iou)

        def loss(quality_logit, background=-8.0):
            with_quality = np.concatenate([raw, np.full(raw.shape[:2] + (1,), background,
                                                        np.float32)], -1)
            with_quality[0, positive, 15] = quality_logit
            return losses.detection_loss(tf.constant(with_quality), t, points, strides)

        # Without the quality column the confident logit is penalized (its target is the
        # IoU); with it, the face logit's target is 1, and the IoU logit is best at the IoU.
        plain = losses.detection_loss(tf.constant(raw), t, points, strides)
        self.assertNotIn('quality', plain)
        at_iou = loss(np.log(iou / (1 - iou)))
        self.assertLess(float(at_iou['cls']), 0.1 * float(plain['cls']))
        for off in (-1.0, 1.0):
            self.assertLess(float(at_iou['quality']),
                            float(loss(np.log(iou / (1 - iou)) + off)['quality']))
        self.assertAllClose(at_iou['box'], plain['box'])
        # Background points add nothing to the quality term.
        background = loss(np.log(iou / (1 - iou)), background=8.0)
        self.assertAllClose(background['quality'], at_iou['quality'])
        self.assertAllClose(background['cls'], at_iou['cls'])

    def test_validation_losses_pool_over_positives(self):
        # A face-free batch is normalized by 1 positive: it must not dominate the average.
        pooled = losses.pool_batch_losses([{'cls': 0.2, 'box': 0.4, 'num_positive': 100.0},
                                           {'cls': 5.0, 'box': 0.0, 'num_positive': 0.0}])
        self.assertAlmostEqual(pooled['cls'], (0.2 * 100 + 5.0) / 101)
        self.assertAlmostEqual(pooled['box'], 0.4 * 100 / 101)
        self.assertNotIn('num_positive', pooled)
        self.assertEqual(losses.pool_batch_losses([]), {})


if __name__ == '__main__':
    tf.test.main()
