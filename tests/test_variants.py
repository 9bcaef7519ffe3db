"""evaluation.variants: each variant changes the photo as its table says, the same way every time."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from evaluation import variants


def _photo(height=240, width=320, seed=0):
    """A textured photo (noise plus edges: high frequencies for blur and JPEG to remove)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=[height, width, 3]).astype(np.uint8)
    rgb[::8] = 255
    return rgb


def _high_frequency_energy(rgb):
    """Mean squared difference between horizontal and vertical neighbours."""
    v = rgb.astype(np.float64)
    return np.mean(np.diff(v, axis=0) ** 2) + np.mean(np.diff(v, axis=1) ** 2)


# A 60x50-px face (the largest, side 60), a 20-px one beside it, a far one in a corner.
FACES_PX = np.array([[80, 120, 140, 170], [90, 180, 110, 200], [0, 0, 30, 30]], np.float32)
BOXES = FACES_PX / [240, 320, 240, 320]
IGNORE = np.array([False, False, False])


class VariantsTest(tf.test.TestCase, parameterized.TestCase):

    def test_grey_has_equal_channels_and_the_luma(self):
        rgb = _photo()
        out = variants.apply('grey', rgb, BOXES, IGNORE, 'a').rgb
        self.assertEqual(out.shape, rgb.shape)
        self.assertAllEqual(out[..., 0], out[..., 1])
        self.assertAllEqual(out[..., 1], out[..., 2])
        pure_red = variants.grey(np.full([2, 2, 3], [255, 0, 0], np.uint8))
        self.assertAllEqual(pure_red[0, 0], [76, 76, 76])  # 0.299 * 255 = 76.2

    def test_blur_lowers_high_frequency_energy_and_keeps_size(self):
        rgb = _photo()
        out = variants.apply('blur', rgb, BOXES, IGNORE, 'a').rgb
        self.assertEqual(out.shape, rgb.shape)
        self.assertLess(_high_frequency_energy(out), 0.1 * _high_frequency_energy(rgb))
        # Mean brightness stays (a blur, not a darkening).
        self.assertAllClose(out.mean(), rgb.mean(), atol=2.0)

    def test_jpeg_changes_pixels_but_keeps_size(self):
        rgb = _photo()
        out = variants.apply('jpeg', rgb, BOXES, IGNORE, 'a').rgb
        self.assertEqual(out.shape, rgb.shape)
        self.assertEqual(out.dtype, np.uint8)
        self.assertGreater(np.abs(out.astype(int) - rgb).mean(), 10.0)
        self.assertLess(_high_frequency_energy(out), _high_frequency_energy(rgb))

    def test_low_contrast_narrows_the_range(self):
        out = variants.low_contrast(np.array([[[0, 128, 255]]], np.uint8))
        # (0.5 + 0.4 * (v - 0.5)) ** 1.5 for v = 0, 0.5, 1: 0.164, 0.354, 0.586.
        self.assertAllClose(out[0, 0], [42, 90, 149], atol=1)

    @parameterized.parameters('grey', 'blur', 'jpeg', 'low_contrast')
    def test_pixel_variants_keep_the_faces(self, name):
        out = variants.apply(name, _photo(), BOXES, IGNORE, 'a')
        self.assertAllEqual(out.boxes, BOXES.astype(np.float32))
        self.assertAllEqual(out.ignore, IGNORE)

    @parameterized.parameters(*variants.NAMES)
    def test_deterministic(self, name):
        first = variants.apply(name, _photo(), BOXES, IGNORE, 'wider/7')
        second = variants.apply(name, _photo(), BOXES, IGNORE, 'wider/7')
        self.assertAllEqual(first.rgb, second.rgb)
        self.assertAllEqual(first.boxes, second.boxes)

    def test_large_face_fraction_in_range_and_boxes_follow_the_pixels(self):
        low, high = variants.LARGE_FRACTION
        fractions = []
        for k in range(20):
            rgb = np.zeros([240, 320, 3], np.uint8)
            y0, x0, y1, x1 = FACES_PX[0].astype(int)
            rgb[y0:y1, x0:x1] = 255  # the largest face is a white block
            out = variants.apply('large', rgb, BOXES, IGNORE, f'wider/{k}')
            self.assertEqual(out.rgb.shape, (variants.LARGE_SIDE, variants.LARGE_SIDE, 3))
            top = out.boxes[0]
            side = np.max(top[2:] - top[:2])  # normalized: a fraction of the crop
            fractions.append(side)
            self.assertBetween(side, low - 0.01, high + 0.01)
            self.assertFalse(out.ignore[0])
            # The white block sits where the first box says.
            py0, px0, py1, px1 = np.round(top * variants.LARGE_SIDE).astype(int)
            self.assertGreater(out.rgb[py0 + 3:py1 - 3, px0 + 3:px1 - 3].mean(), 250)
            self.assertLess(np.delete(out.rgb, np.s_[max(0, py0 - 3):py1 + 3], 0).mean(), 5)
            self.assertTrue(np.all((out.boxes >= 0) & (out.boxes <= 1)))
        # The fraction is drawn per photo, not fixed.
        self.assertGreater(np.ptp(fractions), 0.05)

    def test_large_ignores_faces_cut_by_the_border_and_drops_faces_outside(self):
        # A 100-px largest face in a 400x1000 photo: crops of 167-250 px start at x in
        # [300, 450]; the 90-px second face (x 340-430) is inside, cut or outside by where.
        faces = np.array([[150, 450, 250, 550], [150, 340, 200, 430], [0, 0, 20, 20]],
                         np.float32)
        seen = set()
        for k in range(200):
            out = variants.apply('large', np.zeros([400, 1000, 3], np.uint8),
                                 faces / [400, 1000, 400, 1000], [False] * 3, f'x/{k}')
            crop = 100 / np.max(out.boxes[0, 2:] - out.boxes[0, :2])  # source px
            x0 = 450 - out.boxes[0, 1] * crop
            status = 'inside' if x0 <= 340 else ('cut' if x0 < 430 else 'outside')
            seen.add(status)
            self.assertLen(out.boxes, 1 if status == 'outside' else 2)  # the corner face: out
            if status != 'outside':
                self.assertEqual(bool(out.ignore[1]), status == 'cut')
                expected_left = max(340 - x0, 0) / crop
                self.assertAllClose(out.boxes[1, 1], expected_left, atol=1e-3)
        self.assertEqual(seen, {'inside', 'cut', 'outside'})

    def test_large_leaves_out_small_faces_and_already_large_ones(self):
        rgb = np.zeros([240, 320, 3], np.uint8)
        small = np.array([[0.1, 0.1, 0.2, 0.2]], np.float32)  # 24x32 px < 48
        self.assertIsNone(variants.apply('large', rgb, small, [False], 'a'))
        huge = np.array([[0.1, 0.1, 0.8, 0.6]], np.float32)  # 168 px of a 240-px short side
        self.assertIsNone(variants.apply('large', rgb, huge, [False], 'a'))
        self.assertIsNone(variants.apply('large', rgb, np.zeros([0, 4]), [], 'a'))
        # An ignored face does not count as the largest.
        self.assertIsNone(variants.apply('large', rgb, BOXES[:1], [True], 'a'))

    def test_parse_names(self):
        self.assertEqual(variants.parse_names(['grey', ' jpeg', '']), ('grey', 'jpeg'))
        with self.assertRaisesRegex(ValueError, 'unknown variant sepia'):
            variants.parse_names(['sepia'])
        with self.assertRaisesRegex(ValueError, 'twice'):
            variants.parse_names(['grey', 'grey'])


if __name__ == '__main__':
    tf.test.main()
