"""Tests for preprocess/items.py: load_rgb and encode_item's repair rules."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from data import features
from preprocess import items
from tests import image_fixtures as fx


def _item(path=None, boxes=(), landmarks=None, ignore=None, pixels=None):
    return items.RawItem(source_id='t/x', path=path,
                         boxes_xywh=np.asarray(boxes, np.float32).reshape(-1, 4),
                         landmarks_xy=landmarks, ignore=ignore, pixels=pixels)


class LoadRgbTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.named_parameters(
        ('jpeg', fx.write_jpeg, (48, 64)),
        ('png', fx.write_png, (48, 64)),
        ('grayscale', fx.write_grayscale_jpeg, (48, 64)),
        ('cmyk', fx.write_cmyk_jpeg, (48, 64)),
        ('rgba', fx.write_rgba_png, (48, 64)),
        ('png16', fx.write_16bit_png, (48, 64)),
        ('exif6', fx.write_exif_rotated_jpeg, (40, 24)),
    )
    def test_any_mode_becomes_uint8_rgb(self, writer, shape):
        path = writer(os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'img'))
        pixels = items.load_rgb(path)
        self.assertEqual(pixels.dtype, np.uint8)
        self.assertEqual(pixels.shape, shape + (3,))

    def test_rgba_composited_on_white(self):
        pixels = items.load_rgb(fx.write_rgba_png(
            os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'a.png')))
        self.assertAllEqual(pixels[5, 5], [255, 0, 0])
        self.assertAllEqual(pixels[5, 60], [255, 255, 255])

    def test_16bit_scaled_to_8bit(self):
        pixels = items.load_rgb(fx.write_16bit_png(
            os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'a.png')))
        self.assertAllEqual(pixels[5, 5], [255, 255, 255])
        self.assertAllEqual(pixels[5, 60], [0, 0, 0])

    def test_exif_orientation_applied(self):
        pixels = items.load_rgb(fx.write_exif_rotated_jpeg(
            os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'a.jpg')))
        # Stored 40x24 with red top-left; displayed 24x40 with red top-right.
        self.assertGreater(int(pixels[3, 20, 0]), 200)
        self.assertLess(int(pixels[3, 3, 0]), 60)
        self.assertLess(int(pixels[36, 20, 0]), 60)

    @parameterized.named_parameters(
        ('missing', None, 'missing_file'),
        ('truncated', fx.write_truncated_jpeg, 'corrupt_image'),
        ('garbage', fx.write_garbage, 'corrupt_image'),
    )
    def test_unusable_file_skipped(self, writer, reason):
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'bad.jpg')
        if writer:
            writer(path)
        with self.assertRaises(items.SkipItem) as ctx:
            items.encode_item(_item(path, [[1, 1, 5, 5]]))
        self.assertEqual(ctx.exception.reason, reason)


    @parameterized.named_parameters(
        ('empty', fx.write_empty, 'corrupt_image', r'bad\.jpg: not an image \(0 bytes\)$'),
        ('text', fx.write_garbage, 'corrupt_image',
         r'bad\.jpg: not an image \(20 bytes in no format PIL reads\)$'),
        ('truncated', fx.write_truncated_jpeg, 'corrupt_image', r'bad\.jpg: truncated JPEG'),
        # The header alone: decoding it would fail as truncated, so this reason shows that
        # the size was refused before any decoding.
        ('huge', lambda p: fx.write_huge_png(p, pixels=False), 'image_too_large',
         r'bad\.jpg: 30000x30000 = 900 MP is over max_pixels=178956970 \(179 MP\)$'),
    )
    def test_unreadable_file_message_names_the_file_and_the_problem(self, writer, reason, msg):
        path = writer(os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'bad.jpg'))
        with self.assertRaises(items.SkipItem) as ctx:
            items.load_rgb(path)
        self.assertEqual(ctx.exception.reason, reason)
        self.assertRegex(ctx.exception.detail, msg)
        # No object repr ('<_io.BytesIO ... 0x7f..>') after the path (whose temp folder may
        # hold '<string>' when pytest-xdist runs the test).
        problem = ctx.exception.detail[len(path):]
        self.assertNotRegex(problem, r'<|\b0x[0-9a-f]+')

    def test_max_pixels_is_the_callers(self):
        path = fx.write_jpeg(os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'a.jpg'))
        self.assertEqual(items.load_rgb(path, max_pixels=64 * 48).shape, (48, 64, 3))
        with self.assertRaisesRegex(items.SkipItem, r'64x48 = 0 MP is over max_pixels=3071'):
            items.load_rgb(path, max_pixels=64 * 48 - 1)
        # Above PIL's own limit when the caller allows it (the header-only file then fails
        # as what it is, a PNG without pixels).
        big = fx.write_huge_png(os.path.join(self.get_temp_dir(), 'big.png'), pixels=False)
        with self.assertRaisesRegex(items.SkipItem, r'big\.png: unreadable PNG'):
            items.load_rgb(big, max_pixels=1e9)


class EncodeItemTest(parameterized.TestCase, tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.pixels = fx.rgb(100, 50)  # width 100, height 50

    def test_boxes_normalized_yxyx(self):
        record, dropped = items.encode_item(_item(boxes=[[10, 5, 20, 10]], pixels=self.pixels))
        self.assertEqual(dropped, {})
        self.assertEqual((record.height, record.width), (50, 100))
        self.assertAllClose(record.boxes, [[0.1, 0.1, 0.3, 0.3]])
        self.assertAllEqual(record.ignore, [0])
        self.assertAllEqual(record.landmarks_valid, [0])
        self.assertAllEqual(record.landmarks, np.zeros([1, 10]))

    def test_repair_rules(self):
        boxes = [[90, 40, 20, 20],    # partly outside: clipped to x 90..100, y 40..50
                 [200, 10, 10, 10],   # fully outside: dropped
                 [10, 10, 0, 5],      # zero width: dropped
                 [10, 10, 5, -1],     # negative height: dropped
                 [np.nan, 1, 2, 3],   # not finite: dropped
                 [-5, -5, 10, 10]]    # clipped to 0..5
        ignore = np.array([True, False, False, False, False, False])
        record, dropped = items.encode_item(_item(boxes=boxes, ignore=ignore,
                                                  pixels=self.pixels))
        self.assertEqual(dropped, {'box_outside': 1, 'box_empty': 2, 'box_not_finite': 1})
        self.assertAllClose(record.boxes, [[0.8, 0.9, 1.0, 1.0], [0.0, 0.0, 0.1, 0.05]])
        self.assertAllEqual(record.ignore, [1, 0])
        self.assertAllInRange(record.boxes, 0.0, 1.0)

    def test_landmarks_valid_and_nan_rows(self):
        lm = np.full([2, 5, 2], np.nan)
        lm[0] = [[20, 10], [40, 10], [30, 20], [22, 30], [38, 30]]
        record, _ = items.encode_item(_item(boxes=[[10, 5, 40, 40], [60, 5, 20, 20]],
                                            landmarks=lm, pixels=self.pixels))
        self.assertAllEqual(record.landmarks_valid, [1, 0])
        self.assertAllClose(record.landmarks[0, :4], [10 / 50, 20 / 100, 10 / 50, 40 / 100])
        self.assertAllEqual(record.landmarks[1], np.zeros(10))

    def test_zero_faces_is_valid(self):
        record, dropped = items.encode_item(_item(boxes=np.zeros([0, 4]), pixels=self.pixels))
        self.assertEqual(record.num_faces, 0)
        self.assertEqual(dropped, {})
        parsed = features.parse_example(features.to_example(record).SerializeToString())
        self.assertEqual(parsed['boxes'].shape, (0, 4))

    def test_max_side_downscales_keeps_normalized_boxes(self):
        record, _ = items.encode_item(_item(boxes=[[10, 5, 20, 10]], pixels=self.pixels),
                                      max_side=50)
        self.assertEqual((record.height, record.width), (25, 50))
        self.assertAllClose(record.boxes, [[0.1, 0.1, 0.3, 0.3]])

    def test_exif_box_refers_to_displayed_image(self):
        path = fx.write_exif_rotated_jpeg(
            os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'r.jpg'))
        # Displayed 24 wide x 40 tall; y 30..38 would be outside the stored 24-px height.
        record, dropped = items.encode_item(_item(path, [[2, 30, 10, 8]]))
        self.assertEqual(dropped, {})
        self.assertEqual((record.height, record.width), (40, 24))
        self.assertAllClose(record.boxes, [[30 / 40, 2 / 24, 38 / 40, 12 / 24]])

    def test_round_trip_through_example(self):
        lm = np.array([[[20, 10], [40, 10], [30, 20], [22, 30], [38, 30]]], np.float32)
        record, _ = items.encode_item(_item(boxes=[[10, 5, 40, 40]], landmarks=lm,
                                            ignore=np.array([True]), pixels=self.pixels))
        parsed = features.parse_example(features.to_example(record).SerializeToString())
        self.assertAllClose(parsed['boxes'], record.boxes)
        self.assertAllEqual(parsed['ignore'], [True])
        self.assertAllEqual(parsed['landmarks_valid'], [True])
        self.assertEqual(parsed['image'].shape, (50, 100, 3))


if __name__ == '__main__':
    tf.test.main()
