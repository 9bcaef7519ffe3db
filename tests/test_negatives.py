"""Tests for preprocess/negatives.py: generated, cropped and folder negatives."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from preprocess import negatives
from preprocess.items import RawItem, SkipItem

_SHARED_NO_FACES = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'no_faces')


def _crop_of(raw: RawItem):
    """The (x, y, w, h) a crop's source id ends with."""
    return tuple(int(v) for v in raw.source_id.rsplit('@', 1)[1].split(','))


def _positive(source_id='t/a', width=160, height=120, boxes=((10, 10, 30, 40), (100, 60, 40, 40)),
              ignore=None, seed=0, path=None):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return RawItem(source_id=source_id, path=path, boxes_xywh=np.asarray(boxes, np.float32).reshape(-1, 4),
                   ignore=ignore, split='val', pixels=None if path else pixels), pixels


class GeneratedTest(tf.test.TestCase):

    def test_deterministic_face_free(self):
        a = list(negatives.generated_negatives(6, seed=1, split='train', min_side=48, max_side=64))
        b = list(negatives.generated_negatives(6, seed=1, split='train', min_side=48, max_side=64))
        c = list(negatives.generated_negatives(6, seed=2, split='train', min_side=48, max_side=64))
        self.assertLen(a, 6)
        for x, y, z in zip(a, b, c):
            np.testing.assert_array_equal(x.pixels, y.pixels)
            self.assertFalse(x.pixels.shape == z.pixels.shape and np.array_equal(x.pixels, z.pixels))
            self.assertEqual(x.boxes_xywh.shape, (0, 4))
            self.assertEqual(x.split, 'train')
            self.assertEqual(x.pixels.dtype, np.uint8)
            self.assertBetween(x.pixels.shape[0], 48, 64)
            self.assertTrue(x.source_id.startswith('negatives_generated/'))

    def test_specs_are_lazy_and_equal(self):
        spec = list(negatives.generated_negative_specs(3, 1, 'val'))[2]
        item = list(negatives.generated_negatives(3, 1, 'val'))[2]
        self.assertEqual(spec.source_id, item.source_id)
        np.testing.assert_array_equal(spec.to_raw_item().pixels, item.pixels)


class CropsTest(tf.test.TestCase, parameterized.TestCase):

    def test_crops_touch_no_face_ignored_included(self):
        parent, pixels = _positive(boxes=((10, 10, 30, 40), (100, 60, 40, 40), (60, 5, 20, 20)),
                                   ignore=[False, False, True])
        crops = list(negatives.crops_away_from_faces([parent], num_per_image=5, seed=0))
        self.assertLen(crops, 5)
        boxes = parent.boxes_xywh
        for k, crop in enumerate(crops):
            raw = crop.to_raw_item()
            x, y, w, h = _crop_of(raw)
            self.assertEqual(raw.boxes_xywh.shape, (0, 4))
            self.assertEqual(raw.split, 'val')
            self.assertGreaterEqual(min(w, h), 32)
            np.testing.assert_array_equal(raw.pixels, pixels[y:y + h, x:x + w])
            for bx, by, bw, bh in boxes:
                overlap = min(x + w, bx + bw) > max(x, bx) and min(y + h, by + bh) > max(y, by)
                self.assertFalse(overlap, f'crop {k} {(x, y, w, h)} hits box {(bx, by, bw, bh)}')

    def test_loads_from_file(self):
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'a.png')
        parent, pixels = _positive(path=path)
        Image.fromarray(pixels).save(path)
        raw = next(negatives.crops_away_from_faces([parent], 1, seed=3)).to_raw_item()
        x, y, w, h = _crop_of(raw)
        np.testing.assert_array_equal(raw.pixels, pixels[y:y + h, x:x + w])

    def test_no_room_is_a_skip(self):
        parent, _ = _positive(boxes=[(0, 0, 160, 120)])
        crop = next(negatives.crops_away_from_faces([parent], 1, seed=0))
        with self.assertRaises(SkipItem) as ctx:
            crop.to_raw_item()
        self.assertEqual(ctx.exception.reason, 'no_face_free_crop')

    @parameterized.parameters((0.0, 0, 0), (2.0, 40, 40), (0.5, 8, 32))
    def test_count_per_image(self, per_image, low, high):
        parents = [_positive(source_id=f't/{i}')[0] for i in range(20)]
        parents.insert(3, SkipItem('malformed_annotation', 'f.txt:3: x'))  # passed over
        n = len(list(negatives.crops_away_from_faces(parents, per_image, seed=0)))
        self.assertBetween(n, low, high)

    def test_deterministic(self):
        parent, _ = _positive()
        a = [c.to_raw_item().source_id for c in negatives.crops_away_from_faces([parent], 3, 7)]
        b = [c.to_raw_item().source_id for c in negatives.crops_away_from_faces([parent], 3, 7)]
        self.assertEqual(a, b)


class FolderTest(tf.test.TestCase):

    def test_labels_jsonl(self):
        root = tempfile.mkdtemp(dir=self.get_temp_dir())
        lines = ['{"image": "images/a.jpg", "boxes": []}', 'not json',
                 '{"image": "images/b.jpg", "boxes": [[1, 2, 3, 4]]}', '',
                 '{"image": "images/c.jpg", "boxes": []}']
        with open(os.path.join(root, 'labels.jsonl'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        out = list(negatives.folder_negatives(root, lambda name: 'val' if 'c.jpg' in name else 'train'))
        raws = [o for o in out if isinstance(o, RawItem)]
        skips = [o for o in out if isinstance(o, SkipItem)]
        self.assertEqual([r.path for r in raws], [os.path.join(root, 'images/a.jpg'), os.path.join(root, 'images/c.jpg')])
        self.assertEqual([r.split for r in raws], ['train', 'val'])
        self.assertTrue(all(r.boxes_xywh.shape == (0, 4) for r in raws))
        self.assertEqual([s.reason for s in skips], ['malformed_annotation', 'not_face_free'])
        self.assertIn('labels.jsonl:2', skips[0].detail)
        self.assertIn('labels.jsonl:3', skips[1].detail)

    def test_plain_folder_sorted_recursive(self):
        root = tempfile.mkdtemp(dir=self.get_temp_dir())
        os.makedirs(os.path.join(root, 'sub'))
        for name in ('b.jpg', 'a.PNG', 'sub/c.jpeg', 'notes.txt'):
            with open(os.path.join(root, name), 'wb') as f:
                f.write(b'x')
        out = list(negatives.folder_negatives(root, negatives.hash_split(0.0)))
        self.assertEqual([os.path.relpath(r.path, root) for r in out], ['a.PNG', 'b.jpg', 'sub/c.jpeg'])
        self.assertTrue(all(r.split == 'train' for r in out))

    def test_hash_split_stable(self):
        rule = negatives.hash_split(0.3)
        names = [f'img{i}.jpg' for i in range(200)]
        splits = [rule(n) for n in names]
        self.assertEqual(splits, [rule(n) for n in names])
        self.assertBetween(splits.count('val'), 30, 90)

    def test_shared_no_faces(self):
        if not os.path.exists(os.path.join(_SHARED_NO_FACES, 'labels.jsonl')):
            self.skipTest('shared/data/no_faces not present')
        out = list(negatives.folder_negatives(_SHARED_NO_FACES, negatives.hash_split(0.1)))
        self.assertTrue(all(isinstance(o, RawItem) for o in out))
        self.assertLen(out, 200)
        self.assertTrue(all(os.path.exists(o.path) for o in out[:5]))


if __name__ == '__main__':
    tf.test.main()
