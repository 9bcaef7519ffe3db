"""Tests for preprocess/make_records.py and preprocess/record_sources.py (the library it runs)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image
import pytest

from data import features
from preprocess import record_sources
from preprocess import shards
from tests import cli

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_split(out_dir, split, num_shards):
    records = []
    for path in shards.shard_paths(out_dir, split, num_shards):
        for s in tf.data.TFRecordDataset(path).as_numpy_iterator():
            records.append(features.parse_example(s, decode_image=False))
    return records


def _jsonl(root, lines):
    """A labels.jsonl with 48x40 images: lines are (name, boxes, split) or raw strings."""
    os.makedirs(os.path.join(root, 'images'), exist_ok=True)
    with open(os.path.join(root, 'labels.jsonl'), 'w') as f:
        for k, line in enumerate(lines):
            if isinstance(line, str):
                f.write(line + '\n')
                continue
            name, boxes, split = line
            Image.fromarray(np.full([40, 48, 3], 20 * k, np.uint8)).save(os.path.join(root, 'images', name))
            f.write(json.dumps({'image': f'images/{name}', 'boxes': boxes, 'split': split}) + '\n')
    return os.path.join(root, 'labels.jsonl')


class MakeRecordsTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
        self.out = os.path.join(self.tmp, 'records')

    def _config(self, **kwargs):
        defaults = dict(output_dir=self.out, num_images=16, val_fraction=0.25, synthetic_min_side=64,
                        synthetic_max_side=96, num_shards={'train': 2, 'val': 1, 'test': 1},
                        num_workers=1, progress=False)
        return record_sources.Config(**{**defaults, **kwargs})

    def test_synthetic_with_negatives_manifest_matches_records(self):
        config = self._config(negative_fraction=0.2, negatives=('generated', 'crops'))
        manifest = record_sources.make_records(config, flag_values={'seed': 0})
        with open(os.path.join(self.out, 'manifest.json')) as f:
            self.assertEqual(json.load(f)['images'], manifest['images'])
        ids = {}
        for split, num_shards, positives in (('train', 2, 12), ('val', 1, 4)):
            records = _read_split(self.out, split, num_shards)
            info = manifest['splits'][split]
            self.assertEqual(info['shards'], [os.path.basename(p) for p in shards.shard_paths(self.out, split, num_shards)])
            self.assertLen(records, info['images'])
            self.assertEqual(sum(len(r['boxes']) for r in records), info['faces'])
            self.assertEqual(sum(int(np.sum(r['ignore'])) for r in records), info['ignored_faces'])
            ids[split] = {r['source_id'].numpy().decode() for r in records}
            by_source = info['by_source']
            self.assertEqual(by_source['synthetic']['images'], positives)
            negatives = sum(v['images'] for k, v in by_source.items() if k.startswith('negatives_'))
            self.assertEqual(negatives, round(positives * 0.2 / 0.8))  # generated + crops
            for r in records:
                if r['source_id'].numpy().startswith(b'negatives_'):
                    self.assertEqual(len(r['boxes']), 0)
                else:
                    self.assertIn(f'/{split}/'.encode(), r['source_id'].numpy())
                self.assertAllInRange(r['boxes'].numpy(), 0.0, 1.0)
        self.assertEmpty(ids['train'] & ids['val'])
        self.assertEqual(manifest['images'], len(ids['train']) + len(ids['val']))
        self.assertEqual(manifest['flags'], {'seed': 0})
        self.assertGreater(manifest['seconds'], 0)

    def test_wider_holdout_moves_hashed_train_images_to_val(self):
        from preprocess.splits import split_by_hash
        from tests.test_widerface import make_wider_root
        root = make_wider_root(os.path.join(self.tmp, 'wider'))
        config = self._config(sources=('wider',), wider_dir=root, wider_holdout=0.5)
        manifest = record_sources.make_records(config)
        val_ids = {r['source_id'].numpy().decode() for r in _read_split(self.out, 'val', 1)}
        train_ids = {r['source_id'].numpy().decode() for r in _read_split(self.out, 'train', 2)}
        self.assertEmpty(train_ids & val_ids)
        self.assertNotEmpty(val_ids)
        self.assertNotEmpty(train_ids)
        for source_id in val_ids:
            self.assertEqual(split_by_hash(source_id, val_fraction=0.5), 'val')
        for source_id in train_ids:
            self.assertEqual(split_by_hash(source_id, val_fraction=0.5), 'train')
        self.assertEqual(manifest['images'], len(train_ids) + len(val_ids))

    def test_rerun_reuses_every_shard(self):
        first = record_sources.make_records(self._config())
        second = record_sources.make_records(self._config())
        self.assertEqual(second['splits']['train']['reused_shards'], first['splits']['train']['shards'])
        self.assertEqual((second['images'], second['faces']), (first['images'], first['faces']))

    def test_rerun_with_other_settings_is_refused_before_reusing_shards(self):
        record_sources.make_records(self._config())
        # Another seed would write other images; workers and strictness change nothing.
        record_sources.make_records(self._config(num_workers=2, strict=True))
        with self.assertRaisesRegex(record_sources.ConfigError, r"seed: 0 -> 3.*new --output_dir"):
            record_sources.make_records(self._config(seed=3))
        manifest_path = _jsonl(os.path.join(self.tmp, 'adj'), [('a.png', [[4, 4, 10, 12]], 'train')])
        out = os.path.join(self.tmp, 'adjusted')
        record_sources.make_records(self._config(sources=('jsonl',), jsonl=manifest_path,
                                                 output_dir=out))
        with self.assertRaisesRegex(record_sources.ConfigError, 'jsonl_box_adjust: None'):
            record_sources.make_records(self._config(
                sources=('jsonl',), jsonl=manifest_path, output_dir=out,
                jsonl_box_adjust=('0', '-0.2', '1', '1.1')))
        # A run refused for its input saves nothing, so the corrected rerun goes ahead.
        empty = os.path.join(self.tmp, 'empty')
        with self.assertRaisesRegex(record_sources.ConfigError, 'nothing to write'):
            record_sources.make_records(self._config(sources=('jsonl',), jsonl=manifest_path,
                                                     output_dir=empty, splits=('val',)))
        record_sources.make_records(self._config(sources=('jsonl',), jsonl=manifest_path,
                                                 output_dir=empty, seed=7))

    def test_bad_jsonl_box_adjust_is_a_config_error(self):
        manifest_path = _jsonl(os.path.join(self.tmp, 'adj'), [('a.png', [[4, 4, 10, 12]], 'train')])
        with self.assertRaisesRegex(record_sources.ConfigError, '--jsonl_box_adjust'):
            record_sources.make_records(self._config(sources=('jsonl',), jsonl=manifest_path,
                                                     jsonl_box_adjust=('0', '1')))
        self.assertFalse(os.path.exists(self.out))

    def test_jsonl_problems_counted_with_file_and_line(self):
        manifest_path = _jsonl(os.path.join(self.tmp, 'set'), [
            ('a.png', [[4, 4, 10, 12]], 'train'), '{"image": broken', ('b.png', [[60, 60, 5, 5]], 'val'),
            ('c.png', [], 'train')])
        manifest = record_sources.make_records(self._config(sources=('jsonl',), jsonl=manifest_path))
        self.assertEqual(manifest['skipped'], {'malformed_annotation': 1})
        self.assertEqual(manifest['dropped_boxes'], {'box_outside': 1})
        self.assertIn('labels.jsonl:2', manifest['problems'][0])
        self.assertEqual((manifest['splits']['train']['images'], manifest['splits']['val']['images']), (2, 1))
        with self.assertRaisesRegex(shards.StrictError, r'labels\.jsonl:2'):
            record_sources.make_records(self._config(sources=('jsonl',), jsonl=manifest_path, strict=True,
                                                     output_dir=os.path.join(self.tmp, 'strict')))

    def test_same_image_in_train_and_val_is_refused(self):
        manifest_path = _jsonl(os.path.join(self.tmp, 'leak'), [
            ('a.png', [], 'train'), ('b.png', [], 'val')])
        with open(manifest_path, 'a') as f:
            f.write(json.dumps({'image': 'images/a.png', 'boxes': [], 'split': 'val'}) + '\n')
        with self.assertRaisesRegex(record_sources.ConfigError, r'images/a\.png is in both train and val'):
            record_sources.make_records(self._config(sources=('jsonl',), jsonl=manifest_path))

    @parameterized.named_parameters(
        ('unknown_source', dict(sources=('nope',)), r"unknown source 'nope'.*choose from synthetic"),
        ('dir_not_given', dict(sources=('wider',)), r'--source=wider needs --wider_dir'),
        ('dir_missing', dict(sources=('fddb',), fddb_dir='/no/such/dir'), r'--fddb_dir=/no/such/dir does not exist'),
        ('bad_negative_kind', dict(negative_fraction=0.1, negatives=('faces',)), r"unknown kind 'faces'"),
        ('folder_needs_dir', dict(negative_fraction=0.1, negatives=('folder',)), r'--negatives_dir'),
        ('bad_split', dict(splits=('holdout',)), r'--splits=holdout'),
        ('nothing_to_write', dict(num_images=0), r'nothing to write'),
    )
    def test_bad_input(self, kwargs, message):
        with self.assertRaisesRegex(record_sources.ConfigError, message):
            record_sources.make_records(self._config(**kwargs))
        self.assertFalse(os.path.exists(os.path.join(self.out, 'manifest.json')))

    def _run_main(self, *args):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
        return subprocess.run([sys.executable, 'preprocess/make_records.py', *args], cwd=_REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    def test_main_bad_source_one_line_no_traceback(self):
        result = self._run_main('--source=synthetic,bogus', f'--output_dir={self.out}')
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("error: unknown source 'bogus' in --source", result.stderr)
        self.assertNotIn('Traceback', result.stderr)

    def test_main_flagfile_writes_and_reports(self):
        result = self._run_main('--flagfile=configs/smoke_records.flags', f'--output_dir={self.out}',
                                '--num_workers=2', '--noprogress')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(os.path.join(self.out, 'manifest.json'), result.stdout)
        self.assertIn(os.path.join(self.out, 'train') + '-*-of-00002.tfrecord', result.stdout)
        with open(os.path.join(self.out, 'manifest.json')) as f:
            manifest = json.load(f)
        self.assertEqual(manifest['by_source']['synthetic']['images'], 24)
        self.assertEqual(manifest['flags']['num_workers'], 2)
        self.assertLen(_read_split(self.out, 'val', 1), manifest['splits']['val']['images'])


    def test_sigkill_then_rerun_keeps_finished_shards_and_completes(self):
        # 600 images (90 a shard): the kill lands while shards 2-6 are still to write, also
        # on a loaded machine (at 48 the run could finish between the poll and the kill).
        args = ['--flagfile=configs/synthetic.flags', '--num_images=600', '--train_shards=6',
                '--synthetic_min_side=64', '--synthetic_max_side=96', '--num_workers=1',
                '--noprogress']
        whole = os.path.join(self.tmp, 'whole')
        self.assertEqual(cli.run('preprocess/make_records.py', *args,
                                 f'--output_dir={whole}').returncode, 0)
        killed = cli.start('preprocess/make_records.py', *args, f'--output_dir={self.out}')
        first = shards.shard_paths(self.out, 'train', 6)[0]
        while not os.path.exists(first) and killed.poll() is None:
            time.sleep(0.05)
        killed.kill()  # SIGKILL: no handler, no cleanup
        killed.communicate()
        self.assertEqual(killed.returncode, -signal.SIGKILL, 'finished before the kill')
        self.assertFalse(os.path.exists(os.path.join(self.out, 'manifest.json')))
        result = cli.run('preprocess/make_records.py', *args, f'--output_dir={self.out}')
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn('taking over the stale lock', result.stderr)  # the killed run's
        with open(os.path.join(whole, 'manifest.json')) as f, \
                open(os.path.join(self.out, 'manifest.json')) as g:
            expected, resumed = json.load(f), json.load(g)
        self.assertIn(os.path.basename(first), resumed['splits']['train']['reused_shards'])
        for key in ('images', 'faces', 'ignored_faces', 'by_source', 'skipped'):
            self.assertEqual(resumed[key], expected[key], key)
        for path in shards.shard_paths(self.out, 'train', 6):
            whole_path = os.path.join(whole, os.path.basename(path))
            self.assertEqual(open(path, 'rb').read(), open(whole_path, 'rb').read())
        left = [n for _, _, names in os.walk(self.out) for n in names
                if n.endswith('.tmp') or n == '.lock']
        self.assertEqual(left, [])


    def test_sigterm_keeps_finished_shards_and_leaves_no_tmp_or_lock(self):
        # 600 images (90 a shard): the kill lands while shards 2-6 are still to write, also
        # on a loaded machine (at 48 the run could finish between the poll and the kill).
        args = ['--flagfile=configs/synthetic.flags', '--num_images=600', '--train_shards=6',
                '--synthetic_min_side=64', '--synthetic_max_side=96', '--num_workers=1',
                '--noprogress', f'--output_dir={self.out}']
        run = cli.start('preprocess/make_records.py', *args)
        first = shards.shard_paths(self.out, 'train', 6)[0]
        while not os.path.exists(first) and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate()
        self.assertEqual(run.returncode, 143, stderr[-2000:])
        self.assertIn('terminated (SIGTERM): finished shards are kept', stderr)
        self.assertNotIn('Traceback', stderr)
        self.assertTrue(os.path.exists(first))
        self.assertFalse(os.path.exists(os.path.join(self.out, 'manifest.json')))
        left = [n for _, _, names in os.walk(self.out) for n in names
                if n.endswith('.tmp') or n == '.lock']
        self.assertEqual(left, [])

if __name__ == '__main__':
    tf.test.main()
