"""Passes at several scales (model/multiscale.py): which faces each keeps, where its boxes
land in the photo, and the errors for bad pass settings."""

import math
import unittest

import numpy as np

import export
from model import multiscale
from model.multiscale import Pass


class FakeSignature:
    """A detect_image stand-in: for an input of H x W it returns two faces given as
    fractions of that input (a small one at the top left, a large one in the middle), so a
    pass's boxes in the photo depend only on the photo, as a real detector's should."""

    FACES = np.array([[0.1, 0.1, 0.05, 0.05], [0.3, 0.3, 0.5, 0.5]], np.float32)  # x y w h

    def __init__(self):
        self.sizes = []

    def __call__(self, images):
        h, w = images.shape[1:3]
        self.sizes.append((h, w))
        boxes = self.FACES * np.array([w, h, w, h], np.float32)
        marks = np.tile(boxes[:, :2], 5)  # every landmark at the box's corner
        return {'boxes': boxes[None], 'scores': np.array([[0.9, 0.8]], np.float32),
                'landmarks': marks[None], 'num_detections': np.array([2], np.int32)}


class ResizingSignature(FakeSignature):
    """Resizes inside to sizes that are multiples of 32, as model/runtime.LiteSignature
    does: its faces are fractions of that size."""

    def __init__(self):
        super().__init__()
        self.inside = []

    def can_resize(self, height, width, to_height, to_width):
        return not to_height % 32 and not to_width % 32

    def __call__(self, images, resize_to=None):
        if resize_to is None:
            return super().__call__(images)
        self.inside.append(resize_to)
        return super().__call__(np.zeros([1, *resize_to, 3], np.float32))


class PassTest(unittest.TestCase):

    def setUp(self):
        self.pixels = np.zeros([480, 640, 3], np.uint8)
        self.faces = FakeSignature.FACES * np.array([640, 480, 640, 480])  # in the photo

    def test_each_pass_keeps_its_sizes_and_maps_back_to_the_photo(self):
        signature = FakeSignature()
        # The small face is 32 px wide, the large one 320.
        passes = [Pass(1.5, max_size=200), Pass(0.5, min_size=100)]
        boxes, scores, landmarks = multiscale.run_scales(signature, self.pixels, passes)
        self.assertEqual(signature.sizes, [(736, 960), (240, 320)])
        np.testing.assert_allclose(boxes, self.faces, rtol=1e-5)
        np.testing.assert_allclose(scores, [0.9, 0.8])
        np.testing.assert_allclose(landmarks[:, :2], self.faces[:, :2], rtol=1e-5)
        # With the ranges swapped, neither pass keeps anything.
        none = [Pass(1.5, min_size=400), Pass(0.5, max_size=20)]
        self.assertEqual(len(multiscale.run_scales(FakeSignature(), self.pixels, none)[1]), 0)
        # Only the small face in the first pass, only the large in the second.
        small, _, _ = multiscale.run_scales(FakeSignature(), self.pixels, [Pass(1.5, 0, 100)])
        large, _, _ = multiscale.run_scales(FakeSignature(), self.pixels, [Pass(0.5, 100)])
        np.testing.assert_allclose(small, self.faces[:1], rtol=1e-5)
        np.testing.assert_allclose(large, self.faces[1:], rtol=1e-5)

    def test_a_signature_that_resizes_inside_gets_the_photo_where_it_can(self):
        signature = ResizingSignature()
        passes = [Pass(1.5, max_size=200), Pass(0.5, min_size=100), Pass(1.0)]
        boxes, scores, _ = multiscale.run_scales(signature, self.pixels, passes)
        self.assertEqual(signature.inside, [(736, 960)])  # 240x320 is not a multiple of 32
        # Each pass saw its own size, inside the network or resized before it.
        self.assertEqual(signature.sizes, [(736, 960), (240, 320), (480, 640)])
        np.testing.assert_allclose(boxes, self.faces, rtol=1e-5)
        np.testing.assert_allclose(scores, [0.9, 0.8])

    def test_passes_beyond_max_side_run_at_max_side_and_share_a_call(self):
        signature = FakeSignature()
        signature.max_side = 320  # as model/runtime.load sets it
        passes = [Pass(1.5, max_size=200), Pass(0.5, min_size=100)]
        boxes, scores, _ = multiscale.run_scales(signature, self.pixels, passes)
        # 1.5x and 0.5x of 640x480 both come to 320x240 (0.5x, the most 320 allows): one call.
        self.assertEqual(signature.sizes, [(240, 320)])
        np.testing.assert_allclose(boxes, self.faces, rtol=1e-5)
        np.testing.assert_allclose(scores, [0.9, 0.8])
        # max_side given to run_scales wins over the signature's; a photo within it at 1x
        # goes in as it is.
        signature = FakeSignature()
        multiscale.run_scales(signature, self.pixels, [Pass(1.0), Pass(1.5)], max_side=800)
        self.assertEqual(signature.sizes, [(480, 640), (608, 800)])

    def test_passes_without_ranges_merge_their_twins(self):
        boxes, scores, _ = multiscale.run_scales(FakeSignature(), self.pixels, [1.0, 1.5, 0.5])
        np.testing.assert_allclose(np.sort(scores), [0.8, 0.9])
        np.testing.assert_allclose(boxes, self.faces, rtol=1e-5)

    def test_scaled_sides_snap_to_32_only_when_that_barely_stretches(self):
        self.assertEqual(multiscale.scaled_size(480, 640, 1.5), (736, 960))  # 720 -> 736: 2%
        # 240 -> 256 would stretch 7%: 240, which the runtime pads.
        self.assertEqual(multiscale.scaled_size(480, 640, 0.5), (240, 320))
        # 150 would become 160 and 90 96 (7% each); 930 becomes 928.
        self.assertEqual(multiscale.scaled_size(100, 60, 1.5), (150, 90))
        self.assertEqual(multiscale.scaled_size(620, 60, 1.5), (928, 90))
        self.assertEqual(multiscale.scaled_size(10, 10, 0.5), (5, 5))

    def test_bad_passes_are_clear_errors(self):
        with self.assertRaisesRegex(ValueError, 'positive scale'):
            Pass(0.0)
        with self.assertRaisesRegex(ValueError, 'min_size < max_size'):
            Pass(1.0, 200, 100)
        with self.assertRaisesRegex(ValueError, 'facedet.json: default_passes: expected'):
            multiscale.parse_passes([{'size': 2}], 'facedet.json: default_passes')
        with self.assertRaisesRegex(ValueError, 'no pass'):
            multiscale.parse_passes([])
        with self.assertRaisesRegex(ValueError, "--passes: '1.5:0': give SCALE or"):
            export.parse_pass_flags(['1.5:0'])
        with self.assertRaisesRegex(ValueError, "--passes: 'x'"):
            export.parse_pass_flags(['x'])

    def test_pass_flags_and_json_round_trip(self):
        passes = export.parse_pass_flags(['1.5:0:200', '0.5:100:', '1'])
        self.assertEqual(passes, [Pass(1.5, 0, 200), Pass(0.5, 100, math.inf), Pass(1.0)])
        self.assertEqual(multiscale.parse_passes([p.to_json() for p in passes]), passes)
        self.assertEqual([p.describe() for p in passes],
                         ['1.5x (faces < 200 px)', '0.5x (faces >= 100 px)', '1x'])
        self.assertEqual(multiscale.describe([Pass(1.5, 0, 200), 0.5]),
                         '1.5x (faces < 200 px) + 0.5x merged by NMS')
        self.assertEqual(multiscale.describe([1]), '1x')


if __name__ == '__main__':
    unittest.main()
