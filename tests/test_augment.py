"""Augmentations keep boxes, landmarks and pixels consistent, eagerly and inside Dataset.map."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from data import augment
from data import features
from tests import fixtures

BOXES = [[0.1, 0.1, 0.45, 0.4], [0.5, 0.55, 0.9, 0.85], [0.0, 0.85, 0.3, 1.0]]


def _example():
    record = fixtures.make_face_record(BOXES, height=96, width=128)
    return features.parse_example(tf.constant(features.to_example(record).SerializeToString()))


def _geometry(example):
    example = augment.random_square_crop(example, 64, (0.5, 1.5))
    return augment.random_flip(example)


def _run(fn, eager, n=12):
    if eager:
        tf.random.set_seed(1)
        return [fn(_example()) for _ in range(n)]
    ds = tf.data.Dataset.from_tensors(0).repeat(n).map(lambda _: fn(_example()))
    return list(ds)


class AugmentTest(tf.test.TestCase, parameterized.TestCase):

    def _check_consistent(self, out):
        image = out['image'].numpy()
        boxes, lm = out['boxes'].numpy(), out['landmarks'].numpy()
        self.assertEqual(image.shape, (64, 64, 3))
        self.assertTrue(np.all((boxes >= 0) & (boxes <= 1)))
        self.assertTrue(np.all(boxes[:, 2:] >= boxes[:, :2]))
        for box, points, valid, ignore in zip(boxes, lm, out['landmarks_valid'].numpy(),
                                              out['ignore'].numpy()):
            if ignore:
                continue
            cy, cx = (box[:2] + box[2:]) / 2 * 64
            # The fixture paints each face as a skin-coloured ellipse: its centre stays skin.
            self.assertGreater(image[int(cy), int(cx), 0], 150, msg=str(box))
            if valid:
                ys, xs = points[0::2], points[1::2]
                self.assertTrue(np.all((ys >= box[0] - 1e-4) & (ys <= box[2] + 1e-4)))
                self.assertTrue(np.all((xs >= box[1] - 1e-4) & (xs <= box[3] + 1e-4)))
                self.assertLess(xs[0], xs[1])  # left eye stays left of the right eye

    @parameterized.named_parameters(('eager', True), ('dataset_map', False))
    def test_crop_and_flip_keep_faces_on_their_pixels(self, eager):
        outs = _run(_geometry, eager)
        self.assertTrue(any(len(o['boxes']) for o in outs))
        for out in outs:
            self._check_consistent(out)

    @parameterized.named_parameters(('eager', True), ('dataset_map', False))
    def test_letterbox_is_exact(self, eager):
        out = _run(lambda e: augment.letterbox(e, 64), eager, n=1)[0]
        # 96x128 -> 48x64 in the top-left of a 64x64 square; boxes shrink by 0.75 in y.
        expected = np.array(BOXES) * [0.75, 1.0, 0.75, 1.0]
        self.assertAllClose(out['boxes'], expected, atol=1e-5)
        self.assertAllClose(out['image'][60, 30], [augment.PAD_VALUE] * 3)
        self._check_consistent(out)

    def test_zoom_out_pads_and_shrinks_faces(self):
        example = _example()
        out = augment._crop(example, -96.0, -128.0, 288.0, 288.0, 72, min_face_px=0.0)
        self.assertAllClose(out['image'][0, 0], [augment.PAD_VALUE] * 3)
        self.assertAllClose(out['boxes'][0],
                            (np.array(BOXES[0]) * [96, 128, 96, 128] + [96, 128, 96, 128]) / 288,
                            atol=1e-5)

    def test_cut_faces_follow_the_centre_rule(self):
        example = _example()
        # The left half (x < 0.5): face 0 is inside; faces 1 and 2 (x > 0.55) vanish.
        out = augment._crop(example, 0.0, 0.0, 96.0, 64.0, 64, min_face_px=0.0)
        self.assertEqual(len(out['boxes']), 1)
        self.assertFalse(out['ignore'][0])
        # x from 0.3 to 0.8: face 0's centre (0.25) is outside but its right part shows, so it
        # is kept as ignore; face 1's centre (0.7) is inside, so it stays a face.
        out = augment._crop(example, 0.0, 38.4, 96.0, 64.0, 64, min_face_px=0.0)
        self.assertAllEqual(out['ignore'], [True, False])

    def test_tiny_faces_become_ignore(self):
        out = augment._crop(_example(), -960.0, -1280.0, 2000.0, 2000.0, 64, min_face_px=4.0)
        self.assertTrue(np.all(out['ignore'].numpy()))

    @parameterized.named_parameters(('eager', True), ('dataset_map', False))
    def test_photometric_keeps_range(self, eager):
        def fn(e):
            return augment.photometric(augment.letterbox(e, 64))
        for out in _run(fn, eager, n=4):
            image = out['image'].numpy()
            self.assertEqual(image.dtype, np.float32)
            self.assertGreaterEqual(image.min(), 0.0)
            self.assertLessEqual(image.max(), 255.0)


if __name__ == '__main__':
    tf.test.main()
