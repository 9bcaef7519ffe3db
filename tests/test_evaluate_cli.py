"""Runs evaluate.py as a subprocess on tiny fixtures written to a temp dir."""

import json
import os
import subprocess
import sys
import tempfile

import tensorflow as tf
from PIL import Image

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACE_A = [10, 10, 20, 20]
FACE_B = [100, 10, 20, 20]
MISS = [300, 300, 20, 20]


def _write_jsonl(path, rows):
    with open(path, 'w') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')


def _run(*args):
    return subprocess.run([sys.executable, 'evaluate.py', *args], cwd=_REPO,
                          capture_output=True, text=True, timeout=120, check=False)


class EvaluateCliTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp(dir=self.get_temp_dir())
        self.labels = os.path.join(self.root, 'set', 'labels.jsonl')
        os.makedirs(os.path.dirname(self.labels))
        _write_jsonl(self.labels, [
            {'image': 'images/a.jpg', 'width': 400, 'height': 400, 'boxes': [FACE_A, FACE_B]},
            {'image': 'images/empty.jpg', 'width': 400, 'height': 400, 'boxes': []}])
        self.wider = os.path.join(self.root, 'wider_face_val_bbx_gt.txt')
        with open(self.wider, 'w') as f:
            f.write('0--Parade/p.jpg\n2\n10 10 20 20 0 0 0 0 0 0 \n100 10 20 20 0 0 0 1 0 0 \n'
                    '1--Handshaking/q.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n')
        self.detections = os.path.join(self.root, 'detections.jsonl')

    def test_jsonl_labels(self):
        # Absolute detection path for a.jpg, relative one for empty.jpg. TP 0.9 (A), FP 0.8 on
        # the face-free image, TP 0.7 (B): points (0.5, 1), (0.5, 1/2), (1, 2/3) -> AP 5/6.
        _write_jsonl(self.detections, [
            {'image': os.path.join(self.root, 'set', 'images', 'a.jpg'), 'width': 400,
             'height': 400, 'boxes': [FACE_A, FACE_B], 'scores': [0.9, 0.7]},
            {'image': 'images/empty.jpg', 'width': 400, 'height': 400, 'boxes': [MISS],
             'scores': [0.8]},
            {'image': 'elsewhere/z.jpg', 'width': 1, 'height': 1, 'boxes': [], 'scores': []}])
        png = os.path.join(self.root, 'out', 'pr.png')
        metrics = os.path.join(self.root, 'out', 'metrics.json')
        proc = _run(f'--detections={self.detections}', f'--labels={self.labels}',
                    '--iou_threshold=0.5,0.95', '--score_threshold=0.75',
                    f'--pr_curve={png}', f'--output_json={metrics}')
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, r'AP @ IoU 0.5 +0.8333')
        self.assertRegex(proc.stdout, r'FP per face-free image @ score>=0.75 +1.0000')
        self.assertIn('z.jpg has no label', proc.stderr)
        # Both faces and the false positive are 20 px tall: the 16-24 band has it all.
        self.assertRegex(proc.stdout, r'faces 16-24 px \(2\) +0.8333')
        self.assertRegex(proc.stdout, r'faces 0-16 px \(0\) +n/a')
        with open(metrics) as f:
            saved = json.load(f)
        results = saved['results']
        self.assertEqual([b['faces'] for b in saved['ap_by_face_height']], [0, 2, 0, 0, 0])
        self.assertAllClose(saved['ap_by_face_height'][1]['ap'], 5 / 6)
        self.assertAllClose(results[0]['ap'], 5 / 6)
        self.assertAllClose(results[0]['recall'], 0.5)
        self.assertAllClose(results[0]['precision'], 0.5)
        self.assertEqual(results[1]['iou_threshold'], 0.95)
        self.assertAllClose(results[1]['ap'], 5 / 6)  # the boxes are exact
        self.assertEqual(results[0]['num_faces'], 2)
        with Image.open(png) as im:
            self.assertEqual(im.format, 'PNG')

    def test_unreadable_images_are_reported_and_count_as_missed(self):
        # detect.py's line for an image it could not read: no boxes, an "error".
        _write_jsonl(self.detections, [
            {'image': 'images/a.jpg', 'error': 'truncated JPEG (14 bytes not processed)'},
            {'image': 'images/empty.jpg', 'width': 400, 'height': 400, 'boxes': [],
             'scores': []}])
        proc = _run(f'--detections={self.detections}', f'--labels={self.labels}')
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn('detections.jsonl:1: detect.py could not read images/a.jpg (truncated '
                      'JPEG (14 bytes not processed)); its faces count as missed', proc.stderr)
        self.assertRegex(proc.stdout, r'unreadable by detect.py \(all missed\) +1')
        self.assertRegex(proc.stdout, r'AP @ IoU 0.5 +0.0000')

    def test_wider_labels(self):
        # The invalid face is ignored (and so is the detection on it); q.jpg has no detections.
        _write_jsonl(self.detections, [
            {'image': '/data/WIDER_val/images/0--Parade/p.jpg', 'width': 400, 'height': 400,
             'boxes': [FACE_B, FACE_A], 'scores': [0.9, 0.6]}])
        metrics = os.path.join(self.root, 'metrics.json')
        proc = _run(f'--detections={self.detections}', f'--labels={self.wider}',
                    f'--output_json={metrics}')
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(metrics) as f:
            out = json.load(f)
        result = out['results'][0]
        self.assertEqual((result['num_faces'], result['num_ignored_faces']), (1, 1))
        self.assertEqual(result['num_ignored_detections'], 1)
        self.assertAllClose(result['ap'], 1.0)
        self.assertEqual(out['images_without_detections'], 1)

    def test_bad_line_names_file_and_line(self):
        with open(self.detections, 'w') as f:
            f.write(json.dumps({'image': 'a.jpg', 'boxes': [], 'scores': []}) + '\n{oops\n')
        proc = _run(f'--detections={self.detections}', f'--labels={self.labels}')
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn('detections.jsonl:2: not valid JSON', proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)

    def test_missing_labels_file(self):
        _write_jsonl(self.detections, [])
        missing = os.path.join(self.root, 'nope.jsonl')
        proc = _run(f'--detections={self.detections}', f'--labels={missing}')
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(f'{missing}: no such file', proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)


if __name__ == '__main__':
    tf.test.main()
