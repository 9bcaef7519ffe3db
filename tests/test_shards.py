"""Tests for preprocess/shards.py: naming, round-robin, counts, strict mode, resume."""

import glob
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from data import features
from preprocess import shards
from preprocess.items import RawItem, SkipItem

_MATERIALIZED = []  # ids of lazy items turned into RawItems (in-process writer only)


class _LazyItem:
    """A lazy item that records when it is loaded."""

    def __init__(self, item):
        self.item = item
        self.source_id = item.source_id

    def to_raw_item(self):
        _MATERIALIZED.append(self.source_id)
        return self.item


def _item(k: int, num_faces: int = None) -> RawItem:
    """Image k: 40x32 px, k % 3 faces at known places (face 0 ignored when k % 4 == 0)."""
    n = k % 3 if num_faces is None else num_faces
    boxes = np.array([[2 + 10 * j, 3 + k % 5, 8, 9] for j in range(n)], np.float32).reshape(-1, 4)
    pixels = np.full([32, 40, 3], 10 * k % 256, np.uint8)
    ignore = np.zeros([n], bool)
    if n and k % 4 == 0:
        ignore[0] = True
    return RawItem(source_id=f'src{k % 2}/img{k:03d}', path=None, boxes_xywh=boxes, ignore=ignore,
                   pixels=pixels, origin=f'list.txt:{k + 1}')


def _read(path):
    return [features.parse_example(s, decode_image=False)
            for s in tf.data.TFRecordDataset(path).as_numpy_iterator()]


class ShardsTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.out = tempfile.mkdtemp(dir=self.get_temp_dir())

    @parameterized.parameters(1, 2)
    def test_round_robin_names_and_values(self, num_workers):
        items = [_item(k) for k in range(8)]
        stats = shards.write_shards(lambda: iter(items), self.out, 'train', 3,
                                    num_workers=num_workers, progress=False)
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.out, '*')))
        self.assertEqual(names, ['train-00000-of-00003.tfrecord', 'train-00001-of-00003.tfrecord',
                                 'train-00002-of-00003.tfrecord'])
        self.assertEqual(stats.shards, shards.shard_paths(self.out, 'train', 3))
        for i, path in enumerate(stats.shards):
            parsed = _read(path)
            expected = items[i::3]
            self.assertEqual([p['source_id'].numpy().decode() for p in parsed],
                             [e.source_id for e in expected])
            for p, e in zip(parsed, expected):
                self.assertEqual((int(p['height']), int(p['width'])), (32, 40))
                self.assertAllClose(p['boxes'].numpy(),
                                    np.stack([e.boxes_xywh[:, 1] / 32, e.boxes_xywh[:, 0] / 40,
                                              (e.boxes_xywh[:, 1] + 9) / 32,
                                              (e.boxes_xywh[:, 0] + 8) / 40], -1).reshape(-1, 4))
                self.assertAllEqual(p['ignore'].numpy(), e.ignore)
        self.assertEqual(stats.images, 8)
        self.assertEqual(stats.faces, sum(k % 3 for k in range(8)))
        self.assertEqual(stats.ignored_faces, 1)  # k=4 (k=0 has no face)
        self.assertEqual(stats.by_source, {'src0': {'images': 4, 'faces': 3}, 'src1': {'images': 4, 'faces': 4}})
        self.assertEqual(glob.glob(os.path.join(self.out, '*.tmp')), [])

    def test_parallel_equals_serial(self):
        def make():
            return (_item(k) for k in range(7))
        a = shards.write_shards(make, os.path.join(self.out, 'a'), 'val', 2, num_workers=1, progress=False)
        b = shards.write_shards(make, os.path.join(self.out, 'b'), 'val', 2, num_workers=2,
                                max_in_flight=2, progress=False)
        for pa, pb in zip(a.shards, b.shards):
            with open(pa, 'rb') as fa, open(pb, 'rb') as fb:
                self.assertEqual(fa.read(), fb.read())

    def test_more_shards_than_items_gives_empty_shards(self):
        stats = shards.write_shards(lambda: [_item(1)], self.out, 'test', 3, progress=False)
        self.assertEqual([len(_read(p)) for p in stats.shards], [1, 0, 0])

    def test_skips_counted_with_file_and_line(self):
        def make():
            yield _item(1)
            yield SkipItem('malformed_annotation', 'gt.txt:7: 1 2 three')
            yield RawItem(source_id='src0/missing', path='/nonexistent/x.jpg',
                          boxes_xywh=np.zeros([0, 4]), origin='gt.txt:9')
            yield RawItem(source_id='src0/outside', path=None, boxes_xywh=[[50, 50, 5, 5], [1, 1, 4, 4]],
                          pixels=np.zeros([20, 20, 3], np.uint8))
        stats = shards.write_shards(make, self.out, 'train', 2, progress=False)
        self.assertEqual(stats.images, 2)
        self.assertEqual(stats.skipped, {'malformed_annotation': 1, 'missing_file': 1})
        self.assertEqual(stats.dropped, {'box_outside': 1})
        self.assertEqual(stats.problems[0], 'malformed_annotation: gt.txt:7: 1 2 three')
        self.assertIn('gt.txt:9', stats.problems[1])
        self.assertIn('/nonexistent/x.jpg', stats.problems[1])

    def test_strict_names_the_item(self):
        def make():
            yield _item(1)
            yield RawItem(source_id='src0/missing', path='/nonexistent/x.jpg',
                          boxes_xywh=np.zeros([0, 4]), origin='gt.txt:9')
        with self.assertRaisesRegex(shards.StrictError, r'src0/missing.*missing_file.*gt\.txt:9'):
            shards.write_shards(make, self.out, 'train', 1, strict=True, progress=False)
        self.assertFalse(os.path.exists(shards.shard_paths(self.out, 'train', 1)[0]))

    def test_resume_rewrites_only_the_missing_shard(self):
        items = [_LazyItem(_item(k)) for k in range(9)]
        first = shards.write_shards(lambda: iter(items), self.out, 'train', 3, progress=False)
        paths = first.shards
        before = {p: (os.stat(p).st_mtime_ns, open(p, 'rb').read()) for p in paths}
        # Simulate a kill while shard 1 was being written: it is gone and its temp file is half written.
        os.remove(paths[1])
        with open(paths[1] + '.tmp', 'wb') as f:
            f.write(b'half a record')
        del _MATERIALIZED[:]
        second = shards.write_shards(lambda: iter(items), self.out, 'train', 3, progress=False)
        self.assertEqual(sorted(_MATERIALIZED), sorted(i.source_id for i in items[1::3]))
        for p in (paths[0], paths[2]):
            self.assertEqual((os.stat(p).st_mtime_ns, open(p, 'rb').read()), before[p])
        self.assertEqual(open(paths[1], 'rb').read(), before[paths[1]][1])
        self.assertFalse(os.path.exists(paths[1] + '.tmp'))
        ids = [p['source_id'].numpy().decode() for path in paths for p in _read(path)]
        self.assertEqual(sorted(ids), sorted(i.source_id for i in items))  # no duplicate
        self.assertEqual((second.images, second.faces, second.by_source),
                         (first.images, first.faces, first.by_source))
        self.assertEqual([os.path.basename(p) for p in second.reused_shards],
                         [os.path.basename(paths[0]), os.path.basename(paths[2])])
        # Nothing missing: nothing is loaded, the counts come back from the saved stats.
        del _MATERIALIZED[:]
        third = shards.write_shards(lambda: iter(items), self.out, 'train', 3, progress=False)
        self.assertEqual(_MATERIALIZED, [])
        self.assertEqual(third.images, 9)

    def test_changing_item_stream_is_an_error(self):
        calls = []

        def make():
            calls.append(1)
            return [_item(k) for k in range(3 + len(calls))]
        with self.assertRaisesRegex(RuntimeError, 'not deterministic'):
            shards.write_shards(make, self.out, 'train', 2, progress=False)

    def test_stats_merge(self):
        a = shards.WriteStats()
        a.add_record('x', 2, 1, {'box_empty': 1})
        b = shards.WriteStats()
        b.add_record('x', 1, 0, {'box_empty': 2, 'box_outside': 1})
        b.add_skip('missing_file', 'f:1: x')
        a.merge(b)
        self.assertEqual((a.images, a.faces, a.ignored_faces), (2, 3, 1))
        self.assertEqual(a.dropped, {'box_empty': 3, 'box_outside': 1})
        self.assertEqual(a.by_source, {'x': {'images': 2, 'faces': 3}})
        self.assertEqual(shards.WriteStats.from_dict(a.to_dict()), a)


if __name__ == '__main__':
    tf.test.main()
