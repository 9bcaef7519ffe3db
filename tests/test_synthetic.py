"""Tests for preprocess/synthetic.py: determinism, label geometry, face-free images."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image, ImageDraw

from preprocess import items as items_lib
from preprocess import synthetic


def _items(num=24, seed=3, split='train', **kwargs):
    kwargs = {'min_side': 96, 'max_side': 128, **kwargs}
    return list(synthetic.generate_items(num, seed, split, **kwargs))


class SyntheticTest(tf.test.TestCase, parameterized.TestCase):

    def test_same_seed_same_images(self):
        a, b = _items(6), _items(6)
        for x, y in zip(a, b):
            self.assertEqual(x.source_id, y.source_id)
            np.testing.assert_array_equal(x.pixels, y.pixels)
            np.testing.assert_array_equal(x.boxes_xywh, y.boxes_xywh)
            np.testing.assert_array_equal(x.landmarks_xy, y.landmarks_xy)

    @parameterized.parameters(('seed', 4, 'train'), ('split', 3, 'val'))
    def test_other_seed_or_split_other_images(self, _, seed, split):
        a, b = _items(4), _items(4, seed=seed, split=split)
        for x, y in zip(a, b):
            self.assertNotEqual(x.source_id, y.source_id)
            self.assertFalse(x.pixels.shape == y.pixels.shape and np.array_equal(x.pixels, y.pixels))
        self.assertTrue(all(i.split == split for i in b))

    def test_one_image_regenerates_alone(self):
        """Index k is the same image whether generated in a run of 6 or as SyntheticSpec alone."""
        spec = synthetic.SyntheticSpec(3, 'train', 5, 96, 128)
        np.testing.assert_array_equal(spec.to_raw_item().pixels, _items(6)[5].pixels)

    def test_sizes_and_types(self):
        for item in _items(12, min_side=64, max_side=80):
            h, w, c = item.pixels.shape
            self.assertEqual(c, 3)
            self.assertEqual(item.pixels.dtype, np.uint8)
            self.assertBetween(h, 64, 80)
            self.assertBetween(w, 64, 80)
            n = len(item.boxes_xywh)
            self.assertEqual(item.landmarks_xy.shape, (n, 5, 2))
            self.assertEqual(item.ignore.shape, (n,))
            self.assertLessEqual(n, synthetic.MAX_FACES)

    def test_boxes_inside_image(self):
        """Boxes are clipped to the image, with positive area."""
        items = _items(40)
        self.assertGreater(sum(len(i.boxes_xywh) for i in items), 40)
        for item in items:
            h, w = item.pixels.shape[:2]
            b = item.boxes_xywh
            self.assertTrue(np.all(b[:, :2] >= 0))
            self.assertTrue(np.all(b[:, 2:] > 0))
            self.assertTrue(np.all(b[:, 0] + b[:, 2] <= w + 1e-4))
            self.assertTrue(np.all(b[:, 1] + b[:, 3] <= h + 1e-4))

    def test_landmarks_inside_boxes_and_ordered(self):
        """Labelled points lie in their box; the left eye and left mouth corner have the smaller x."""
        labelled = 0
        for item in _items(40):
            for box, points in zip(item.boxes_xywh, item.landmarks_xy):
                if not np.all(np.isfinite(points)):
                    continue
                labelled += 1
                x, y, w, h = box
                self.assertTrue(np.all(points[:, 0] >= x - 0.5) and np.all(points[:, 0] <= x + w + 0.5))
                self.assertTrue(np.all(points[:, 1] >= y - 0.5) and np.all(points[:, 1] <= y + h + 0.5))
                self.assertLess(points[0, 0], points[1, 0])
                self.assertLess(points[3, 0], points[4, 0])
                self.assertLess(max(points[0, 1], points[1, 1]), min(points[3, 1], points[4, 1]))
        self.assertGreater(labelled, 30)

    def test_face_free_images(self):
        counts = [len(i.boxes_xywh) for i in _items(30, negative_fraction=0.5)]
        self.assertGreater(counts.count(0), 5)
        self.assertGreater(len(counts) - counts.count(0), 5)
        self.assertNotIn(0, [len(i.boxes_xywh) for i in _items(10, negative_fraction=0.0)])

    def test_varied_face_sizes(self):
        sides = np.concatenate([i.boxes_xywh[:, 3] for i in _items(60, min_side=160, max_side=160)])
        self.assertLess(sides.min(), 20)
        self.assertGreater(sides.max(), 80)

    def test_rotate_points_matches_pil(self):
        """The landmark transform of _place_face follows PIL's rotate(expand=True)."""
        layer = Image.new('L', (41, 31), 0)
        point = np.array([32.0, 8.0])
        ImageDraw.Draw(layer).ellipse([point[0] - 1.5, point[1] - 1.5, point[0] + 1.5, point[1] + 1.5], fill=255)
        for angle in (-15.0, 9.0, 15.0):
            rotated = np.asarray(layer.rotate(angle, resample=Image.BILINEAR, expand=True), np.float64)
            ys, xs = np.nonzero(rotated > 60)
            weights = rotated[ys, xs]
            found = np.array([np.average(xs, weights=weights) + 0.5, np.average(ys, weights=weights) + 0.5])
            centre = np.array(layer.size) / 2
            expected = synthetic.rotate_points(point, centre, angle) - centre + np.array(rotated.shape[::-1]) / 2
            self.assertAllClose(found, expected, atol=1.0)

    def test_rotated_ellipse_extent(self):
        self.assertAllClose(synthetic.rotated_ellipse_extent(3.0, 5.0, 0.0), (3.0, 5.0))
        self.assertAllClose(synthetic.rotated_ellipse_extent(3.0, 5.0, 90.0), (5.0, 3.0))
        hw, hh = synthetic.rotated_ellipse_extent(2.0, 2.0, 33.0)
        self.assertAllClose((hw, hh), (2.0, 2.0))
        self.assertGreater(synthetic.rotated_ellipse_extent(3.0, 5.0, 15.0)[0], 3.0)

    def test_encodes_into_valid_records(self):
        for item in _items(8):
            record, dropped = items_lib.encode_item(item)
            self.assertEqual(dropped, {})
            self.assertEqual(record.num_faces, len(item.boxes_xywh))
            self.assertTrue(np.all((record.boxes >= 0) & (record.boxes <= 1)))
            self.assertTrue(np.all(record.boxes[:, 2:] > record.boxes[:, :2]))


if __name__ == '__main__':
    tf.test.main()
