"""Tests for preprocess/beam_writer.py: on Beam's DirectRunner, the records of the local runner.

Few, small Beam runs (each starts worker processes): the official-format fixtures of the
reader tests (bad items included) plus synthetic images and negatives.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier

pytest.importorskip('apache_beam', reason='needs Apache Beam: pip install -r requirements-beam.txt')

from preprocess import beam_writer  # noqa: E402
from preprocess import record_sources  # noqa: E402
from preprocess import shards  # noqa: E402
from tests.test_celeba import make_celeba_root  # noqa: E402
from tests.test_fddb import make_fddb_root  # noqa: E402
from tests.test_jsonl_source import make_manifest  # noqa: E402
from tests.test_widerface import make_wider_root  # noqa: E402


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TWO_PROCESSES = ('--runner=DirectRunner', '--direct_num_workers=2',
                  '--direct_running_mode=multi_processing')
_SHARDS = {'train': 3, 'val': 2, 'test': 1}


def _shard_bytes(out_dir):
    """{shard name: file bytes} of every split's shards."""
    names = sorted(n for n in os.listdir(out_dir) if n.endswith('.tfrecord'))
    return {n: open(os.path.join(out_dir, n), 'rb').read() for n in names}


def _counts(manifest):
    """What both runners must agree on: per split images, faces, skips, drops, problems."""
    keys = ('images', 'faces', 'ignored_faces', 'by_source', 'skipped', 'dropped_boxes', 'shards')
    return {split: {k: info[k] for k in keys} for split, info in manifest['splits'].items()} | {
        'problems': manifest['problems']}


def _source_ids(out_dir, split):
    ids = []
    for path in shards.shard_paths(out_dir, split, _SHARDS[split]):
        for s in tf.data.TFRecordDataset(path).as_numpy_iterator():
            ids.append(tf.train.Example.FromString(s).features.feature['image/source_id']
                       .bytes_list.value[0].decode())
    return ids


class BeamWriterTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        root = os.path.join(cls.tmp, 'inputs')
        cls.inputs = dict(
            wider_dir=make_wider_root(os.path.join(root, 'wider'), with_val=True),
            celeba_dir=make_celeba_root(os.path.join(root, 'celeba')),
            fddb_dir=make_fddb_root(os.path.join(root, 'fddb')),
            jsonl=make_manifest(root))
        cls.local = os.path.join(cls.tmp, 'local')
        cls.local_manifest = record_sources.make_records(cls._config(cls.local))

    @classmethod
    def _config(cls, out, **kwargs):
        return record_sources.Config(**{**dict(
            output_dir=out, sources=('synthetic', 'wider', 'celeba', 'fddb', 'jsonl'),
            splits=('train', 'val', 'test'), num_shards=dict(_SHARDS), num_images=12,
            val_fraction=0.25, synthetic_min_side=48, synthetic_max_side=64,
            negative_fraction=0.2, negatives=('generated', 'crops'), num_workers=1,
            progress=False, **cls.inputs), **kwargs})

    def test_beam_writes_the_local_runners_records(self):
        out = os.path.join(self.tmp, 'beam')
        manifest = record_sources.make_records(
            self._config(out, runner='beam', beam_options=_TWO_PROCESSES))
        local = self.local_manifest
        self.assertEqual(_counts(manifest), _counts(local))
        self.assertEqual(manifest['skipped'], local['skipped'])
        self.assertNotEmpty(manifest['skipped'])  # the fixtures' bad items, counted alike
        self.assertNotEmpty(manifest['dropped_boxes'])
        for split in _SHARDS:
            self.assertNotEmpty(_source_ids(out, split), split)
            self.assertCountEqual(_source_ids(out, split), _source_ids(self.local, split))
        sources = {shards.source_of(s) for split in _SHARDS for s in _source_ids(out, split)}
        self.assertContainsSubset({'synthetic', 'wider', 'celeba', 'fddb', 'fixture',
                                   'negatives_generated', 'negatives_crops'}, sources)
        # Same items, same shard of each, same order: the same files, byte for byte.
        self.assertEqual(_shard_bytes(out), _shard_bytes(self.local))
        self.assertFalse(os.path.exists(os.path.join(out, beam_writer.BEAM_DIR)))  # the listing

    def test_rerun_writes_only_missing_shards_whichever_runner_wrote_the_rest(self):
        out = os.path.join(self.tmp, 'mixed')
        record_sources.make_records(self._config(out))
        for name in ('train-00001-of-00003.tfrecord', 'val-00000-of-00002.tfrecord'):
            os.remove(os.path.join(out, shards.STATS_DIR, name + '.json'))  # as if killed mid-shard
        os.remove(os.path.join(out, 'val-00000-of-00002.tfrecord'))
        with open(os.path.join(out, 'train-00001-of-00003.tfrecord.tmp-dead'), 'wb') as f:
            f.write(b'half a shard')  # a killed attempt's temporary file
        manifest = record_sources.make_records(self._config(out, runner='beam'))
        reused = sum(len(info['reused_shards']) for info in manifest['splits'].values())
        self.assertEqual(reused, sum(_SHARDS.values()) - 2)
        self.assertEqual(_counts(manifest), _counts(self.local_manifest))
        self.assertEqual(_shard_bytes(out), _shard_bytes(self.local))
        self.assertFalse(os.path.exists(os.path.join(out, 'train-00001-of-00003.tfrecord.tmp-dead')))

    def test_strict_stops_at_a_skipped_item(self):
        with self.assertRaisesRegex(shards.StrictError, 'malformed_annotation|missing_file|corrupt_image'):
            record_sources.make_records(self._config(os.path.join(self.tmp, 'strict'), runner='beam',
                                                     strict=True))

    def test_bad_pipeline_options_are_one_line_before_any_work(self):
        out = os.path.join(self.tmp, 'refused')
        for options, message in ((('--runner=NoSuchRunner',), 'Unexpected pipeline runner: NoSuchRunner'),
                                 (('--direct_num_workers=x',), "argument --direct_num_workers: invalid int value: 'x'")):
            with self.assertRaisesRegex(record_sources.ConfigError, f'^--beam_pipeline_options: {message}$'):
                record_sources.make_records(self._config(out, runner='beam', beam_options=options))
        self.assertFalse(os.path.exists(out))

    def test_killed_run_rerun_gives_complete_output(self):
        out = os.path.join(self.tmp, 'killed')
        args = [sys.executable, 'preprocess/make_records.py', f'--output_dir={out}', '--runner=beam',
                f'--beam_pipeline_options={" ".join(_TWO_PROCESSES)}', '--noprogress',
                '--source=synthetic,wider,celeba,fddb,jsonl', '--splits=train,val,test',
                '--train_shards=3', '--val_shards=2', '--num_images=12', '--val_fraction=0.25',
                '--synthetic_min_side=48', '--synthetic_max_side=64', '--negative_fraction=0.2',
                '--negatives=generated,crops'] + [f'--{k}={v}' for k, v in self.inputs.items()]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
        run = subprocess.Popen(args, cwd=_REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(out, 'train-00000-of-00003.tfrecord')):
            self.assertIsNone(run.poll(), 'the run ended before its first shard')
            self.assertLess(time.time(), deadline)
            time.sleep(0.01)
        os.killpg(run.pid, signal.SIGKILL)  # the launcher and Beam's workers
        run.wait()
        self.assertFalse(os.path.exists(os.path.join(out, 'manifest.json')))  # killed half-way

        result = subprocess.run(args, cwd=_REPO, env=env, capture_output=True, text=True, timeout=180)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        with open(os.path.join(out, 'manifest.json')) as f:
            manifest = json.load(f)
        self.assertEqual(_counts(manifest), _counts(self.local_manifest))
        self.assertEqual(_shard_bytes(out), _shard_bytes(self.local))
        self.assertEmpty([n for n in os.listdir(out) if '.tmp' in n or n == beam_writer.BEAM_DIR])

    def test_inputs_and_outputs_on_a_gfile_file_system_as_in_a_bucket(self):
        # TensorFlow's in-memory ram:// stands in for gs://: only tf.io.gfile can reach it.
        base = os.path.dirname(self.inputs['jsonl'])
        for folder, _, names in os.walk(base):
            for name in names:
                target = 'ram://fixture/' + os.path.relpath(os.path.join(folder, name), base)
                tf.io.gfile.makedirs(os.path.dirname(target))
                tf.io.gfile.copy(os.path.join(folder, name), target, overwrite=True)
        only_jsonl = dict(sources=('jsonl',), negative_fraction=0.0)
        on_disk = record_sources.make_records(self._config(os.path.join(self.tmp, 'disk'), **only_jsonl))
        in_ram = record_sources.make_records(self._config(
            'ram://records', runner='beam', jsonl='ram://fixture/labels.jsonl', **only_jsonl))
        self.assertEqual(json.dumps(_counts(in_ram)), json.dumps(_counts(on_disk)).replace(base, 'ram://fixture'))
        self.assertEqual(in_ram['skipped'], {'malformed_annotation': 7, 'corrupt_image': 1, 'missing_file': 1})
        self.assertTrue(tf.io.gfile.exists('ram://records/manifest.json'))


class DefaultRunTest(tf.test.TestCase):

    def test_no_flags_writes_the_synthetic_set_and_says_so(self):
        cwd = tempfile.mkdtemp(dir=self.get_temp_dir())
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
        run = subprocess.Popen([sys.executable, os.path.join(_REPO, 'preprocess/make_records.py')],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
        first_line = run.stdout.readline()
        first_shard = os.path.join(cwd, 'out/records/synthetic', shards.STATS_DIR, shards.shard_name('train', 0, 4) + '.json')
        deadline = time.time() + 120
        while not os.path.exists(first_shard) and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)  # the whole set takes a minute; its first shard says enough
        _, stderr = run.communicate()
        self.assertIn('no flags given', first_line)
        self.assertIn('out/records/synthetic', first_line)
        self.assertTrue(os.path.exists(first_shard), stderr[-2000:])
        with open(first_shard) as f:
            self.assertEqual(json.load(f)['images'], 500)  # 2000 train images over 4 shards


if __name__ == '__main__':
    tf.test.main()
