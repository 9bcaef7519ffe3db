"""ATSS target assignment on a hand-checked 64x64 case, and on padded batches."""

import numpy as np
import tensorflow as tf

from model import anchors
from model import targets


def _assign_batch(boxes_px, mask, ignore, landmarks_valid=None, size=64, top_k=4):
    points, strides, _ = anchors.anchor_points(size, size)
    boxes_px = tf.constant(boxes_px, tf.float32)
    b, m = boxes_px.shape[:2]
    if landmarks_valid is None:
        landmarks_valid = np.ones([b, m], bool)
    return targets.assign(points, strides, anchors.feature_sizes(size, size), boxes_px,
                          tf.constant(mask, tf.bool, [b, m]), tf.constant(ignore, tf.bool, [b, m]),
                          tf.zeros([b, m, 10]), tf.constant(landmarks_valid, tf.bool, [b, m]),
                          anchor_scale=4.0, top_k=top_k)


def _assign(boxes_px, ignore, top_k=4):
    """One image's targets (the batch axis taken off)."""
    m = len(boxes_px)
    out = _assign_batch(np.reshape(boxes_px, [1, m, 4]), [[True] * m], [ignore], top_k=top_k)
    return {k: v[0] for k, v in out.items()}


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


    def test_padding_and_batch_neighbours_change_nothing(self):
        # Each image alone, then all three in one batch padded to 6 faces: same targets.
        rng = np.random.default_rng(3)
        images = []
        for count in (0, 2, 5):
            centres = rng.uniform(0, 128, [count, 2])
            sides = rng.uniform(4, 80, [count, 1])
            images.append(np.concatenate([centres - sides / 2, centres + sides / 2], 1))
        ignore = [[False, True], [False, False, True, False, False]]
        alone = [_assign_batch(np.reshape(faces, [1, len(faces), 4]), [[True] * len(faces)],
                               [flags] if len(faces) else [[]], size=128, top_k=9)
                 for faces, flags in zip(images, [[]] + ignore)]
        padded = np.zeros([3, 6, 4], np.float32)
        mask = np.zeros([3, 6], bool)
        padded_ignore = np.zeros([3, 6], bool)
        for i, faces in enumerate(images):
            padded[i, :len(faces)] = faces
            mask[i, :len(faces)] = True
        padded_ignore[1, :2], padded_ignore[2, :5] = ignore
        batch = _assign_batch(padded, mask, padded_ignore, size=128, top_k=9)
        for i, single in enumerate(alone):
            for key, value in single.items():
                self.assertAllEqual(batch[key][i], value[0], msg=f'image {i} {key}')
        self.assertGreater(int(np.sum(batch['positive'][2])), 0)

    def test_landmark_weight_follows_the_assigned_face(self):
        out = _assign_batch([[[16, 16, 48, 48]], [[16, 16, 48, 48]]], [[True], [True]],
                            [[False], [False]], landmarks_valid=[[True], [False]])
        positive = out['positive'].numpy()
        self.assertAllEqual(out['landmark_weight'].numpy()[0][positive[0]], [1] * 4)
        self.assertAllEqual(out['landmark_weight'].numpy()[1], np.zeros(84))

    def test_inside_tf_function_with_unknown_face_count(self):
        points, strides, _ = anchors.anchor_points(64, 64)
        fn = tf.function(lambda *a: targets.assign(points, strides, anchors.feature_sizes(64, 64), *a),
                         input_signature=[tf.TensorSpec([None, None, 4]),
                                          tf.TensorSpec([None, None], tf.bool),
                                          tf.TensorSpec([None, None], tf.bool),
                                          tf.TensorSpec([None, None, 10]),
                                          tf.TensorSpec([None, None], tf.bool)])
        eager = _assign([[16, 16, 48, 48], [50, 50, 62, 62]], [False, True], top_k=9)
        graph = fn(tf.constant([[[16, 16, 48, 48], [50, 50, 62, 62]]], tf.float32),
                   tf.ones([1, 2], tf.bool), tf.constant([[False, True]]), tf.zeros([1, 2, 10]),
                   tf.ones([1, 2], tf.bool))
        for key, value in eager.items():
            self.assertAllEqual(graph[key][0], value)


if __name__ == '__main__':
    tf.test.main()
