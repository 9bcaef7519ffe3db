"""Tests for preprocess/landmark_teacher.py and make_records --landmark_teacher (fake teacher)."""

import dataclasses
import json
import os
import sys
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from PIL import Image

from data import features
from preprocess import landmark_teacher as lt
from preprocess import record_sources
from preprocess import shards
from tests import cli

_YUNET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      '..', 'shared', 'peers', 'yunet_n_640_640.onnx')


def _row(x, y, w, h, score, points=None):
    """A YuNet row in pixels; points default to 5 spots inside the box."""
    if points is None:
        points = [(x + 0.3 * w, y + 0.4 * h), (x + 0.7 * w, y + 0.4 * h), (x + 0.5 * w, y + 0.6 * h),
                  (x + 0.35 * w, y + 0.8 * h), (x + 0.65 * w, y + 0.8 * h)]
    return [x, y, w, h, *np.ravel(points), score]


class FakeTeacher:
    """Returns fixed rows, given as fractions of the image's width and height (picklable)."""

    def __init__(self, rows_frac):
        self.rows_frac = rows_frac
        self.sizes = []

    def __call__(self, rgb):
        h, w = rgb.shape[:2]
        self.sizes.append((h, w))
        rows = []
        for x, y, bw, bh, score in self.rows_frac:
            rows.append(_row(x * w, y * h, bw * w, bh * h, score))
        return np.asarray(rows, np.float32).reshape(-1, 15)


def _record(boxes, valid=None, landmarks=None, ignore=None):
    return features.FaceRecord(source_id='t/x', encoded=b'', height=100, width=200,
                               boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                               landmarks=landmarks, landmarks_valid=valid, ignore=ignore)


class ToNormalizedTest(tf.test.TestCase):

    def test_order_and_normalization(self):
        points = [(40, 20), (60, 22), (50, 30), (42, 40), (58, 41)]  # left eye has the smaller x
        boxes, landmarks, scores = lt.to_normalized(
            np.asarray([_row(30, 10, 40, 50, 0.8, points)]), height=100, width=200)
        self.assertAllClose(boxes, [[0.1, 0.15, 0.6, 0.35]])
        expected = [[y / 100, x / 200] for x, y in points]
        self.assertAllClose(landmarks, [np.ravel(expected)])
        self.assertAllClose(scores, [0.8])
        # Our point 0 is the image-left eye, 1 the image-right eye (data/features.py).
        self.assertLess(landmarks[0, 1], landmarks[0, 3])
        self.assertLess(landmarks[0, 7], landmarks[0, 9])

    def test_clipped_to_image(self):
        boxes, _, _ = lt.to_normalized(np.asarray([_row(-10, -5, 50, 200, 0.9)]), 100, 200)
        self.assertAllClose(boxes, [[0.0, 0.0, 1.0, 0.2]])


class GreedyMatchTest(tf.test.TestCase):

    def test_one_to_one_highest_first(self):
        overlaps = np.asarray([[0.9, 0.6], [0.8, 0.55], [0.2, 0.1]])
        # Label 0 takes detection 0 (0.9); label 1 then takes detection 1 (0.55), not 0.
        self.assertEqual(lt.greedy_match(overlaps, 0.5), {0: 0, 1: 1})

    def test_below_threshold_not_matched(self):
        self.assertEqual(lt.greedy_match(np.asarray([[0.49]]), 0.5), {})
        self.assertEqual(lt.greedy_match(np.zeros([0, 3]), 0.5), {})
        self.assertEqual(lt.greedy_match(np.zeros([2, 0]), 0.5), {})


class LabelTest(tf.test.TestCase):

    def _label(self, record, rows, **kwargs):
        teacher = lt.Teacher(lambda rgb: np.asarray(rows, np.float32).reshape(-1, 15), 'fake', **kwargs)
        return teacher.label(np.zeros([100, 200, 3], np.uint8), record)

    def test_rules(self):
        labelled = np.full([10], 0.5, np.float32)
        record = _record([[0.1, 0.05, 0.5, 0.25],    # 0: matched well -> teacher landmarks
                          [0.1, 0.40, 0.5, 0.60],    # 1: only a weak match (IoU < 0.5) -> stays invalid
                          [0.5, 0.70, 0.9, 0.90]],   # 2: has labelled landmarks -> unchanged
                         valid=[0, 0, 1], landmarks=np.stack([np.zeros(10), np.zeros(10), labelled]),
                         ignore=[0, 0, 0])
        rows = [_row(10, 10, 40, 40, 0.5),        # face 0 exactly (low score is fine for matching)
                _row(100, 10, 40, 40, 0.95),      # face 1 shifted: IoU 1/3, >= 0.3 so not an ignore region
                _row(140, 50, 40, 40, 0.99),      # face 2 exactly
                _row(0, 60, 30, 30, 0.95),        # no label near: confident -> ignore region
                _row(160, 0, 30, 30, 0.6)]        # no label near: not confident -> dropped
        out, counts = self._label(record, rows)
        self.assertEqual(counts, {'landmarks_added': 1, 'ignore_added': 1})
        self.assertAllEqual(out.landmarks_valid, [1, 0, 1, 0])
        self.assertAllEqual(out.ignore, [0, 0, 0, 1])
        self.assertAllClose(out.boxes[:3], record.boxes)  # labels never change
        self.assertAllClose(out.boxes[3], [0.6, 0.0, 0.9, 0.15])
        self.assertAllClose(out.landmarks[0, :2], [(10 + 0.4 * 40) / 100, (10 + 0.3 * 40) / 200])
        self.assertAllEqual(out.landmarks[1], np.zeros(10))
        self.assertAllClose(out.landmarks[2], labelled)
        self.assertAllEqual(out.landmarks[3], np.zeros(10))

    def test_ignore_score_threshold(self):
        rows = [_row(0, 0, 40, 40, 0.65)]
        self.assertEqual(self._label(_record([]), rows)[1]['ignore_added'], 0)
        out, counts = self._label(_record([]), rows, ignore_score=0.6)
        self.assertEqual(counts['ignore_added'], 1)
        self.assertAllEqual(out.ignore, [1])

    def test_no_detections_changes_nothing(self):
        record = _record([[0.1, 0.1, 0.5, 0.5]], ignore=[1])
        out, counts = self._label(record, [])
        self.assertEqual(counts, {'landmarks_added': 0, 'ignore_added': 0})
        self.assertAllClose(out.boxes, record.boxes)
        self.assertAllEqual(out.ignore, [1])
        self.assertAllEqual(out.landmarks_valid, [0])

    def test_negatives_are_not_taught(self):
        teacher = lt.Teacher(FakeTeacher([]), 'fake')
        self.assertFalse(teacher.applies_to('negatives_folder/no_faces/a.jpg'))
        self.assertTrue(teacher.applies_to('jsonl/images/a.jpg'))


class LoadYuNetTest(tf.test.TestCase):

    def test_missing_opencv_is_one_line(self):
        with mock.patch.dict(sys.modules, {'cv2': None}), self.assertRaises(lt.TeacherError) as e:
            lt.load_yunet('/nowhere/model.onnx')
        self.assertEqual(str(e.exception),
                         '--landmark_teacher needs OpenCV: pip install opencv-python-headless')

    def test_missing_and_unreadable_files_are_named(self):
        try:
            import cv2  # noqa: F401
        except ImportError:
            self.skipTest('needs OpenCV: pip install opencv-python-headless')
        tmp = self.get_temp_dir()
        with self.assertRaisesRegex(lt.TeacherError, r'/nowhere/model\.onnx: no such file'):
            lt.load_yunet('/nowhere/model.onnx')
        bad = os.path.join(tmp, 'bad.onnx')
        with open(bad, 'w') as f:
            f.write('not a model')
        with self.assertRaisesRegex(lt.TeacherError, r'bad\.onnx: OpenCV cannot read it'):
            lt.load_yunet(bad)

    def test_real_yunet_if_present(self):
        if not os.path.isfile(_YUNET):
            self.skipTest(f'{_YUNET} is not here')
        try:
            import cv2  # noqa: F401
        except ImportError:
            self.skipTest('needs OpenCV: pip install opencv-python-headless')
        rows = lt.load_yunet(_YUNET)(np.zeros([120, 160, 3], np.uint8))
        self.assertEqual(rows.shape[1:], (15,))


class MakeRecordsWithTeacherTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
        self.out = os.path.join(self.tmp, 'records')
        os.makedirs(os.path.join(self.tmp, 'images'))
        with open(os.path.join(self.tmp, 'labels.jsonl'), 'w') as f:
            for k in range(4):  # 400x200 photos, one face at x 40..120, y 40..120
                Image.fromarray(np.full([200, 400, 3], 30 * k, np.uint8)).save(
                    os.path.join(self.tmp, 'images', f'{k}.png'))
                f.write(json.dumps({'image': f'images/{k}.png', 'boxes': [[40, 40, 80, 80]],
                                    'split': 'train'}) + '\n')

    def _make(self, fake, **kwargs):
        config = record_sources.Config(
            output_dir=self.out, sources=('jsonl',), jsonl=os.path.join(self.tmp, 'labels.jsonl'),
            splits=('train',), num_shards={'train': 2, 'val': 1, 'test': 1}, num_workers=1,
            progress=False, max_side=200, negative_fraction=0.2, negatives=('generated',),
            landmark_teacher='/models/fake.onnx', **kwargs)
        return record_sources.make_records(config, teacher_detect=fake)

    def test_end_to_end(self):
        # One detection on the labelled face, one confident one elsewhere (as fractions).
        fake = FakeTeacher([(0.1, 0.2, 0.2, 0.4, 0.7), (0.7, 0.5, 0.1, 0.2, 0.95)])
        manifest = self._make(fake)
        self.assertEqual(set(fake.sizes), {(100, 200)})  # run on the stored (resized) image only
        self.assertLen(fake.sizes, 4)                      # not on the negative
        teacher = manifest['landmark_teacher']
        self.assertEqual({k: teacher[k] for k in ('model', 'match_iou', 'ignore_score', 'images',
                                                  'landmarks_added', 'ignore_added')},
                         {'model': 'fake.onnx', 'match_iou': 0.5, 'ignore_score': 0.7, 'images': 4,
                          'landmarks_added': 4, 'ignore_added': 4})
        self.assertEqual(manifest['ignored_faces'], 4)
        records = [features.parse_example(s, decode_image=False)
                   for p in shards.shard_paths(self.out, 'train', 2)
                   for s in tf.data.TFRecordDataset(p).as_numpy_iterator()]
        self.assertLen(records, 5)
        for r in records:
            if r['source_id'].numpy().startswith(b'negatives_'):
                self.assertEqual(len(r['boxes']), 0)
                continue
            self.assertAllClose(r['boxes'], [[0.2, 0.1, 0.6, 0.3], [0.5, 0.7, 0.7, 0.8]])
            self.assertAllEqual(r['landmarks_valid'], [True, False])
            self.assertAllEqual(r['ignore'], [False, True])
            self.assertAllClose(r['landmarks'][0, :2], [0.2 + 0.4 * 0.4, 0.1 + 0.3 * 0.2])

    def test_beam_runner_writes_the_same_records(self):
        try:
            import apache_beam  # noqa: F401
        except ImportError:
            self.skipTest('needs Apache Beam: pip install -r requirements-beam.txt')
        fake = FakeTeacher([(0.1, 0.2, 0.2, 0.4, 0.7), (0.7, 0.5, 0.1, 0.2, 0.95)])
        local = self._make(fake)
        local_bytes = self._shard_bytes()
        self.out = os.path.join(self.tmp, 'beam')
        beam = self._make(fake, runner='beam', beam_options=('--runner=DirectRunner',))
        self.assertEqual(beam['landmark_teacher'], local['landmark_teacher'])
        self.assertEqual(self._shard_bytes(), local_bytes)

    def _shard_bytes(self):
        return [open(p, 'rb').read() for p in shards.shard_paths(self.out, 'train', 2)]

    def test_low_score_unmatched_dropped(self):
        manifest = self._make(FakeTeacher([(0.7, 0.5, 0.1, 0.2, 0.65)]))
        self.assertEqual(manifest['landmark_teacher']['ignore_added'], 0)
        self.assertEqual(manifest['landmark_teacher']['landmarks_added'], 0)
        self.assertEqual(manifest['faces'], 4)

    def test_folder_from_before_the_teacher_flags_resumes(self):
        config = record_sources.Config(output_dir=self.out, num_images=4, synthetic_min_side=64,
                                       synthetic_max_side=64, num_workers=1, progress=False)
        record_sources.make_records(config)
        path = os.path.join(self.out, shards.STATS_DIR, record_sources.SETTINGS_FILE)
        with open(path) as f:
            saved = {k: v for k, v in json.load(f).items() if not k.startswith('landmark_teacher')}
        with open(path, 'w') as f:
            json.dump(saved, f)
        manifest = record_sources.make_records(config)  # the new fields count at their defaults
        self.assertTrue(all(info['reused_shards'] for info in manifest['splits'].values()))
        teacher = dataclasses.replace(config, landmark_teacher='fake.onnx')
        with self.assertRaisesRegex(record_sources.ConfigError, 'landmark_teacher'):
            record_sources.make_records(teacher, teacher_detect=FakeTeacher([]))

    def test_cli_missing_model_is_one_line(self):
        result = cli.run('preprocess/make_records.py', '--source=synthetic', '--num_images=4',
                         f'--output_dir={self.out}', '--landmark_teacher=/nowhere/yunet.onnx')
        self.assertEqual(result.returncode, 2)
        lines = [l for l in result.stderr.splitlines() if l.startswith('error')]
        self.assertLen(lines, 1)
        self.assertNotIn('Traceback', result.stderr)
        self.assertRegex(lines[0], r'^error: --landmark_teacher(=/nowhere/yunet\.onnx: no such file|'
                                   r' needs OpenCV: pip install opencv-python-headless)$')


if __name__ == '__main__':
    tf.test.main()
