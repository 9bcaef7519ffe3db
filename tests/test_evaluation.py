"""Tests for evaluation.wider, evaluation.labels and evaluation.plots on hand-computed cases."""

import json
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from data import boxes as box_lib
from data import features
from evaluation import labels as label_lib
from evaluation import plots
from evaluation import wider

FACE_A = [10, 10, 20, 20]   # pixel xywh
FACE_B = [100, 10, 20, 20]
NEAR_A = [12, 10, 20, 20]   # IoU with A = 360 / 440 = 0.818
MISS = [300, 300, 20, 20]   # overlaps nothing


def image(gt, dets, scores, ignore=None):
    out = {'gt_boxes': np.array(gt, np.float32).reshape(-1, 4),
           'det_boxes': np.array(dets, np.float32).reshape(-1, 4),
           'det_scores': np.array(scores, np.float32)}
    if ignore is not None:
        out['gt_ignore'] = np.array(ignore, bool)
    return out


class WiderTest(tf.test.TestCase, parameterized.TestCase):

    def test_perfect_detector(self):
        r = wider.evaluate([image([FACE_A, FACE_B], [FACE_B, FACE_A], [0.9, 0.8])])
        self.assertAllClose(r.ap, 1.0)
        self.assertAllClose(r.recall, [0.5, 1.0])
        self.assertAllClose(r.precision, [1.0, 1.0])
        self.assertAllClose(r.thresholds, [0.9, 0.8])
        self.assertEqual((r.num_faces, r.num_detections), (2, 2))

    def test_one_of_two_faces_found(self):
        r = wider.evaluate([image([FACE_A, FACE_B], [NEAR_A], [0.7])])
        self.assertAllClose(r.ap, 0.5)
        self.assertAllClose(r.recall_at(0.5), 0.5)
        self.assertAllClose(r.precision_at(0.5), 1.0)

    def test_duplicate_is_false_positive(self):
        # TP(A) 0.9, duplicate on A 0.8, TP(B) 0.7: points (0.5, 1), (0.5, 1/2), (1, 2/3).
        # AP = 0.5 * 1 + 0.5 * 2/3.
        r = wider.evaluate([image([FACE_A, FACE_B], [FACE_A, NEAR_A, FACE_B], [0.9, 0.8, 0.7])])
        self.assertAllClose(r.precision, [1.0, 0.5, 2 / 3])
        self.assertAllClose(r.recall, [0.5, 0.5, 1.0])
        self.assertAllClose(r.ap, 0.5 + 1 / 3)

    def test_ignored_face(self):
        # The detection on the ignored face counts neither way; it is not in the denominator.
        r = wider.evaluate([image([FACE_A, FACE_B], [FACE_B, FACE_A], [0.95, 0.9],
                                  ignore=[True, False])])
        self.assertAllClose(r.ap, 1.0)
        self.assertEqual((r.num_faces, r.num_ignored_faces), (1, 1))
        self.assertEqual((r.num_detections, r.num_ignored_detections), (2, 1))
        self.assertAllClose(r.thresholds, [0.95])

    def test_free_valid_face_preferred_over_ignored(self):
        # Overlaps the ignored face best (IoU 1) but also A at 0.818: a TP on A.
        r = wider.evaluate([image([FACE_A, NEAR_A], [NEAR_A], [0.9], ignore=[False, True])])
        self.assertAllClose(r.ap, 1.0)

    @parameterized.parameters((0.0, 1.0, 2), (10.0, 1.0, 1), (30.0, float('nan'), 0))
    def test_min_face_ignores_by_height(self, min_face, ap, num_faces):
        small = [200, 200, 40, 6]  # wide but short: ignored once min_face > 6
        r = wider.evaluate([image([FACE_A, small], [FACE_A, small], [0.9, 0.8])],
                           min_face=min_face)
        self.assertEqual(r.num_faces, num_faces)
        self.assertAllClose(r.ap, ap)

    def test_size_band(self):
        small, large = [10, 10, 12, 12], [100, 100, 50, 50]
        stray = [300, 300, 50, 50]  # a 50 px false positive, the highest score
        img = image([small, large], [stray, small, large], [0.95, 0.9, 0.7])

        def band(low, high, band_detections=True):
            acc = wider.Accumulator(0.5, low, high, band_detections)
            acc.add(img)
            return acc.result()

        # 10-24 px: the stray and the large face's detection are another band's business.
        r = band(10, 24)
        self.assertEqual((r.num_faces, r.num_ignored_faces), (1, 1))
        self.assertEqual(r.num_ignored_detections, 2)
        self.assertAllClose(r.ap, 1.0)
        # Without the detection rule the stray 50 px box is a false positive ranked first.
        self.assertAllClose(band(10, 24, band_detections=False).ap, 0.5)
        # >= 24 px: the stray counts (it is this band's size) and ranks above the hit.
        r = band(24, np.inf)
        self.assertEqual(r.num_faces, 1)
        self.assertAllClose(r.precision, [0.0, 0.5])
        self.assertAllClose(r.ap, 0.5)
        self.assertEqual(wider.size_bands([16, 24], min_face=10),
                         [(10.0, 16.0), (16.0, 24.0), (24.0, np.inf)])
        self.assertEqual(wider.size_bands([8, 16], min_face=10), [(10.0, 16.0), (16.0, np.inf)])
        self.assertEqual(wider.band_name(24, np.inf), '>= 24 px')

    def test_degenerate_box_is_ignored(self):
        # WIDER's face-free entry is one all-zero row.
        r = wider.evaluate([image([[0, 0, 0, 0]], [], [])])
        self.assertEqual((r.num_faces, r.num_ignored_faces, r.num_face_free_images), (0, 1, 1))

    def test_face_free_image_with_false_positive(self):
        images = [image([FACE_A], [FACE_A], [0.8]), image([], [MISS, MISS], [0.9, 0.3])]
        r = wider.evaluate(images)
        # FP 0.9, TP 0.8, FP 0.3: points (0, 0), (1, 1/2), (1, 1/3) -> AP 0.5.
        self.assertAllClose(r.ap, 0.5)
        self.assertEqual(r.num_face_free_images, 1)
        self.assertAllClose(r.false_positives_per_face_free_image(0.5), 1.0)
        self.assertAllClose(r.false_positives_per_face_free_image(0.0), 2.0)
        self.assertAllClose(wider.false_positives_per_image(images, 0.5), 1.0)

    def test_scores_are_pooled_across_images(self):
        # Image 1's weak TP ranks below image 2's strong FP: AP 0.5, not 1.
        r = wider.evaluate([image([FACE_A], [FACE_A], [0.3]), image([FACE_B], [MISS], [0.9])])
        self.assertAllClose(r.ap, 0.25)  # 2 faces: recall 0.5 at precision 1/2
        r = wider.evaluate([image([FACE_A], [FACE_A], [0.3]), image([], [MISS], [0.9])])
        self.assertAllClose(r.ap, 0.5)

    def test_interpolation_uses_best_precision_to_the_right(self):
        # FP 0.9, TP 0.8, TP 0.7 on 2 faces: raw points (0, 0), (0.5, 1/2), (1, 2/3);
        # interpolated precision is 2/3 on all of [0, 1], so AP = 2/3 (raw area: 0.583).
        r = wider.evaluate([image([FACE_A, FACE_B], [MISS, FACE_A, FACE_B], [0.9, 0.8, 0.7])])
        self.assertAllClose(r.ap, 2 / 3)

    def test_tied_scores_give_one_point(self):
        images = [image([FACE_A], [FACE_A], [0.5]), image([FACE_B], [MISS], [0.5])]
        r = wider.evaluate(images)
        self.assertAllClose(r.thresholds, [0.5])
        self.assertAllClose(r.ap, 0.25)
        self.assertAllClose(wider.evaluate(images[::-1]).ap, 0.25)

    def test_thresholded_metrics(self):
        r = wider.evaluate([image([FACE_A, FACE_B], [FACE_A, MISS, FACE_B], [0.9, 0.6, 0.4])])
        self.assertAllClose(r.recall_at(0.95), 0.0)
        self.assertTrue(np.isnan(r.precision_at(0.95)))
        self.assertAllClose(r.recall_at(0.6), 0.5)
        self.assertAllClose(r.precision_at(0.6), 0.5)
        self.assertAllClose(r.recall_at(0.0), 1.0)
        self.assertAllClose(r.precision_at(0.0), 2 / 3)

    def test_empty(self):
        r = wider.evaluate([])
        self.assertTrue(np.isnan(r.ap))
        self.assertEqual(len(r.thresholds), 0)

    def test_accumulator_equals_batch(self):
        rng = np.random.default_rng(0)
        images = []
        for _ in range(20):
            n, m = rng.integers(0, 5), rng.integers(0, 8)
            gt = np.concatenate([rng.uniform(0, 80, [n, 2]), rng.uniform(4, 30, [n, 2])], 1)
            jitter = rng.normal(0, 3, [m, 4])
            det = (gt[rng.integers(0, n, m)] + jitter) if n else rng.uniform(0, 50, [m, 4])
            det[:, 2:] = np.abs(det[:, 2:]) + 1
            images.append(image(gt, det, rng.uniform(size=m), ignore=rng.uniform(size=n) < 0.2))
        batch = wider.evaluate(images, min_face=8)
        acc = wider.Accumulator(min_face=8)
        for i, im in enumerate(images):
            acc.add_image(im['gt_boxes'], im['det_boxes'], im['det_scores'], im['gt_ignore'])
            if i == 9:
                self.assertEqual(acc.result().num_images, 10)  # a result mid-way is fine
        streamed = acc.result()
        self.assertGreater(batch.ap, 0.0)
        self.assertAllClose(streamed.ap, batch.ap)
        self.assertAllClose(streamed.precision, batch.precision)
        self.assertAllClose(streamed.recall, batch.recall)
        self.assertEqual(streamed.summary(0.5), batch.summary(0.5))

    def test_average_precision_by_hand(self):
        self.assertAllClose(wider.average_precision([0.25, 0.5, 0.75], [1.0, 0.5, 0.6]),
                            0.25 * 1.0 + 0.5 * 0.6)


def _write_jsonl(path, rows):
    with open(path, 'w') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')


class LabelsTest(tf.test.TestCase):

    def test_jsonl_labels_keyed_by_absolute_path(self):
        root = self.get_temp_dir()
        path = os.path.join(root, 'labels.jsonl')
        _write_jsonl(path, [{'image': 'images/a.jpg', 'width': 64, 'height': 64,
                             'boxes': [FACE_A, FACE_B], 'ignore': [0, 1]},
                            {'image': 'images/b.jpg', 'width': 64, 'height': 64, 'boxes': []}])
        gt = label_lib.load_labels(path)
        boxes, ignore, _ = gt[os.path.join(root, 'images', 'a.jpg')]
        self.assertAllClose(boxes, [FACE_A, FACE_B])
        self.assertAllEqual(ignore, [False, True])
        self.assertEqual(gt[os.path.join(root, 'images', 'b.jpg')][0].shape, (0, 4))

    def test_wider_gt_file(self):
        path = os.path.join(self.get_temp_dir(), 'wider_face_val_bbx_gt.txt')
        with open(path, 'w') as f:
            f.write('0--Parade/a.jpg\n2\n10 10 20 20 0 0 0 0 0 0 \n5 5 3 3 2 0 0 1 0 0 \n'
                    '1--Handshaking/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n'
                    '2--Demonstration/bad.jpg\nxx\n')
        skipped = []
        gt = label_lib.load_labels(path, skipped)
        self.assertNotEmpty(skipped)  # the parser's messages; it may resync more than once
        self.assertIn('wider_face_val_bbx_gt.txt:9: bad face count for 2--Demonstration/bad.jpg',
                      skipped[0])
        self.assertEqual(sorted(gt), ['0--Parade/a.jpg', '1--Handshaking/b.jpg'])
        boxes, ignore, _ = gt['0--Parade/a.jpg']
        self.assertAllClose(boxes, [FACE_A, [5, 5, 3, 3]])
        self.assertAllEqual(ignore, [False, True])
        r = wider.evaluate([image(*gt[k][:1], [], [], gt[k][1]) for k in sorted(gt)])
        self.assertEqual((r.num_faces, r.num_face_free_images), (1, 1))

    def test_tfrecord_labels(self):
        path = os.path.join(self.get_temp_dir(), 'val-00000-of-00001.tfrecord')
        pixels = np.zeros([40, 80, 3], np.uint8)
        with tf.io.TFRecordWriter(path) as w:
            for sid, faces in (('wider/x/a.jpg', [[4, 8, 20, 10]]), ('neg/b.jpg', [])):
                rec = features.FaceRecord(
                    sid, features.encode_jpeg(pixels), 40, 80,
                    box_lib.xywh_to_normalized(np.reshape(faces, [-1, 4]), 40, 80),
                    ignore=[1] * len(faces))
                w.write(features.to_example(rec).SerializeToString())
        gt = label_lib.load_labels(path.replace('00000', '*'))
        self.assertAllClose(gt['wider/x/a.jpg'][0], [[4, 8, 20, 10]], atol=1e-4)
        self.assertAllEqual(gt['wider/x/a.jpg'][1], [True])
        self.assertEqual(gt['neg/b.jpg'][0].shape, (0, 4))

    def test_pairing_by_longest_suffix(self):
        keys = ['/data/set/images/a.jpg', '/data/set/images/b.jpg', 'one/c.jpg', 'two/c.jpg',
                'd.jpg']
        dets = [label_lib.Detections(p, np.zeros([0, 4]), np.zeros([0]), p) for p in (
            '/other/root/set/images/a.jpg',   # suffix of 3 components
            'b.jpg',                          # unique basename
            '/x/two/c.jpg',                   # longest suffix picks two/c.jpg
            'c.jpg',                          # ambiguous
            './images/a.jpg',                 # a.jpg again: duplicate
            'e.jpg')]                         # unlabelled
        p = label_lib.pair(keys, dets)
        self.assertEqual({k: d.image for k, d in p.matched.items()}, {
            '/data/set/images/a.jpg': '/other/root/set/images/a.jpg',
            '/data/set/images/b.jpg': 'b.jpg', 'two/c.jpg': '/x/two/c.jpg'})
        self.assertEqual([d.image for d in p.ambiguous], ['c.jpg'])
        self.assertEqual([d.image for d in p.duplicate], ['./images/a.jpg'])
        self.assertEqual([d.image for d in p.unlabelled], ['e.jpg'])
        self.assertEqual(p.missing, ['one/c.jpg', 'd.jpg'])

    def test_bad_detections_name_file_and_line(self):
        path = os.path.join(self.get_temp_dir(), 'detections.jsonl')
        with open(path, 'w') as f:
            f.write(json.dumps({'image': 'a.jpg', 'boxes': [FACE_A], 'scores': [0.5]}) + '\n')
            f.write(json.dumps({'image': 'b.jpg', 'boxes': [FACE_A], 'scores': []}) + '\n')
        with self.assertRaisesRegex(label_lib.InputError, 'detections.jsonl:2: 1 boxes but 0'):
            label_lib.load_detections(path)


class PlotsTest(tf.test.TestCase):

    def test_writes_png(self):
        path = os.path.join(self.get_temp_dir(), 'sub', 'pr.png')
        plots.write_pr_curve_png(path, {'IoU 0.5': ([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]),
                                        'empty': (np.zeros([0]), np.zeros([0]))}, title='t')
        with Image.open(path) as im:
            self.assertEqual(im.format, 'PNG')
            self.assertEqual(im.size, (720, 600))
            # Some pixels carry the first curve's colour.
            colours = {c for _, c in im.convert('RGB').getcolors(1 << 20)}
        self.assertIn((31, 119, 180), colours)


if __name__ == '__main__':
    tf.test.main()
