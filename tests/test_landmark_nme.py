"""Landmark NME (evaluation/landmarks.py), its labels (evaluation/labels.py) and evaluate.py."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from data import boxes as box_lib
from data import features
from evaluation import labels as label_lib
from evaluation import landmarks as landmark_lib
from tests import fixtures

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A 40x40 face at (10, 10) whose eyes are 20 px apart: (20, 20) and (40, 20).
FACE = [10, 10, 40, 40]
POINTS = [20, 20, 40, 20, 30, 30, 22, 40, 38, 40]
FAR_FACE = [200, 200, 40, 40]


def _shifted(points, dx, dy):
    return (np.reshape(points, [5, 2]) + [dx, dy]).reshape(10).tolist()


def _write_jsonl(path, rows):
    with open(path, 'w') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')


class NmeTest(tf.test.TestCase):

    def test_known_offset(self):
        # Every point 3 px right and 4 down: 5 px off, over 20 px between the eyes.
        self.assertAllClose(landmark_lib.face_nme(_shifted(POINTS, 3, 4), POINTS), 0.25)
        nmes = landmark_lib.image_nmes([FACE], [POINTS], [FACE], [0.9],
                                       [_shifted(POINTS, 3, 4)])
        self.assertAllClose(nmes, [0.25])

    def test_unmatched_faces_and_detections_are_excluded(self):
        far_points = _shifted(POINTS, 190, 190)
        acc = landmark_lib.NmeAccumulator(score_threshold=0.5)
        # The far face is missed; a false positive far away carries wild points; a matching
        # detection under the score threshold is left out too.
        acc.add_image([FACE, FAR_FACE], [POINTS, far_points],
                      [FACE, [400, 400, 30, 30], FAR_FACE], [0.9, 0.8, 0.3],
                      [_shifted(POINTS, 0, 2), _shifted(POINTS, 99, 99), far_points])
        result = acc.result()
        self.assertEqual(result.num_faces, 1)
        self.assertAllClose([result.mean, result.median], [0.1, 0.1])

    def test_missing_landmarks_and_ignored_faces_are_skipped(self):
        nan = [np.nan] * 10
        nmes = landmark_lib.image_nmes(
            [FACE, FAR_FACE], [nan, _shifted(POINTS, 190, 190)], [FACE, FAR_FACE], [0.9, 0.9],
            [_shifted(POINTS, 3, 4), _shifted(POINTS, 190, 194)], gt_ignore=[False, True])
        self.assertEmpty(nmes)
        empty = landmark_lib.NmeAccumulator().result()
        self.assertEqual(empty.num_faces, 0)
        self.assertTrue(np.isnan(empty.mean))

    def test_coinciding_eyes_are_skipped(self):
        points = [20, 20] * 5
        self.assertEmpty(landmark_lib.image_nmes([FACE], [points], [FACE], [0.9], [POINTS]))


class LandmarkLabelsTest(tf.test.TestCase):

    def test_jsonl_landmarks_null_and_wrong_count(self):
        path = os.path.join(self.get_temp_dir(), 'labels.jsonl')
        _write_jsonl(path, [{'image': 'a.jpg', 'boxes': [FACE, FAR_FACE],
                             'landmarks': [POINTS, None]}])
        faces = next(iter(label_lib.load_labels(path).values()))
        self.assertAllClose(faces.landmarks[0], POINTS)
        self.assertTrue(np.all(np.isnan(faces.landmarks[1])))
        _write_jsonl(path, [{'image': 'a.jpg', 'boxes': [FACE], 'landmarks': [POINTS, None]}])
        with self.assertRaisesRegex(label_lib.InputError,
                                    r'labels.jsonl:1: "landmarks" must hold one entry per box'):
            label_lib.load_labels(path)

    def test_records_to_images_writes_pixel_landmarks(self):
        from preprocess.records_to_images import records_to_images
        root = self.get_temp_dir()
        h, w = 64, 96
        marks = box_lib.landmarks_xy_to_normalized(np.reshape(POINTS, [1, 5, 2]), h, w)
        record = fixtures.make_face_record(
            box_lib.xywh_to_normalized([FACE, [50, 5, 20, 20]], h, w), h, w,
            landmarks=np.concatenate([marks, np.zeros([1, 10])]), landmarks_valid=[1, 0])
        shard = os.path.join(root, 'val-00000-of-00001.tfrecord')
        with tf.io.TFRecordWriter(shard) as writer:
            writer.write(features.to_example(record).SerializeToString())
        records_to_images(shard, os.path.join(root, 'out'))
        with open(os.path.join(root, 'out', 'labels.jsonl')) as f:
            line = json.loads(f.readline())
        self.assertAllClose(line['landmarks'][0], POINTS, atol=0.01)
        self.assertIsNone(line['landmarks'][1])
        faces = label_lib.load_labels(os.path.join(root, 'out', 'labels.jsonl'))
        self.assertAllClose(next(iter(faces.values())).landmarks[0], POINTS, atol=0.01)


class EvaluateNmeTest(tf.test.TestCase):

    def _run(self, detection_row, labels_row):
        root = tempfile.mkdtemp(dir=self.get_temp_dir())
        labels, dets = os.path.join(root, 'labels.jsonl'), os.path.join(root, 'dets.jsonl')
        metrics = os.path.join(root, 'metrics.json')
        _write_jsonl(labels, [labels_row])
        _write_jsonl(dets, [detection_row])
        proc = subprocess.run(
            [sys.executable, 'evaluate.py', f'--detections={dets}', f'--labels={labels}',
             f'--output_json={metrics}'], cwd=_REPO, capture_output=True, text=True,
            timeout=120, check=False)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(metrics) as f:
            return proc.stdout, json.load(f)

    def test_reported_only_with_both_landmarks(self):
        labels = {'image': 'a.jpg', 'boxes': [FACE], 'landmarks': [POINTS]}
        dets = {'image': 'a.jpg', 'width': 300, 'height': 300, 'boxes': [FACE],
                'scores': [0.9], 'landmarks': [_shifted(POINTS, 3, 4)]}
        stdout, metrics = self._run(dets, labels)
        self.assertRegex(stdout, r'landmark NME @ score>=0.5, IoU 0.5 \(1 faces\)')
        self.assertRegex(stdout, r'  mean +0.2500\n  median +0.2500')
        self.assertEqual(metrics['landmark_nme']['num_faces'], 1)
        self.assertAllClose(metrics['landmark_nme']['mean'], 0.25)
        del dets['landmarks']  # a model without landmarks
        stdout, metrics = self._run(dets, labels)
        self.assertNotIn('NME', stdout)
        self.assertNotIn('landmark_nme', metrics)


if __name__ == '__main__':
    tf.test.main()
