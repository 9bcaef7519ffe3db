"""Faults during training, each injected: damaged shards, divergence, kills, checkpoints cut
short, non-finite weights at export (RELIABILITY.md lists them)."""

import json
import os
import re
import shutil
import signal
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from data import shard_damage
from model.detector import DetectorConfig, build_detector
from preprocess import shards
from tests import cli
from tests import fixtures
from training import checkpoints
from training import divergence
from training import loop

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier


def _damage(path, offset_fraction=0.5, garbage=160):
    """Writes garbage bytes into the middle of a file, as a bad disk or copy would."""
    data = bytearray(open(path, 'rb').read())
    at = int(len(data) * offset_fraction)
    data[at:at + garbage] = np.random.RandomState(0).bytes(garbage)
    with open(path, 'wb') as f:
        f.write(bytes(data))


def _truncate(path, fraction=0.6):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * fraction)])


def _count(path):
    return sum(1 for _ in tf.data.TFRecordDataset(path).ignore_errors())


class ShardDamageTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        pattern = fixtures.write_tiny_shards(self.dir, fixtures.random_records(12), 'train', 2)
        self.files = sorted(tf.io.gfile.glob(pattern))

    def test_intact_shards_have_no_damage(self):
        self.assertEqual(shard_damage.scan(self.files), [])

    def test_garbage_and_truncation_are_located(self):
        _damage(self.files[0])
        _truncate(self.files[1])
        found = {d.path: d for d in shard_damage.scan(self.files)}
        self.assertEqual(set(found), set(self.files))
        for path, d in found.items():
            self.assertLess(d.readable, 6)
            self.assertEqual(d.readable, _count(path))
            self.assertIsNotNone(d.offset)
            self.assertIn(os.path.basename(path), d.describe())
            self.assertNotIn('function_node', d.describe())

    def test_records_lost_come_from_the_shards_counts(self):
        os.makedirs(os.path.join(self.dir, shards.STATS_DIR))
        stats_path = os.path.join(self.dir, shards.STATS_DIR, os.path.basename(self.files[0]) + '.json')
        with open(stats_path, 'w') as f:
            json.dump(shards.WriteStats(images=6).to_dict(), f)
        _damage(self.files[0])
        d = shard_damage.scan_shard(self.files[0])
        self.assertEqual(d.written, 6)
        self.assertEqual(d.lost, 6 - d.readable)
        self.assertIn(f'{d.lost} of its 6 records cannot be read', d.describe())


class DivergenceGuardTest(tf.test.TestCase):

    def test_non_finite_steps_are_counted_and_stop_the_run(self):
        guard = divergence.DivergenceGuard(max_bad_steps=3)
        self.assertIsNone(guard.check(1, 2.0, True))
        self.assertIn('update skipped', guard.check(2, float('nan'), False))
        guard.check(3, float('inf'), False)
        with self.assertRaisesRegex(divergence.Diverged, '3 bad steps in a row'):
            guard.check(4, float('nan'), False)
        self.assertEqual(guard.skipped, 3)

    def test_exploding_loss_warns_once_and_counts_as_bad(self):
        guard = divergence.DivergenceGuard(max_bad_steps=10)
        for step in range(1, 11):
            guard.check(step, 2.0, True)
        warning = guard.check(11, 5000.0, True)
        self.assertIn('2500x the median', warning)
        self.assertIsNone(guard.check(12, 6000.0, True))  # once per run of bad steps
        self.assertEqual(guard.in_a_row, 2)
        self.assertEqual(guard.skipped, 0)  # finite: applied, but bad

    def test_a_loss_near_zero_is_no_reference(self):
        guard = divergence.DivergenceGuard(max_bad_steps=2)
        guard.check(1, 0.001, True)  # a batch without faces
        self.assertIsNone(guard.check(2, 2.0, True))  # 2000x that, 20x the floor
        self.assertEqual(guard.in_a_row, 0)
        self.assertIn('x the median', guard.check(3, 500.0, True))

    def test_a_few_good_steps_do_not_end_a_run_of_bad_ones(self):
        guard = self._warmed(max_bad_steps=4)
        guard.check(11, 500.0, True)
        guard.check(12, 1.0, True)     # one good step between bad ones
        guard.check(13, 500.0, True)
        guard.check(14, 500.0, True)
        with self.assertRaises(divergence.Diverged):
            guard.check(15, 500.0, True)

    def test_recovery_after_enough_good_steps(self):
        guard = self._warmed(max_bad_steps=3)
        guard.check(11, 500.0, True)
        self.assertEqual(guard.in_a_row, 1)
        for step in range(12, 12 + divergence.RECOVERED):
            guard.check(step, 1.0, True)
        self.assertEqual(guard.in_a_row, 0)

    @staticmethod
    def _warmed(max_bad_steps):
        guard = divergence.DivergenceGuard(max_bad_steps)
        for step in range(1, 11):
            guard.check(step, 1.0, True)
        return guard


class TrainStepTest(tf.test.TestCase):

    def test_non_finite_loss_applies_no_update(self):
        pattern = fixtures.write_tiny_shards(tempfile.mkdtemp(),
                                             fixtures.random_records(8), 'train', 1)
        s = loop.TrainSettings(train_records=pattern, model_dir='', batch_size=4,
                               config=DetectorConfig(image_size=64), warmup_steps=1)
        strategy = tf.distribute.get_strategy()
        state = loop._build_state(s)
        dataset = loop.train_input.training_crops(s, 4, seed=0)
        step = loop.make_train_step(s, strategy, state, dataset.element_spec)
        batch = next(iter(dataset))
        _, applied = step(batch)
        self.assertTrue(bool(applied))
        kernel = state.model.trainable_variables[0]
        kernel.assign(tf.fill(kernel.shape, np.nan))
        before = [w.numpy() for w in state.model.trainable_variables[1:]]
        ema_before = [w.numpy() for w in state.ema_model.weights]
        iterations = int(state.optimizer.iterations.numpy())
        terms, applied = step(batch)
        self.assertFalse(bool(applied))
        self.assertEqual(int(state.step.numpy()), 1)
        self.assertEqual(int(state.optimizer.iterations.numpy()), iterations)
        for w, b in zip(state.model.trainable_variables[1:], before):
            np.testing.assert_array_equal(w.numpy(), b)
        for w, b in zip(state.ema_model.weights, ema_before):
            np.testing.assert_array_equal(w.numpy(), b)


class KeepBestTest(tf.test.TestCase):

    def test_non_finite_metrics_are_never_the_best(self):
        model_dir = tempfile.mkdtemp()
        s = loop.TrainSettings(train_records='', model_dir=model_dir, ema_decay=0.0,
                               config=DetectorConfig(image_size=64))
        state = loop._build_state(s)
        state.best_manager = tf.train.CheckpointManager(
            state.checkpoint, os.path.join(model_dir, 'best'), max_to_keep=1)
        best = os.path.join(model_dir, 'best', 'best.json')
        loop._keep_best(state, model_dir, 1, {'ap50': float('nan'), 'loss': 1.0})
        self.assertFalse(os.path.exists(best))
        loop._keep_best(state, model_dir, 2, {'ap50': 0.5, 'loss': 1.0})
        self.assertEqual(json.load(open(best))['step'], 2)
        loop._keep_best(state, model_dir, 3, {'ap50': float('inf'), 'loss': 1.0})
        self.assertEqual(json.load(open(best))['step'], 2)


class TrainFaultsTest(tf.test.TestCase):
    """train.py end to end on tiny shards."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        cls.records = os.path.join(cls.dir, 'rec')
        fixtures.write_tiny_shards(cls.records, fixtures.random_records(16), 'train', 2)
        cls.val = fixtures.write_tiny_shards(cls.records, fixtures.random_records(4, seed=9),
                                             'val', 1)

    def _records_copy(self, name):
        copy = os.path.join(self.dir, name)
        shutil.copytree(self.records, copy)
        return copy, sorted(tf.io.gfile.glob(os.path.join(copy, 'train-*')))

    def _train(self, model_dir, train_glob, *extra):
        return cli.run('train.py', '--flagfile=configs/smoke.flags', f'--train_records={train_glob}',
                       f'--val_records={self.val}', f'--model_dir={model_dir}', *extra)

    def _latest(self, model_dir):
        return tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))

    def test_damaged_shard_is_named_and_skipped_by_default(self):
        copy, files = self._records_copy('skip')
        _damage(files[0])
        run = self._train(os.path.join(self.dir, 'skip_model'), os.path.join(copy, 'train-*'),
                          '--train_steps=6', '--steps_per_epoch=6')
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        self.assertIn(files[0], run.stdout)
        self.assertRegex(run.stdout, r'corrupted record at \d+, after \d+ good records')
        self.assertIn('--bad_records=skip', run.stdout)
        self.assertIn('step 6/6', run.stdout)
        self.assertNotIn('Traceback', run.stderr)

    def test_damaged_shard_stops_the_run_with_its_name_when_asked(self):
        copy, files = self._records_copy('stop')
        _truncate(files[1])
        model_dir = os.path.join(self.dir, 'stop_model')
        run = self._train(model_dir, os.path.join(copy, 'train-*'), '--train_steps=20',
                          '--steps_per_epoch=20', '--checkpoint_every=100', '--bad_records=stop')
        self.assertEqual(run.returncode, 1, run.stdout[-3000:])
        self.assertIn(files[1], run.stderr)
        self.assertRegex(run.stderr, r'record at \d+')
        self.assertIn('make_records.py', run.stderr)
        self.assertNotIn('Traceback', run.stderr)
        self.assertIsNotNone(self._latest(model_dir))  # the step it stopped at is saved

    def test_divergence_stops_with_status_1_and_keeps_the_good_checkpoints(self):
        model_dir = os.path.join(self.dir, 'diverge')
        run = self._train(model_dir, os.path.join(self.records, 'train-*'), '--learning_rate=1e4',
                          '--train_steps=40', '--steps_per_epoch=1', '--max_bad_steps=10')
        self.assertEqual(run.returncode, 1, run.stdout[-3000:])
        self.assertIn('training diverged: 10 bad steps in a row', run.stderr)
        self.assertIn('warning: step', run.stdout)
        latest = self._latest(model_dir)
        step = int(latest.rsplit('-', 1)[1])
        self.assertLess(step, 10)  # written before the loss exploded, none after
        best = os.path.join(model_dir, 'best', 'best.json')
        # Validation ran every step, before and after the loss exploded.
        self.assertTrue(all(np.isfinite(v) for v in json.load(open(best)).values()))
        exported = cli.run('export.py', f'--model_dir={model_dir}', '--checkpoint=latest',
                           f'--export_dir={os.path.join(self.dir, "diverge_export")}')
        self.assertEqual(exported.returncode, 0, exported.stderr[-2000:])  # the kept one is finite

    def test_export_refuses_non_finite_weights(self):
        model_dir = os.path.join(self.dir, 'nan')
        run = self._train(model_dir, os.path.join(self.records, 'train-*'))
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        # The averaged weights of its checkpoint, one kernel made NaN, as a checkpoint.
        model, _, _ = checkpoints.load_trained(model_dir, 'latest')
        model.trainable_variables[0].assign(tf.fill(model.trainable_variables[0].shape, np.nan))
        nan_ckpt = tf.train.Checkpoint(ema=model).save(os.path.join(self.dir, 'nan_ckpt', 'ckpt'))
        export_dir = os.path.join(self.dir, 'nan_export')
        exported = cli.run('export.py', f'--model_dir={model_dir}',
                           f'--checkpoint={nan_ckpt}',
                           f'--export_dir={export_dir}')
        self.assertEqual(exported.returncode, 1)
        self.assertIn('holds NaN or inf', exported.stderr)
        self.assertFalse(os.path.exists(os.path.join(export_dir, 'saved_model.pb')))

    def test_kill_9_mid_training_resumes_step_optimizer_and_average(self):
        model_dir = os.path.join(self.dir, 'killed')
        run = cli.start('train.py', '--flagfile=configs/smoke.flags',
                        f'--train_records={os.path.join(self.records, "train-*")}',
                        f'--model_dir={model_dir}', '--train_steps=100000', '--val_records=',
                        '--log_every=1000')
        deadline = time.time() + 300
        while time.time() < deadline and run.poll() is None:
            latest = self._latest(model_dir)
            if latest and int(latest.rsplit('-', 1)[1]) >= 3:
                break
            time.sleep(0.2)
        run.send_signal(signal.SIGKILL)
        run.communicate()
        killed_at = int(self._latest(model_dir).rsplit('-', 1)[1])
        reader = tf.train.load_checkpoint(self._latest(model_dir))
        saved_iterations = reader.get_tensor('optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE')
        self.assertEqual(saved_iterations, killed_at)
        # The weight average after a resume's restore is the one saved when it was killed
        # (not the restored weights, nor a fresh network's).
        saved_ema = build_detector(checkpoints.load_config(model_dir))
        tf.train.Checkpoint(ema=saved_ema).restore(self._latest(model_dir)).expect_partial()
        s = loop.TrainSettings(train_records='', model_dir=model_dir,
                               config=checkpoints.load_config(model_dir))
        state = loop._build_state(s)
        loop._restore(self._latest(model_dir), state)
        for w, saved in zip(state.ema_model.weights, saved_ema.weights):
            np.testing.assert_array_equal(w.numpy(), saved.numpy(), err_msg=w.path)
        self.assertFalse(all(np.array_equal(a.numpy(), b.numpy()) for a, b in
                             zip(state.ema_model.trainable_variables,
                                 state.model.trainable_variables)))
        rerun = self._train(model_dir, os.path.join(self.records, 'train-*'),
                            f'--train_steps={killed_at + 2}', '--val_records=')
        self.assertEqual(rerun.returncode, 0, rerun.stderr[-3000:])
        self.assertIn(f'at step {killed_at}', rerun.stdout)
        final = tf.train.load_checkpoint(self._latest(model_dir))
        # The optimizer went on from its saved state (its count drives the learning-rate
        # schedule); the rerun restored it, weights and average together (_restore asserts
        # every saved object matched).
        self.assertEqual(final.get_tensor('optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'),
                         killed_at + 2)
        self.assertEqual(final.get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE'), killed_at + 2)

    def test_sigterm_saves_the_step_reached_releases_the_lock_and_resumes(self):
        model_dir = os.path.join(self.dir, 'terminated')
        train_glob = os.path.join(self.records, 'train-*')
        run = cli.start('train.py', '--flagfile=configs/smoke.flags', f'--train_records={train_glob}',
                        f'--model_dir={model_dir}', '--train_steps=100000', '--val_records=',
                        '--checkpoint_every=100000', '--log_every=1')
        reached = 0
        for line in run.stdout:  # progress lines, flushed as each step ends
            match = re.match(r'step (\d+)/', line)
            if match and int(match.group(1)) >= 3:
                reached = int(match.group(1))
                break
        self.assertGreater(reached, 0, 'train.py ended before step 3')
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=300)
        self.assertEqual(run.returncode, 143, stderr[-3000:])
        match = re.search(r'terminated \(SIGTERM\): saved step (\d+); rerun the same command '
                          'to resume', stdout)
        self.assertIsNotNone(match, stdout[-2000:])
        saved = int(match.group(1))
        self.assertGreaterEqual(saved, reached)  # no step lost (none was checkpointed before)
        self.assertTrue(self._latest(model_dir).endswith(f'ckpt-{saved}'))
        self.assertFalse(os.path.exists(os.path.join(model_dir, '.lock')))
        self.assertNotIn('Traceback', stderr)
        rerun = self._train(model_dir, train_glob, f'--train_steps={saved + 1}', '--val_records=')
        self.assertEqual(rerun.returncode, 0, rerun.stderr[-3000:])
        self.assertIn(f'at step {saved}', rerun.stdout)
        self.assertIn(f'step {saved + 1}/{saved + 1}', rerun.stdout)

    def test_sigterm_to_one_of_two_workers_saves_all_at_one_step(self):
        # multi_worker: PreemptionCheckpointHandler agrees on the step; every worker saves
        # there and stops with the single worker's line, and the rerun resumes from it.
        from tests.test_train import _free_ports
        cluster = {'worker': [f'localhost:{p}' for p in _free_ports(2)]}
        model_dir = os.path.join(self.dir, 'terminated_workers')
        train_glob = os.path.join(self.records, 'train-*')
        workers = [cli.start('train.py', '--flagfile=configs/smoke.flags',
                             f'--train_records={train_glob}', f'--model_dir={model_dir}',
                             '--val_records=', '--strategy=multi_worker', '--train_steps=100000',
                             '--checkpoint_every=100000', '--log_every=1',
                             env={'TF_CONFIG': json.dumps({'cluster': cluster, 'task': {
                                 'type': 'worker', 'index': i}})})
                   for i in range(2)]
        for line in workers[0].stdout:
            if re.match(r'step ([3-9]|\d\d+)/', line):
                break
        workers[1].send_signal(signal.SIGTERM)  # the non-chief: the chief must stop too
        saved = []
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=300)
            self.assertEqual(worker.returncode, 143, stderr[-3000:])
            match = re.search(r'terminated \(SIGTERM\): saved step (\d+); rerun', stdout)
            self.assertIsNotNone(match, stdout[-2000:])
            saved.append(int(match.group(1)))
        self.assertEqual(saved[0], saved[1])
        self.assertGreaterEqual(saved[0], 3)
        self.assertTrue(self._latest(model_dir).endswith(f'ckpt-{saved[0]}'))
        rerun = self._train(model_dir, train_glob, f'--train_steps={saved[0] + 1}',
                            '--val_records=')
        self.assertEqual(rerun.returncode, 0, rerun.stderr[-3000:])
        self.assertIn(f'at step {saved[0]}', rerun.stdout)

    def test_checkpoint_cut_short_falls_back_to_the_one_before(self):
        model_dir = os.path.join(self.dir, 'cut')
        run = self._train(model_dir, os.path.join(self.records, 'train-*'), '--train_steps=3',
                          '--val_records=')
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        ckpt_dir = os.path.join(model_dir, 'checkpoints')
        # A kill while saving step 4 leaves its temporary files, never listed ...
        os.makedirs(os.path.join(ckpt_dir, 'ckpt-4_temp'))
        with open(os.path.join(ckpt_dir, 'ckpt-4_temp', 'part-00000-of-00001.data-00000-of-00001'), 'wb') as f:
            f.write(b'half')
        # ... and a full disk cut the listed latest one short.
        _truncate(os.path.join(ckpt_dir, 'ckpt-3.data-00000-of-00001'), 0.5)
        rerun = self._train(model_dir, os.path.join(self.records, 'train-*'), '--train_steps=4',
                            '--val_records=')
        self.assertEqual(rerun.returncode, 0, rerun.stderr[-3000:])
        self.assertIn('ckpt-3 cannot be read', rerun.stdout)
        self.assertIn('resumed from', rerun.stdout)
        self.assertIn('at step 2', rerun.stdout)
        self.assertIn('step 4/4', rerun.stdout)
