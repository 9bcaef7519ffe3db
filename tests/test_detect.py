"""detect.py over hostile inputs: every input gets one detections.jsonl line, errors named."""

import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image
import pytest

from tests import cli
from tests import fixtures
from tests import image_fixtures as fx

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier

# The shipped model: already exported, so the test costs detect.py's runs alone.
_MODEL = os.path.join(cli.ROOT, 'models', 'facedet_default')
_REPR = re.compile(r'object at 0x|<_io\.')  # '<_io.BytesIO object at 0x7f...>'


def _good_photo(path, seed):
    """A synthetic photo with one face box (tests/fixtures.py's generator), as a JPEG."""
    record = fixtures.make_face_record([[0.2, 0.3, 0.7, 0.7]], 96, 128, seed=seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(record.encoded)
    return path


def _lines(out_dir):
    with open(os.path.join(out_dir, 'detections.jsonl')) as f:
        return [json.loads(line) for line in f]


class HostileInputsTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(dir=self.get_temp_dir())
        self.photos = os.path.join(self.dir, 'photos')
        self.good = [_good_photo(os.path.join(self.photos, f'good{i}.jpg'), i) for i in range(2)]
        self.bad = {
            fx.write_empty(os.path.join(self.photos, 'empty.jpg')): r'not an image \(0 bytes\)',
            fx.write_garbage(os.path.join(self.photos, 'notes.jpg')):
                r'not an image \(20 bytes in no format PIL reads\)',
            fx.write_truncated_jpeg(os.path.join(self.photos, 'sub', 'cut.jpg')):
                r'truncated JPEG \(\d+ bytes not processed\)',
            fx.write_huge_png(os.path.join(self.photos, 'huge.png')):
                r'30000x30000 = 900 MP is over max_pixels=178956970 \(179 MP\)',
        }

    def test_every_input_gets_one_line_and_errors_are_named(self):
        out_dir = os.path.join(self.dir, 'out')
        result = cli.run('detect.py', f'--model={_MODEL}', f'--input={self.photos}',
                         f'--output={out_dir}')
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        lines = _lines(out_dir)
        self.assertCountEqual([l['image'] for l in lines], self.good + list(self.bad))
        for line in lines:
            if line['image'] in self.good:
                self.assertNotIn('error', line)
                self.assertIsInstance(line['boxes'], list)
                self.assertEqual(len(line['boxes']), len(line['scores']))
                self.assertEqual((line['width'], line['height']), (128, 96))
                continue
            self.assertEqual(set(line), {'image', 'error'})
            self.assertRegex(line['error'], f'^{self.bad[line["image"]]}$')
            self.assertNotRegex(line['error'], r'<|>|object at')
            self.assertIn(f'unreadable: {line["image"]}: {line["error"]}', result.stderr)
        self.assertNotRegex(result.stdout + result.stderr, _REPR)
        jsonl = os.path.join(out_dir, 'detections.jsonl')
        self.assertIn(f'6 images, 4 unreadable (listed in {jsonl} with an error)', result.stdout)
        self.assertEqual(len(tf.io.gfile.glob(os.path.join(out_dir, '*.png'))), 2)

    def test_max_pixels_refuses_from_the_header_and_none_read_exits_1(self):
        out_dir = os.path.join(self.dir, 'out_small')
        result = cli.run('detect.py', f'--model={_MODEL}', f'--input={self.good[0]}',
                         f'--output={out_dir}', '--max_pixels=10000')
        self.assertEqual(result.returncode, 1)
        self.assertEqual(_lines(out_dir), [{
            'image': self.good[0],
            'error': '128x96 = 0 MP is over max_pixels=10000 (0 MP)'}])
        self.assertIn('none of the 1 images could be read', result.stderr)
        self.assertNotIn('Traceback', result.stderr)


_DRAW = """
import json, sys
import numpy as np
import detect

result = json.loads(sys.argv[1])
detect.draw(np.zeros([64, 64, 3], np.uint8), result, sys.argv[2], 0.5)
"""


class DrawTest(tf.test.TestCase):

    def _draw(self, result, name):
        path = os.path.join(self.get_temp_dir(), name)
        proc = subprocess.run([sys.executable, '-c', _DRAW, json.dumps(result), path],
                              cwd=cli.ROOT, capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        return np.asarray(Image.open(path).convert('RGB'))

    def test_landmark_dots_are_drawn_in_their_colours(self):
        face = {'boxes': [[10, 10, 40, 40]], 'scores': [0.9]}
        points = [20, 22, 40, 22, 30, 32, 22, 42, 38, 42]
        plain = self._draw(face, 'plain.png')
        marked = self._draw({**face, 'landmarks': [points]}, 'marked.png')
        self.assertAllEqual(plain[22, 20], [0, 0, 0])
        self.assertAllEqual(marked[22, 20], [255, 0, 0])   # left eye
        self.assertAllEqual(marked[22, 40], [0, 0, 255])   # right eye
        self.assertAllEqual(marked[32, 30], [255, 255, 0])  # nose
        self.assertAllEqual(marked[10, 30], plain[10, 30])  # the box is drawn either way
        self.assertAllEqual(marked[10, 30], [0, 255, 0])
        low = self._draw({'boxes': face['boxes'], 'scores': [0.2], 'landmarks': [points]},
                         'low.png')
        self.assertAllEqual(low[22, 20], [0, 0, 0])  # under the threshold: nothing drawn


if __name__ == '__main__':
    tf.test.main()
