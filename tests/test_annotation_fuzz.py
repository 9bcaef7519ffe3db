"""Fuzzed annotation files: the WIDER, CelebA, FDDB and JSONL readers never raise.

Each reader gets its own tests' valid fixture mutated (lines deleted, duplicated, swapped,
tokens replaced by text, negatives, nan, huge numbers, cut short, random bytes) and wholly
random files. Whatever comes in, a reader yields RawItems or SkipItems (each naming the
file and line), or, for a whole file that is not what it expects, the one error it
documents (CelebA: ValueError for a wrong header). The RawItems then go through
items.encode_item, which records them or raises SkipItem. Derandomized: CI sees the same
examples on every run.
"""

import dataclasses
import json
import os
import re
import tempfile

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preprocess import celeba, fddb, items, jsonl_source, widerface
from tests import test_celeba, test_fddb, test_jsonl_source, test_widerface

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
_PIXELS = np.zeros([48, 64, 3], np.uint8)
_REPR = re.compile(r'object at 0x')

TOKENS = st.one_of(
    st.sampled_from(['nan', '-nan', 'inf', '-inf', '1e308', '1e999', '-1', '-0', '0', '1.5',
                     '99999999999999999999', '9' * 5000, '1_000', '0x10', '١٢', '', 'x',
                     '\ufffd', '#', '"', '[', '{}', 'null', '000001.jpg', 'a.jpg']),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12))


@st.composite
def mutated(draw, text):
    """``text`` with a few random line and token edits, maybe cut short or salted with bytes."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(['delete', 'duplicate', 'swap', 'token', 'tokens']))
        if kind == 'delete':
            del lines[i]
        elif kind == 'duplicate':
            lines.insert(j, lines[i])
        elif kind == 'swap':
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 'token':
            tokens = lines[i].split() or ['']
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(TOKENS)
            lines[i] = ' '.join(tokens)
        else:
            lines[i] = ' '.join(draw(st.lists(TOKENS, max_size=12)))
    data = '\n'.join(lines).encode('utf-8', 'surrogatepass')
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=20)) + data[at:]
    return data


RANDOM_TEXT = st.lists(st.lists(TOKENS, max_size=12).map(' '.join), max_size=30).map(
    lambda lines: '\n'.join(lines).encode('utf-8', 'surrogatepass'))
RANDOM_FILE = st.one_of(st.binary(max_size=300), RANDOM_TEXT)


class ReaderFuzzTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp(dir=self.get_temp_dir())

    def _write(self, rel, data):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def _check(self, stream, path):
        """Consumes a reader's stream: RawItems encode or skip, SkipItems name the file."""
        for entry in stream:
            if isinstance(entry, items.SkipItem):
                self.assertEqual(entry.reason, 'malformed_annotation')
                self.assertRegex(entry.detail, rf'^{re.escape(path)}\S*:[0-9]+: ')
                self.assertNotRegex(entry.detail, _REPR)
                continue
            self.assertIsInstance(entry, items.RawItem)
            n = len(entry.boxes_xywh)
            self.assertEqual(entry.boxes_xywh.shape, (n, 4))
            if entry.landmarks_xy is not None:
                self.assertEqual(np.shape(entry.landmarks_xy), (n, 5, 2))
            if entry.ignore is not None:
                self.assertEqual(np.shape(entry.ignore), (n,))
            try:
                record, _ = items.encode_item(dataclasses.replace(entry, pixels=_PIXELS))
            except items.SkipItem:
                continue
            self.assertTrue(np.all((record.boxes >= 0) & (record.boxes <= 1)))

    def _wider(self, data):
        path = self._write('wider_face_split/wider_face_train_bbx_gt.txt', data)
        self._check(widerface.read_items(self.root, ('train',)), path)

    @FUZZ
    @given(mutated(test_widerface.TRAIN_GT))
    def test_wider_mutated(self, data):
        self._wider(data)

    @FUZZ
    @given(RANDOM_FILE)
    def test_wider_random(self, data):
        self._wider(data)

    def _fddb(self, data):
        path = self._write('FDDB-folds/FDDB-fold-01-ellipseList.txt', data)
        self._check(fddb.read_items(self.root), path)

    @FUZZ
    @given(mutated(test_fddb.FOLD_01))
    def test_fddb_mutated(self, data):
        self._fddb(data)

    @FUZZ
    @given(RANDOM_FILE)
    def test_fddb_random(self, data):
        self._fddb(data)

    def _celeba(self, bbox, landmarks, partition):
        self._write('Anno/list_bbox_celeba.txt', bbox)
        self._write('Anno/list_landmarks_celeba.txt', landmarks)
        self._write('Eval/list_eval_partition.txt', partition)
        try:
            self._check(celeba.read_items(self.root), self.root)
        except ValueError as e:  # the documented whole-file error: a wrong header
            self.assertRegex(str(e), r'^CelebA: .*\.txt:2: expected a header starting with')

    @FUZZ
    @given(st.data())
    def test_celeba_mutated(self, data):
        files = [test_celeba.BBOX, test_celeba.LANDMARKS, test_celeba.PARTITION]
        which = data.draw(st.integers(0, 2))
        blobs = [f.encode() for f in files]
        blobs[which] = data.draw(mutated(files[which]))
        self._celeba(*blobs)

    @FUZZ
    @given(st.integers(0, 2), RANDOM_FILE)
    def test_celeba_random(self, which, random_file):
        blobs = [f.encode() for f in (test_celeba.BBOX, test_celeba.LANDMARKS,
                                      test_celeba.PARTITION)]
        blobs[which] = random_file
        self._celeba(*blobs)

    def _jsonl(self, data):
        path = self._write('fixture/labels.jsonl', data)
        self._check(jsonl_source.read_items(path), path)

    @FUZZ
    @given(mutated('\n'.join(l if isinstance(l, str) else json.dumps(l)
                             for l in test_jsonl_source.LINES)))
    def test_jsonl_mutated_text(self, data):
        self._jsonl(data)

    @FUZZ
    @given(st.data())
    def test_jsonl_mutated_fields(self, data):
        json_values = st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
                st.text(max_size=8), inner, max_size=4), max_leaves=20)
        lines = []
        for line in test_jsonl_source.LINES:
            if isinstance(line, dict) and data.draw(st.booleans()):
                line = dict(line)
                key = data.draw(st.sampled_from(['image', 'boxes', 'landmarks', 'ignore',
                                                 'split']))
                line[key] = data.draw(json_values)
            lines.append(line if isinstance(line, str) else json.dumps(line))
        self._jsonl('\n'.join(lines).encode('utf-8', 'surrogatepass'))

    @FUZZ
    @given(RANDOM_FILE)
    def test_jsonl_random(self, data):
        self._jsonl(data)


if __name__ == '__main__':
    tf.test.main()
