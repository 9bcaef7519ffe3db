"""Tests for preprocess/celeba.py on tiny official- and Kaggle-layout files made in code."""

import math
import os
import tempfile

import numpy as np
import tensorflow as tf

from preprocess import celeba, items, record_sources
from tests import image_fixtures as fx

BBOX = """\
6
image_id x_1 y_1 width height
000001.jpg    10   5  30  35
000002.jpg    40  20  30  40
000003.jpg     1   1  10  10
000004.jpg     1   x  10  10
000005.jpg     1   1  10  10
"""
LANDMARKS_HEADER = ('lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y '
                    'leftmouth_x leftmouth_y rightmouth_x rightmouth_y')
LANDMARKS = f"""\
6
{LANDMARKS_HEADER}
000001.jpg 18 15 32 15 25 22 20 30 30 30
000002.jpg 50 30 60 30 55 35 52 45 58 45
000003.jpg 2 2 8 2 5 5 3 8 7 8
000004.jpg 2 2 8 2 5 5 3 8 7 8
000005.jpg 2 2 8 2 5 5 3 8 7
000006.jpg 2 2 8 2 5 5 3 8 7 8
"""
# Real rows of CelebA's list_landmarks_align_celeba.txt (000001) and the mean aligned face.
LANDMARKS_ALIGN = f"""\
2
{LANDMARKS_HEADER}
000001.jpg 69 109 106 113 77 142 73 152 108 154
000002.jpg 69 111 108 111 89 135 72 152 106 152
"""
PARTITION = """\
000001.jpg 0
000002.jpg 1
000003.jpg 2
000004.jpg 0
000005.jpg 0
000006.jpg 0
000007.jpg 5
"""


def make_celeba_root(root):
    """In-the-wild images 64 wide x 48 tall, aligned ones 178 x 218; 000003 is missing."""
    fx.write_jpeg(os.path.join(root, 'img_celeba', '000001.jpg'))
    fx.write_grayscale_jpeg(os.path.join(root, 'img_celeba', '000002.jpg'))
    for name in ('000001.jpg', '000002.jpg'):
        fx.write_jpeg(os.path.join(root, 'img_align_celeba', name), 178, 218)
    os.makedirs(os.path.join(root, 'Anno'))
    os.makedirs(os.path.join(root, 'Eval'))
    for rel, text in (('Anno/list_bbox_celeba.txt', BBOX),
                      ('Anno/list_landmarks_celeba.txt', LANDMARKS),
                      ('Anno/list_landmarks_align_celeba.txt', LANDMARKS_ALIGN),
                      ('Eval/list_eval_partition.txt', PARTITION)):
        with open(os.path.join(root, rel), 'w') as f:
            f.write(text)
    return root


def _as_kaggle_csv(text, official_header=True):
    """An official table as Kaggle ships it: no count line, 'image_id' first, commas."""
    lines = text.splitlines()[1:] if official_header else text.splitlines()
    if official_header and not lines[0].startswith('image_id'):
        lines[0] = 'image_id ' + lines[0]
    return '\n'.join(','.join(line.split()) for line in lines) + '\n'


def make_kaggle_root(root):
    """The Kaggle download of make_celeba_root's aligned crops: nested image folder, .csv."""
    for name in ('000001.jpg', '000002.jpg'):
        fx.write_jpeg(os.path.join(root, 'img_align_celeba', 'img_align_celeba', name), 178, 218)
    for rel, text in (('list_landmarks_align_celeba.csv', _as_kaggle_csv(LANDMARKS_ALIGN)),
                      ('list_bbox_celeba.csv', _as_kaggle_csv(BBOX)),
                      ('list_eval_partition.csv',
                       'image_id,partition\n' + _as_kaggle_csv(PARTITION, official_header=False))):
        with open(os.path.join(root, rel), 'w') as f:
            f.write(text)
    return root


class BoxFromLandmarksTest(tf.test.TestCase):

    def test_mean_aligned_face(self):
        points = np.array([[[69, 111], [108, 111], [89, 135], [72, 152], [106, 152]]])
        x, y, w, h = celeba.box_from_landmarks(points)[0]
        # Eye-mouth distance d: eyes centre (88.5, 111), mouth centre (89, 152).
        d = math.hypot(0.5, 41)
        self.assertAllClose([w, h], [2.0 * d, 2.5 * d])
        self.assertAllClose((111 - y) / h, 0.38, atol=0.01)   # eyes at 38% of the height
        self.assertAllClose((152 - y) / h, 0.78, atol=0.01)   # mouth at 78%
        self.assertAllClose(x + w / 2, 89, atol=1)            # centred in the 178-px crop
        self.assertTrue(0 <= x and x + w <= 178 and 0 <= y and y + h <= 218)
        self.assertAllClose([x, y, x + w, y + h], [47.6, 72.1, 129.7, 174.6], atol=0.2)

    def test_tilted_face_uses_distance(self):
        points = np.array([[[0, 0], [10, 0], [5, 5], [0, 30], [10, 40]]], np.float64)
        box = celeba.box_from_landmarks(points)[0]
        d = math.hypot(0, 35)
        self.assertAllClose(box, [5 - d, 10.5 - 1.25 * d, 2 * d, 2.5 * d])


class ReadItemsTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = make_celeba_root(tempfile.mkdtemp(dir=self.get_temp_dir()))

    def test_in_the_wild_stream(self):
        out = list(celeba.read_items(self.root))
        self.assertLen(out, 7)
        raw = [e for e in out if isinstance(e, items.RawItem)]
        self.assertEqual([r.source_id for r in raw],
                         ['celeba/000001.jpg', 'celeba/000002.jpg', 'celeba/000003.jpg'])
        self.assertEqual([r.split for r in raw], ['train', 'val', 'test'])
        first = raw[0]
        self.assertEqual(first.path, os.path.join(self.root, 'img_celeba', '000001.jpg'))
        self.assertAllEqual(first.boxes_xywh, [[10, 5, 30, 35]])
        # Point 0 is CelebA's lefteye, the smaller-x eye.
        self.assertAllEqual(first.landmarks_xy[0, 0], [18, 15])
        self.assertAllEqual(first.landmarks_xy[0, 1], [32, 15])
        self.assertEqual(first.origin, os.path.join(self.root, 'Anno/list_bbox_celeba.txt') + ':3')
        skips = [e.detail for e in out if isinstance(e, items.SkipItem)]
        self.assertIn('list_bbox_celeba.txt:6: non-numeric field', skips[0])
        self.assertIn('list_landmarks_celeba.txt:7: expected 11 fields, got 10', skips[1])
        self.assertIn('list_eval_partition.txt:6: image has no row in', skips[2])
        self.assertIn('list_bbox_celeba.txt', skips[2])
        self.assertIn('list_eval_partition.txt:7', skips[3])

    def test_in_the_wild_records(self):
        records, skips, dropped = fx.encode_all(celeba.read_items(self.root))
        self.assertEqual({k: len(v) for k, v in skips.items()},
                         {'malformed_annotation': 4, 'missing_file': 1})
        self.assertEqual(dropped, {})
        one = records['celeba/000001.jpg']
        self.assertAllClose(one.boxes, [[5 / 48, 10 / 64, 40 / 48, 40 / 64]])
        self.assertAllEqual(one.landmarks_valid, [1])
        self.assertAllClose(one.landmarks[0, :4], [15 / 48, 18 / 64, 15 / 48, 32 / 64])
        two = records['celeba/000002.jpg']  # grayscale, box clipped to the image
        self.assertAllClose(two.boxes, [[20 / 48, 40 / 64, 1.0, 1.0]])

    def test_aligned(self):
        out = list(celeba.read_items(self.root, aligned=True))
        raw = [e for e in out if isinstance(e, items.RawItem)]
        # The aligned landmark file lists 000001 and 000002 only: 000003-6 have no row.
        self.assertEqual([r.source_id for r in raw],
                         ['celeba_align/000001.jpg', 'celeba_align/000002.jpg'])
        d = math.hypot(3, 42)  # 000001: eyes centre (87.5, 111), mouth centre (90.5, 153)
        self.assertAllClose(raw[0].boxes_xywh,
                            [[88.4 - d, 123.6 - 1.25 * d, 2 * d, 2.5 * d]], atol=1e-3)
        records, skips, _ = fx.encode_all(iter(out))
        self.assertEqual({k: len(v) for k, v in skips.items()}, {'malformed_annotation': 5})
        rec = records['celeba_align/000001.jpg']
        self.assertEqual((rec.height, rec.width), (218, 178))
        self.assertAllInRange(rec.boxes, 0.0, 1.0)

    def test_ignore_unlabelled(self):
        records, _, dropped = fx.encode_all(celeba.read_items(self.root, ignore_unlabelled=True))
        self.assertEqual(dropped, {})
        one = records['celeba/000001.jpg']
        self.assertAllClose(one.boxes, [[5 / 48, 10 / 64, 40 / 48, 40 / 64], [0, 0, 1, 1]])
        self.assertAllEqual(one.ignore, [0, 1])
        self.assertAllEqual(one.landmarks_valid, [1, 0])

    def test_wrong_header(self):
        with open(os.path.join(self.root, 'Anno/list_bbox_celeba.txt'), 'w') as f:
            f.write('1\nname a b c d\n000001.jpg 1 1 1 1\n')
        with self.assertRaisesRegex(ValueError, 'image_id'):
            list(celeba.read_items(self.root))

    def test_a_quota_page_as_the_table_is_one_line_from_make_records(self):
        # What Google Drive saves when the CelebA download is over its quota.
        with open(os.path.join(self.root, 'Anno/list_bbox_celeba.txt'), 'w') as f:
            f.write('<html><head><title>Google Drive - Quota exceeded</title></head></html>\n')
        config = record_sources.Config(output_dir=tempfile.mkdtemp(), sources=('celeba',),
                                       celeba_dir=self.root, progress=False)
        with self.assertRaisesRegex(record_sources.ConfigError,
                                    r'list_bbox_celeba.txt:2: expected a header .*Quota exceeded'):
            record_sources.make_records(config)

    def test_missing_table(self):
        os.remove(os.path.join(self.root, 'Anno/list_landmarks_celeba.txt'))
        with self.assertRaisesRegex(FileNotFoundError, 'list_landmarks_celeba'):
            list(celeba.read_items(self.root))


class LayoutTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.official = make_celeba_root(tempfile.mkdtemp(dir=self.get_temp_dir()))
        self.kaggle = make_kaggle_root(tempfile.mkdtemp(dir=self.get_temp_dir()))

    def test_kaggle_aligned_reads_as_the_official_files(self):
        self.assertEqual(celeba.find_layout(self.kaggle, aligned=True).name, 'kaggle')
        self.assertEqual(celeba.find_layout(self.official, aligned=True).name, 'official')
        kaggle = list(celeba.read_items(self.kaggle, aligned=True))
        official = list(celeba.read_items(self.official, aligned=True))
        self.assertEqual([type(e) for e in kaggle], [type(e) for e in official])
        raw = [(k, o) for k, o in zip(kaggle, official) if isinstance(k, items.RawItem)]
        self.assertLen(raw, 2)
        for k, o in raw:
            self.assertEqual((k.source_id, k.split), (o.source_id, o.split))
            self.assertAllClose(k.boxes_xywh, o.boxes_xywh)
            self.assertAllClose(k.landmarks_xy, o.landmarks_xy)
        self.assertEqual(raw[0][0].path, os.path.join(
            self.kaggle, 'img_align_celeba', 'img_align_celeba', '000001.jpg'))
        self.assertEqual(raw[0][0].origin,
                         os.path.join(self.kaggle, 'list_landmarks_align_celeba.csv') + ':2')
        records, skips, _ = fx.encode_all(iter(kaggle))
        self.assertEqual(sorted(records), ['celeba_align/000001.jpg', 'celeba_align/000002.jpg'])
        self.assertEqual({k: len(v) for k, v in skips.items()}, {'malformed_annotation': 5})

    def test_kaggle_in_the_wild_names_celeba_aligned(self):
        config = record_sources.Config(output_dir=os.path.join(self.kaggle, 'out'),
                                       sources=('celeba',), celeba_dir=self.kaggle)
        with self.assertRaises(record_sources.ConfigError) as e:
            record_sources.make_records(config)
        message = str(e.exception)
        self.assertNotIn('\n', message)
        self.assertIn(f'{self.kaggle} is the Kaggle layout, which ships only the aligned crops', message)
        self.assertIn('--source=celeba_aligned', message)

    def test_other_folder_lists_what_it_found_and_needs(self):
        other = tempfile.mkdtemp(dir=self.get_temp_dir())
        os.makedirs(os.path.join(other, 'photos'))
        open(os.path.join(other, 'labels.txt'), 'w').close()
        with self.assertRaises(FileNotFoundError) as e:
            list(celeba.read_items(other, aligned=True))
        message = str(e.exception)
        self.assertNotIn('\n', message)
        self.assertIn(f'{other} is in neither layout: found labels.txt, photos;', message)
        self.assertIn('official layout needs Anno/list_landmarks[_align]_celeba.txt', message)
        self.assertIn('Kaggle layout needs list_landmarks_align_celeba.csv', message)


if __name__ == '__main__':
    tf.test.main()
