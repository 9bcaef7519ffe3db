"""Tests for preprocess/jsonl_source.py on a manifest written in code."""

import json
import os
import tempfile

import tensorflow as tf

from preprocess import items, jsonl_source
from preprocess.splits import split_by_hash
from tests import image_fixtures as fx

LM_FACE = [[15, 15], [30, 15], [22, 22], [17, 30], [28, 30]]
LINES = [
    {'image': 'images/a.jpg', 'width': 64, 'height': 48, 'split': 'train',
     'boxes': [[10, 10, 20, 20], [50, 40, 20, 20], [100, 100, 5, 5], [5, 5, 0, 8]],
     'classes': ['with_mask', 'without_mask', 'x', 'y']},
    {'image': 'images/empty.jpg', 'boxes': [], 'split': 'val'},
    {'image': 'images/lm.png', 'boxes': [[10, 10, 30, 30], [40, 5, 10, 10], [0, 0, 8, 8]],
     'landmarks': [LM_FACE, None, [1, 1, 6, 1, 4, 4, 2, 6, 6, 6]],
     'ignore': [False, True, 0], 'split': 'test'},
    '',
    'not json {',
    {'boxes': []},
    {'image': 'images/x.jpg', 'boxes': [[1, 2, 3]]},
    {'image': 'images/x.jpg', 'boxes': [[1, 2, 3, '4']]},
    {'image': 'images/x.jpg', 'boxes': [[1, 2, 3, 4]], 'landmarks': [[1, 2, 3]]},
    {'image': 'images/x.jpg', 'boxes': [[1, 2, 3, 4]], 'split': 'holdout'},
    {'image': 'images/missing.jpg', 'boxes': [[1, 1, 5, 5]]},
    {'image': 'images/png16.png', 'boxes': [[1, 1, 5, 5]]},
    {'image': 'images/rot.jpg', 'boxes': [[2, 30, 10, 8]]},
    {'image': 'images/trunc.jpg', 'boxes': []},
    {'image': 'images/a.jpg', 'boxes': [[1, 1, 5, 5]], 'ignore': [1, 0]},
]


def make_manifest(root):
    """Writes images (64 wide x 48 tall unless noted) and root/fixture/labels.jsonl."""
    base = os.path.join(root, 'fixture')
    fx.write_jpeg(os.path.join(base, 'images/a.jpg'))
    fx.write_jpeg(os.path.join(base, 'images/empty.jpg'))
    fx.write_rgba_png(os.path.join(base, 'images/lm.png'))
    fx.write_16bit_png(os.path.join(base, 'images/png16.png'))
    fx.write_exif_rotated_jpeg(os.path.join(base, 'images/rot.jpg'))
    fx.write_truncated_jpeg(os.path.join(base, 'images/trunc.jpg'))
    path = os.path.join(base, 'labels.jsonl')
    with open(path, 'w') as f:
        for line in LINES:
            f.write((line if isinstance(line, str) else json.dumps(line)) + '\n')
    return path


class JsonlSourceTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.manifest = make_manifest(tempfile.mkdtemp(dir=self.get_temp_dir()))
        self.base = os.path.dirname(self.manifest)

    def test_stream_order_and_skips(self):
        out = list(jsonl_source.read_items(self.manifest))
        kinds = [e.source_id if isinstance(e, items.RawItem) else int(e.detail.split(':')[1])
                 for e in out]
        self.assertEqual(kinds, [
            'fixture/images/a.jpg', 'fixture/images/empty.jpg', 'fixture/images/lm.png',
            5, 6, 7, 8, 9, 10, 'fixture/images/missing.jpg', 'fixture/images/png16.png',
            'fixture/images/rot.jpg', 'fixture/images/trunc.jpg', 15])
        details = [e.detail for e in out if isinstance(e, items.SkipItem)]
        self.assertIn('invalid JSON', details[0])
        self.assertIn('"image"', details[1])
        self.assertIn('"boxes"', details[2])
        self.assertIn('"boxes"', details[3])
        self.assertIn('landmarks of face 0', details[4])
        self.assertIn('"split"', details[5])
        self.assertIn('"ignore"', details[6])
        self.assertEqual({e.reason for e in out if isinstance(e, items.SkipItem)},
                         {'malformed_annotation'})

    def test_fields(self):
        raw = [e for e in jsonl_source.read_items(self.manifest, source_name='fm')
               if isinstance(e, items.RawItem)]
        self.assertEqual(raw[0].source_id, 'fm/images/a.jpg')
        self.assertEqual(raw[0].path, os.path.join(self.base, 'images/a.jpg'))
        self.assertEqual(raw[0].origin, self.manifest + ':1')
        self.assertEqual([r.split for r in raw[:3]], ['train', 'val', 'test'])
        for r in raw[3:]:
            self.assertEqual(r.split, split_by_hash(r.source_id[len('fm/'):]))
        self.assertIsNone(raw[0].landmarks_xy)
        self.assertIsNone(raw[0].ignore)
        self.assertEqual(raw[1].boxes_xywh.shape, (0, 4))

    def test_records_after_encode(self):
        records, skips, dropped = fx.encode_all(jsonl_source.read_items(self.manifest))
        self.assertCountEqual(records, [
            'fixture/images/a.jpg', 'fixture/images/empty.jpg', 'fixture/images/lm.png',
            'fixture/images/png16.png', 'fixture/images/rot.jpg'])
        self.assertEqual({k: len(v) for k, v in skips.items()},
                         {'malformed_annotation': 7, 'missing_file': 1, 'corrupt_image': 1})
        self.assertEqual(dropped, {'box_outside': 1, 'box_empty': 1})
        a = records['fixture/images/a.jpg']
        self.assertAllClose(a.boxes, [[10 / 48, 10 / 64, 30 / 48, 30 / 64],
                                      [40 / 48, 50 / 64, 1.0, 1.0]])
        self.assertEqual(records['fixture/images/empty.jpg'].num_faces, 0)
        lm = records['fixture/images/lm.png']
        self.assertAllEqual(lm.ignore, [0, 1, 0])
        self.assertAllEqual(lm.landmarks_valid, [1, 0, 1])
        self.assertAllClose(lm.landmarks[0, :2], [15 / 48, 15 / 64])
        self.assertAllClose(lm.landmarks[2, 2:4], [1 / 48, 6 / 64])
        self.assertAllEqual(lm.landmarks[1], [0] * 10)
        rot = records['fixture/images/rot.jpg']
        self.assertEqual((rot.height, rot.width), (40, 24))
        self.assertAllClose(rot.boxes, [[30 / 40, 2 / 24, 38 / 40, 12 / 24]])

    def test_box_adjust_changes_the_convention_and_is_clipped_on_encode(self):
        adjust = ('0.1', '-0.25', '0.8', '1.5')  # strings, as absl list flags give them
        raw = [e for e in jsonl_source.read_items(self.manifest, box_adjust=adjust)
               if isinstance(e, items.RawItem)]
        # [10, 10, 20, 20] -> x 10 + 2, y 10 - 5, w 16, h 30; landmarks stay where they were.
        self.assertAllClose(raw[0].boxes_xywh[0], [12, 5, 16, 30])
        self.assertAllClose(raw[2].boxes_xywh[1], [41, 2.5, 8, 15])
        self.assertAllClose(raw[2].landmarks_xy[0], LM_FACE)
        records, _, _ = fx.encode_all(jsonl_source.read_items(self.manifest, box_adjust=adjust))
        # [0, 0, 8, 8] -> [0.8, -2, 6.4, 12]: the part above the image is clipped away.
        self.assertAllClose(records['fixture/images/lm.png'].boxes[2] * [48, 64, 48, 64],
                            [0, 0.8, 10, 7.2], atol=1e-4)

    def test_bad_box_adjust_is_a_clear_error(self):
        for bad in (('0', '0', '1'), ('0', '0', '1', 'x'), (0, 0, 0, 1), (0, 0, 1, -1)):
            with self.assertRaisesRegex(ValueError, 'dx,dy,sw,sh'):
                next(jsonl_source.read_items(self.manifest, box_adjust=bad))


    def test_lines_that_crashed_the_reader_are_counted_skips(self):
        # Found by tests/test_annotation_fuzz.py: json.loads raised RecursionError and
        # ValueError (not JSONDecodeError), sha1 of a lone surrogate UnicodeEncodeError,
        # and [[]] passed as an image without faces, teaching its face as background.
        lines = ['[' * 100000, '{"image": "a.jpg", "boxes": [[%s, 1, 2, 3]]}' % ('9' * 5000),
                 '{"image": "\\ud800.jpg", "boxes": []}', '{"image": "a.jpg", "boxes": [[]]}']
        path = os.path.join(self.get_temp_dir(), 'crashers.jsonl')
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        out = list(jsonl_source.read_items(path))
        self.assertEqual([e.reason for e in out], ['malformed_annotation'] * 4)
        problems = [e.detail.split(': ')[1] for e in out]
        self.assertEqual(problems, [
            'invalid JSON (nested too deeply)', 'invalid JSON (a number too long to read)',
            '"image" is not valid Unicode (a lone surrogate escape)',
            '"boxes" must be a list of [x, y, w, h]'])

if __name__ == '__main__':
    tf.test.main()
