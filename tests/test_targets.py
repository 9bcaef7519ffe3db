"""ATSS target assignment on a hand-checked 64x64 case."""

import numpy as np
import tensorflow as tf

from model import anchors
from model import targets


def _assign(boxes_px, ignore, top_k=4):
    points, strides, sizes = anchors.anchor_points(64, 64)
    m = len(boxes_px)
    return targets.assign(points, strides, sizes, tf.constant(boxes_px, tf.float32, [m, 4]),
                          tf.constant(ignore, tf.bool, [m]), tf.zeros([m, 10]),
                          tf.constant([True] * m, tf.bool, [m]), anchor_scale=4.0, top_k=top_k)


class AnchorsTest(tf.test.TestCase):

    def test_every_point_of_a_64px_image(self):
        points, strides, sizes = anchors.anchor_points(64, 64)
        self.assertEqual(sizes, [64, 16, 4])
        self.assertAllClose(points[:3], [[4, 4], [4, 12], [4, 20]])
        self.assertAllClose(points[64:66], [[8, 8], [8, 24]])
        self.assertAllClose(points[80:], [[16, 16], [16, 48], [48, 16], [48, 48]])
        self.assertAllClose(strides, [8] * 64 + [16] * 16 + [32] * 4)


class TargetsTest(tf.test.TestCase):

    def test_hand_checked_face(self):
        # Face [16, 16, 48, 48]. Top-4 candidates per level and their anchor IoUs:
        #   stride 8  (28|36, 28|36), 32 px anchors: 784 / 1264 = 0.620
        #   stride 16 (24|40, 24|40), 64 px anchors: 1024 / 4096 = 0.250
        #   stride 32 (16|48, 16|48), 128 px anchors: 1024 / 16384 = 0.0625
        # Threshold = mean + std = 0.311 + 0.232 = 0.542: only the 4 stride-8 points pass,
        # and their centres lie inside the face. An ignored face at [50, 50, 62, 62] gets no
        # positives and blanks the classification weight of the points inside it.
        out = _assign([[16, 16, 48, 48], [50, 50, 62, 62]], [False, True])
        positive = np.flatnonzero(out['positive'].numpy())
        self.assertAllEqual(positive, [27, 28, 35, 36])
        self.assertAllClose(out['box'].numpy()[positive], [[16, 16, 48, 48]] * 4)
        self.assertAllEqual(out['landmark_weight'].numpy()[positive], [1] * 4)
        zero_weight = np.flatnonzero(out['cls_weight'].numpy() == 0)
        self.assertAllEqual(zero_weight, [54, 55, 62, 63, 79])
        self.assertEqual(out['box'].numpy()[0].tolist(), [0, 0, 0, 0])

    def test_no_faces_all_background(self):
        out = _assign(np.zeros([0, 4]), [])
        self.assertFalse(np.any(out['positive'].numpy()))
        self.assertAllEqual(out['cls_weight'], np.ones(84))

    def test_point_between_two_faces_goes_to_higher_iou(self):
        out = _assign([[0, 0, 40, 40], [8, 8, 40, 40]], [False, False], top_k=9)
        positive = out['positive'].numpy()
        self.assertTrue(positive.any())
        for box in out['box'].numpy()[positive]:
            self.assertIn(box.tolist(), [[0, 0, 40, 40], [8, 8, 40, 40]])


if __name__ == '__main__':
    tf.test.main()
