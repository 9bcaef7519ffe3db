"""The box convention: conversions, distance encoding, flips and IoU."""

import numpy as np
import tensorflow as tf

from data import boxes as box_lib


class BoxesTest(tf.test.TestCase):

    def test_xywh_round_trip(self):
        xywh = np.array([[10, 20, 30, 40], [0, 0, 100, 50]], np.float32)
        boxes = box_lib.xywh_to_normalized(xywh, 100, 200)
        self.assertAllClose(boxes[0], [0.2, 0.05, 0.6, 0.2])
        self.assertAllClose(box_lib.normalized_to_xywh(boxes, 100, 200), xywh)

    def test_landmark_round_trip(self):
        pts = np.arange(10, dtype=np.float32).reshape(1, 5, 2) * 3
        norm = box_lib.landmarks_xy_to_normalized(pts, 60, 30)
        self.assertAllClose(norm[0, :2], [pts[0, 0, 1] / 60, pts[0, 0, 0] / 30])
        self.assertAllClose(box_lib.normalized_to_landmarks_xy(norm, 60, 30), pts)

    def test_decode_encode_distances(self):
        points = tf.constant([[12.0, 20.0], [40.0, 40.0]])
        strides = tf.constant([8.0, 16.0])
        boxes_px = tf.constant([[4.0, 10.0, 30.0, 36.0], [20.0, 16.0, 70.0, 90.0]])
        deltas = box_lib.encode_distances(points, boxes_px, strides)
        self.assertAllClose(deltas[0], [8 / 8, 10 / 8, 18 / 8, 16 / 8])
        self.assertAllClose(box_lib.decode_distances(points, deltas, strides), boxes_px)

    def test_decode_encode_landmarks(self):
        points = tf.constant([[12.0, 20.0]])
        lm = tf.constant([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
        offsets = box_lib.encode_landmarks(points, lm, tf.constant([8.0]))
        self.assertAllClose(offsets[0, :2], [(1 - 12) / 8, (2 - 20) / 8])
        self.assertAllClose(box_lib.decode_landmarks(points, offsets, tf.constant([8.0])), lm)

    def test_flip_twice_is_identity_and_swaps_eyes(self):
        boxes = tf.constant([[0.1, 0.2, 0.5, 0.4]])
        lm = tf.constant([[0.2, 0.25, 0.2, 0.35, 0.3, 0.3, 0.4, 0.26, 0.4, 0.34]])
        fb, fl = box_lib.flip_left_right(boxes, lm)
        self.assertAllClose(fb, [[0.1, 0.6, 0.5, 0.8]])
        # The left eye (smaller x) of the flipped face is the mirror of the right eye.
        self.assertAllClose(fl[0, :2], [0.2, 1 - 0.35])
        self.assertLess(float(fl[0, 1]), float(fl[0, 3]))
        bb, bl = box_lib.flip_left_right(fb, fl)
        self.assertAllClose(bb, boxes)
        self.assertAllClose(bl, lm)

    def test_iou(self):
        a = np.array([[0, 0, 10, 10]], np.float32)
        b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
        expected = [[1.0, 50 / 150, 0.0]]
        self.assertAllClose(box_lib.iou_matrix_np(a, b), expected)
        self.assertAllClose(box_lib.pairwise_iou(tf.constant(a), tf.constant(b)), expected)
        iou, giou = box_lib.elementwise_iou_and_giou(tf.constant(a[0]), tf.constant(b[2]))
        self.assertAllClose(iou, 0.0)
        self.assertAllClose(giou, 0.0 - (900 - 200) / 900)


if __name__ == '__main__':
    tf.test.main()
