"""Tests for preprocess/tfds_celeba.py: the fail-fast path and the example conversion.

No download is ever attempted: the unprepared case raises before tfds is asked for anything.
"""

import os
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from preprocess import celeba, items, tfds_celeba

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example():
    """A hand-made numpy example shaped like tfds celeb_a's (aligned 178x218 crop)."""
    names = ('lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y '
             'leftmouth_x leftmouth_y rightmouth_x rightmouth_y').split()
    values = (69, 109, 106, 113, 77, 142, 73, 152, 108, 154)
    return {'image': np.full([218, 178, 3], 100, np.uint8),
            'landmarks': {k: np.int64(v) for k, v in zip(names, values)},
            'attributes': {'Smiling': True}}


class FailFastTest(tf.test.TestCase):

    def test_unprepared_raises_at_call_time(self):
        data_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
        # A stand-in tensorflow_datasets counts what the code asks of it: tfds' builder
        # (whose download_and_prepare retries Google Drive) is never reached.
        fake_tfds = mock.MagicMock()
        with mock.patch.dict(sys.modules, {'tensorflow_datasets': fake_tfds}):
            with self.assertRaisesRegex(FileNotFoundError, r'tfds build celeb_a .*--manual_dir'):
                tfds_celeba.read_items(data_dir)  # no next(): raises on the call itself
        self.assertEqual(fake_tfds.mock_calls, [])
        self.assertEqual(os.listdir(data_dir), [])  # nothing downloaded or created

    def test_unprepared_in_fresh_process_is_fast(self):
        # A fresh interpreter proves tensorflow_datasets is not imported on this path.
        code = ('import sys; from preprocess import tfds_celeba\n'
                'try:\n  tfds_celeba.read_items(sys.argv[1])\n'
                'except FileNotFoundError as e:\n'
                '  print("tensorflow_datasets" in sys.modules, "manual_dir" in str(e))\n')
        out = subprocess.run([sys.executable, '-c', code, self.get_temp_dir()], cwd=REPO,
                             capture_output=True, text=True, timeout=120, check=True)
        self.assertEqual(out.stdout.split(), ['False', 'True'])


class ExampleToItemTest(tf.test.TestCase):

    def test_landmark_rule(self):
        item = tfds_celeba.example_to_item(_example(), 'tfds_celeb_a/train/000000', 'train')
        self.assertIsNone(item.path)
        self.assertEqual(item.pixels.shape, (218, 178, 3))
        self.assertAllEqual(item.landmarks_xy[0, :2], [[69, 109], [106, 113]])
        self.assertAllClose(item.boxes_xywh,
                            celeba.box_from_landmarks(item.landmarks_xy), atol=1e-4)
        record, dropped = items.encode_item(item)
        self.assertEqual(dropped, {})
        self.assertEqual((record.height, record.width), (218, 178))
        self.assertAllEqual(record.landmarks_valid, [1])
        self.assertAllClose(record.landmarks[0, :2], [109 / 218, 69 / 178])
        self.assertAllInRange(record.boxes, 0.0, 1.0)

    def test_bbox_feature_used_when_present(self):
        example = _example()
        example['bbox'] = np.array([0.25, 0.5, 0.75, 1.0], np.float32)  # normalized yxyx
        item = tfds_celeba.example_to_item(example, 'x', 'val')
        self.assertAllClose(item.boxes_xywh, [[89, 54.5, 89, 109]])
        self.assertEqual(item.split, 'val')



class IterateTest(tf.test.TestCase):

    def test_iterate_with_mocked_tfds(self):
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
        with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
            builder = tfds.builder('celeb_a', data_dir=self.get_temp_dir())
            out = list(tfds_celeba._iterate(builder, tfds))  # pylint: disable=protected-access
        self.assertEqual([o.source_id for o in out], [
            'tfds_celeb_a/train/000000', 'tfds_celeb_a/train/000001',
            'tfds_celeb_a/val/000000', 'tfds_celeb_a/val/000001',
            'tfds_celeb_a/test/000000', 'tfds_celeb_a/test/000001'])
        self.assertEqual([o.split for o in out], ['train'] * 2 + ['val'] * 2 + ['test'] * 2)
        for o in out:
            self.assertEqual(o.pixels.shape, (218, 178, 3))
            self.assertEqual(o.boxes_xywh.shape, (1, 4))
            self.assertEqual(o.landmarks_xy.shape, (1, 5, 2))


if __name__ == '__main__':
    tf.test.main()
