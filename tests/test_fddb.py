"""Tests for preprocess/fddb.py on a tiny official-layout fixture made in code."""

import math
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from preprocess import fddb, items
from tests import image_fixtures as fx

FOLD_01 = """\
2002/08/11/big/img_591
1
20.000000 10.000000 1.570796 32.000000 24.000000  1
2002/08/11/big/img_2
2
10 10 0 10 10  1
30 30 0 100 100  1
2002/08/11/big/bad
1
10 10 0 10 10
2002/08/11/big/missing
1
5 5 0 10 10  1
"""
FOLD_09 = """\
2002/08/12/big/val_img
1
8 6 0 20 20  1
"""
FOLD_10 = """\
2003/01/01/big/zero
1
0 5 0 10 10  1
2003/01/01/big/test_img
1
8 6 0 20 20  1
"""


def make_fddb_root(root):
    """Images are 64 wide x 48 tall; folds 2-8 are absent."""
    pics = os.path.join(root, 'originalPics')
    for name in ('2002/08/11/big/img_591', '2002/08/11/big/img_2', '2002/08/11/big/bad',
                 '2002/08/12/big/val_img'):
        fx.write_jpeg(os.path.join(pics, name + '.jpg'))
    fx.write_cmyk_jpeg(os.path.join(pics, '2003/01/01/big/test_img.jpg'))
    folds = os.path.join(root, 'FDDB-folds')
    os.makedirs(folds)
    for k, text in ((1, FOLD_01), (9, FOLD_09), (10, FOLD_10)):
        with open(os.path.join(folds, f'FDDB-fold-{k:02d}-ellipseList.txt'), 'w') as f:
            f.write(text)
    return root


class EllipseTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.named_parameters(
        ('upright', math.pi / 2, [22, 4, 20, 40]),
        ('lying', 0.0, [12, 14, 40, 20]),
        ('diagonal', math.pi / 4, [32 - math.sqrt(250), 24 - math.sqrt(250),
                                   2 * math.sqrt(250), 2 * math.sqrt(250)]),
    )
    def test_bounding_box(self, angle, expected):
        boxes = fddb.ellipses_to_boxes(np.array([[20, 10, angle, 32, 24, 1]]))
        self.assertAllClose(boxes, [expected], atol=1e-4)

    def test_height_scale_keeps_bottom(self):
        boxes = fddb.ellipses_to_boxes(np.array([[20, 10, math.pi / 2, 32, 24]]), 0.8)
        self.assertAllClose(boxes, [[22, 12, 20, 32]], atol=1e-4)

    def test_empty(self):
        self.assertEqual(fddb.ellipses_to_boxes(np.zeros([0, 6])).shape, (0, 4))

    def test_fold_split(self):
        self.assertEqual([fddb.fold_split(k) for k in range(1, 11)],
                         ['train'] * 8 + ['val', 'test'])


class ReadItemsTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = make_fddb_root(tempfile.mkdtemp(dir=self.get_temp_dir()))

    def test_items_in_fold_order(self):
        with self.assertLogs(level='WARNING'):
            out = list(fddb.read_items(self.root))
        names = [e.source_id if isinstance(e, items.RawItem) else e.reason for e in out]
        self.assertEqual(names, [
            'fddb/2002/08/11/big/img_591.jpg', 'fddb/2002/08/11/big/img_2.jpg',
            'malformed_annotation', 'fddb/2002/08/11/big/missing.jpg',
            'fddb/2002/08/12/big/val_img.jpg', 'malformed_annotation',
            'fddb/2003/01/01/big/test_img.jpg'])
        self.assertEqual([e.split for e in out if isinstance(e, items.RawItem)],
                         ['train', 'train', 'train', 'val', 'test'])
        self.assertIn('expected 6 fields, got 5', out[2].detail)
        self.assertIn('non-positive ellipse radius', out[5].detail)
        self.assertEqual(out[0].origin, fddb.fold_path(self.root, 1) + ':1')
        self.assertEqual(out[0].path,
                         os.path.join(self.root, 'originalPics/2002/08/11/big/img_591.jpg'))

    def test_records_after_encode(self):
        records, skips, dropped = fx.encode_all(fddb.read_items(self.root))
        self.assertLen(records, 4)
        self.assertEqual({k: len(v) for k, v in skips.items()},
                         {'malformed_annotation': 2, 'missing_file': 1})
        self.assertEqual(dropped, {'box_outside': 1})
        self.assertAllClose(records['fddb/2002/08/11/big/img_591.jpg'].boxes,
                            [[4 / 48, 22 / 64, 44 / 48, 42 / 64]], atol=1e-5)
        self.assertAllClose(records['fddb/2002/08/11/big/img_2.jpg'].boxes,
                            [[0, 0, 20 / 48, 20 / 64]], atol=1e-5)
        cmyk = records['fddb/2003/01/01/big/test_img.jpg']
        self.assertEqual((cmyk.height, cmyk.width, cmyk.num_faces), (48, 64, 1))
        self.assertAllEqual(cmyk.landmarks_valid, [0])

    def test_no_folds(self):
        with self.assertRaisesRegex(FileNotFoundError, 'FDDB-folds'):
            list(fddb.read_items(self.get_temp_dir()))


if __name__ == '__main__':
    tf.test.main()
