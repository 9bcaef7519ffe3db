"""Tests for preprocess/widerface.py on a tiny official-layout fixture made in code."""

import os
import tempfile

import numpy as np
import tensorflow as tf

from preprocess import items, widerface
from tests import image_fixtures as fx

# Official format, trailing spaces included as in the real file. Line numbers matter.
TRAIN_GT = """\
0--Parade/a.jpg
5
10 10 20 20 0 0 0 0 0 0 \n30 5 10 12 2 1 0 1 2 0 \n5 5 0 8 0 0 0 0 0 0 \n50 40 20 20 0 0 0 0 0 0 \n100 100 5 5 0 0 0 0 0 0 
0--Parade/empty.jpg
0
0 0 0 0 0 0 0 0 0 0 
0--Parade/bad_fields.jpg
1
1 2 3 4 0 0
0--Parade/bad_number.jpg
1
1 2 x 4 0 0 0 0 0 0
0--Parade/few_rows.jpg
3
1 1 5 5 0 0 0 0 0 0
2 2 5 5 0 0 0 0 0 0
1--Handshaking/extra_rows.jpg
1
1 1 5 5 0 0 0 0 0 0
2 2 5 5 0 0 0 0 0 0
1--Handshaking/missing.jpg
1
1 1 5 5 0 0 0 0 0 0
1--Handshaking/truncated.jpg
1
1 1 5 5 0 0 0 0 0 0
1--Handshaking/gray.jpg
1
10 10 20 20 0 0 0 0 0 0
1--Handshaking/rotated.jpg
1
2 30 10 8 0 0 0 0 0 0
1--Handshaking/bad_count.jpg
1.5
1 1 5 5 0 0 0 0 0 0
1--Handshaking/last.jpg
1
4 4 8 8 0 0 0 0 0 0
"""
VAL_GT = """\
0--Parade/v.jpg
1
8 8 16 16 0 0 0 0 0 0
"""


def make_wider_root(root, with_val=False):
    """Writes the fixture tree; images are 64 wide x 48 tall unless noted."""
    images = os.path.join(root, 'WIDER_train', 'images')
    for name in ('0--Parade/a.jpg', '0--Parade/empty.jpg', '1--Handshaking/last.jpg',
                 '0--Parade/bad_fields.jpg', '0--Parade/few_rows.jpg'):
        fx.write_jpeg(os.path.join(images, name))
    fx.write_truncated_jpeg(os.path.join(images, '1--Handshaking/truncated.jpg'))
    fx.write_grayscale_jpeg(os.path.join(images, '1--Handshaking/gray.jpg'))
    fx.write_exif_rotated_jpeg(os.path.join(images, '1--Handshaking/rotated.jpg'))
    split_dir = os.path.join(root, 'wider_face_split')
    os.makedirs(split_dir, exist_ok=True)
    with open(os.path.join(split_dir, 'wider_face_train_bbx_gt.txt'), 'w') as f:
        f.write(TRAIN_GT)
    if with_val:
        fx.write_jpeg(os.path.join(root, 'WIDER_val', 'images', '0--Parade/v.jpg'))
        with open(os.path.join(split_dir, 'wider_face_val_bbx_gt.txt'), 'w') as f:
            f.write(VAL_GT)
    return root


class ParseGtFileTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = make_wider_root(tempfile.mkdtemp(dir=self.get_temp_dir()))
        self.path = widerface.gt_path(self.root, 'train')

    def test_entries_and_skips_in_file_order(self):
        out = list(widerface.parse_gt_file(self.path))
        kinds = [e.detail.split(':')[1] if isinstance(e, items.SkipItem) else e[0] for e in out]
        self.assertEqual(kinds, [
            '0--Parade/a.jpg', '0--Parade/empty.jpg', '13', '16', '18', '24',
            '1--Handshaking/missing.jpg', '1--Handshaking/truncated.jpg',
            '1--Handshaking/gray.jpg', '1--Handshaking/rotated.jpg', '38',
            '1--Handshaking/last.jpg'])
        for e in out:
            if isinstance(e, items.SkipItem):
                self.assertEqual(e.reason, 'malformed_annotation')
                self.assertStartsWith(e.detail, self.path + ':')

    def test_values(self):
        out = [e for e in widerface.parse_gt_file(self.path) if not isinstance(e, items.SkipItem)]
        rel, boxes, attrs, line_no = out[0]
        self.assertEqual((rel, line_no), ('0--Parade/a.jpg', 1))
        self.assertEqual(boxes.shape, (5, 4))
        self.assertAllEqual(boxes[1], [30, 5, 10, 12])
        self.assertEqual(attrs.dtype, np.int64)
        self.assertAllEqual(attrs[1], [2, 1, 0, 1, 2, 0])
        rel, boxes, attrs, line_no = out[1]
        self.assertEqual((rel, line_no, boxes.shape, attrs.shape),
                         ('0--Parade/empty.jpg', 8, (0, 4), (0, 6)))

    def test_skip_messages_name_the_problem(self):
        skips = [e.detail for e in widerface.parse_gt_file(self.path)
                 if isinstance(e, items.SkipItem)]
        self.assertIn('expected 10 fields, got 6', skips[0])
        self.assertIn('non-numeric field', skips[1])
        self.assertIn('count 3 for 0--Parade/few_rows.jpg but only 2 face rows', skips[2])
        self.assertIn('more rows follow', skips[3])
        self.assertIn('bad face count', skips[4])


class ReadItemsTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = make_wider_root(tempfile.mkdtemp(dir=self.get_temp_dir()), with_val=True)

    def test_raw_items(self):
        raw = [e for e in widerface.read_items(self.root) if isinstance(e, items.RawItem)]
        self.assertLen(raw, 8)
        a = raw[0]
        self.assertEqual(a.source_id, 'wider/0--Parade/a.jpg')
        self.assertEqual(a.path, os.path.join(self.root, 'WIDER_train/images/0--Parade/a.jpg'))
        self.assertEqual(a.origin, widerface.gt_path(self.root, 'train') + ':1')
        self.assertAllEqual(a.ignore, [False, True, False, False, False])
        self.assertAllEqual(a.attributes['blur'], [0, 2, 0, 0, 0])
        self.assertAllEqual(a.attributes['occlusion'], [0, 2, 0, 0, 0])
        self.assertEqual(raw[-1].split, 'val')
        self.assertEqual(raw[-1].path, os.path.join(self.root, 'WIDER_val/images/0--Parade/v.jpg'))
        self.assertEqual({r.split for r in raw[:-1]}, {'train'})

    def test_records_after_encode(self):
        records, skips, dropped = fx.encode_all(widerface.read_items(self.root))
        self.assertCountEqual(records, [
            'wider/0--Parade/a.jpg', 'wider/0--Parade/empty.jpg', 'wider/1--Handshaking/gray.jpg',
            'wider/1--Handshaking/rotated.jpg', 'wider/1--Handshaking/last.jpg',
            'wider/0--Parade/v.jpg'])
        self.assertEqual({k: len(v) for k, v in skips.items()},
                         {'malformed_annotation': 5, 'missing_file': 1, 'corrupt_image': 1})
        self.assertEqual(dropped, {'box_empty': 1, 'box_outside': 1})
        a = records['wider/0--Parade/a.jpg']
        self.assertAllClose(a.boxes, [[10 / 48, 10 / 64, 30 / 48, 30 / 64],
                                      [5 / 48, 30 / 64, 17 / 48, 40 / 64],
                                      [40 / 48, 50 / 64, 1.0, 1.0]])
        self.assertAllEqual(a.ignore, [0, 1, 0])
        self.assertAllEqual(a.landmarks_valid, [0, 0, 0])
        self.assertEqual(records['wider/0--Parade/empty.jpg'].num_faces, 0)
        gray = records['wider/1--Handshaking/gray.jpg']
        self.assertEqual((gray.height, gray.width), (48, 64))
        rotated = records['wider/1--Handshaking/rotated.jpg']
        self.assertEqual((rotated.height, rotated.width), (40, 24))
        self.assertAllClose(rotated.boxes, [[30 / 40, 2 / 24, 38 / 40, 12 / 24]])

    def test_absent_split(self):
        root = make_wider_root(tempfile.mkdtemp(dir=self.get_temp_dir()), with_val=False)
        with self.assertLogs(level='WARNING') as logs:
            raw = list(widerface.read_items(root, splits=('train', 'val')))
        self.assertIn('wider_face_val_bbx_gt.txt', '\n'.join(logs.output))
        self.assertLen(raw, 12)
        with self.assertNoLogs(level='WARNING'):  # said once, not again by each reader
            list(widerface.read_items(root, splits=('train', 'val')))
        with self.assertRaisesRegex(FileNotFoundError, 'wider_face_split'):
            list(widerface.read_items(root, splits=('val',)))
        self.assertEqual(list(widerface.read_items(root, splits=())), [])

    def test_deterministic(self):
        first = [e.source_id for e in widerface.read_items(self.root)
                 if isinstance(e, items.RawItem)]
        second = [e.source_id for e in widerface.read_items(self.root)
                  if isinstance(e, items.RawItem)]
        self.assertEqual(first, second)


if __name__ == '__main__':
    tf.test.main()
