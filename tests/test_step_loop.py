"""training/loop._run with a stand-in train step: when the host reads a step's results, and
what a skipped step leaves (logs and checkpoints go on); and the real step under
OneDeviceStrategy, which one GPU gets."""

import contextlib
import io
import os
import tempfile

import tensorflow as tf

from model.detector import DetectorConfig
from tests import fixtures
from training import loop


class _Batches:
    lost_records = 0

    def next(self, step):
        return step


class _Read:
    """A step's loss or applied flag that notes when the host reads it."""

    def __init__(self, events, step, value):
        self.events, self.step, self.value = events, step, value

    def __float__(self):
        self.events.append(('read', self.step))
        return float(self.value)

    def __bool__(self):
        return bool(self.value)


def _settings(model_dir, **kwargs):
    return loop.TrainSettings(train_records='', model_dir=model_dir, ema_decay=0.0,
                              config=DetectorConfig(image_size=64), **kwargs)


def _state(s):
    state = loop._build_state(s)
    state.manager = tf.train.CheckpointManager(
        state.checkpoint, os.path.join(s.model_dir, 'checkpoints'), max_to_keep=100)
    state.best_manager = tf.train.CheckpointManager(
        state.checkpoint, os.path.join(s.model_dir, 'best'), max_to_keep=1)
    return state


def _fake_step(state, events, skipped=()):
    """A train step that applies (advances the step) unless its call number is in skipped."""
    calls = []

    def train_step(batch):
        calls.append(batch)
        applied = len(calls) not in skipped
        events.append(('run', len(calls)))
        if applied:
            state.step.assign_add(1)
        return {'loss': _Read(events, len(calls), 1.0)}, _Read(events, len(calls), applied)

    return train_step


class RunTest(tf.test.TestCase):

    def _run(self, s, skipped=()):
        state, events = _state(s), []
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            loop._run(s, state, _fake_step(state, events, skipped), _Batches(), None, True)
        return state, events, out.getvalue()

    def test_steps_are_read_only_where_the_loop_acts(self):
        s = _settings(tempfile.mkdtemp(), train_steps=10, log_every=5, checkpoint_every=5)
        _, events, out = self._run(s)
        runs = [e[1] for e in events if e[0] == 'run']
        self.assertEqual(runs, list(range(1, 11)))
        # Step 1 is read at once (the clock starts), then steps 2-5 only after step 5 ran,
        # and 6-10 after step 10: no step before a due one waited for its read.
        first_read = {}
        for i, (kind, step) in enumerate(events):
            if kind == 'read':
                first_read.setdefault(step, i)
        position = {step: events.index(('run', step)) for step in runs}
        for step in (2, 3, 4, 6, 7, 8, 9):
            self.assertLess(position[step + 1], first_read[step], events)
        self.assertLess(first_read[1], position[2])
        self.assertIn('step 5/10', out)
        self.assertIn('step 10/10', out)

    def test_a_skipped_step_does_not_stop_logs_or_checkpoints(self):
        # float16's first steps often skip while the loss scale halves; the steps after
        # them log and save as usual (a skipped update left the weights as they were).
        s = _settings(tempfile.mkdtemp(), train_steps=3, log_every=1, checkpoint_every=1)
        state, _, out = self._run(s, skipped=(1,))
        self.assertIn('step 0: gradients not finite', out)
        for step in (1, 2, 3):
            self.assertIn(f'step {step}/3', out)
        self.assertEqual([os.path.basename(p) for p in state.manager.checkpoints],
                         ['ckpt-1', 'ckpt-2', 'ckpt-3'])

    def test_an_exploded_update_writes_no_checkpoint(self):
        s = _settings(tempfile.mkdtemp(), train_steps=4, log_every=1, checkpoint_every=1)
        state, events = _state(s), []
        step = _fake_step(state, events)

        def exploding(batch):  # steps 3 and 4 apply a loss 1000x the ones before
            terms, applied = step(batch)
            if int(state.step.numpy()) >= 3:
                terms = {'loss': 1000.0}
            return terms, applied

        with contextlib.redirect_stdout(io.StringIO()):
            loop._run(s, state, exploding, _Batches(), None, True)
        self.assertEqual([os.path.basename(p) for p in state.manager.checkpoints],
                         ['ckpt-1', 'ckpt-2'])


class OneDeviceTest(tf.test.TestCase):

    def test_the_train_step_under_one_device_strategy(self):
        pattern = fixtures.write_tiny_shards(tempfile.mkdtemp(), fixtures.random_records(8),
                                             'train', 1)
        s = loop.TrainSettings(train_records=pattern, model_dir='', batch_size=4,
                               config=DetectorConfig(image_size=64), warmup_steps=1)
        strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
        with strategy.scope():
            state = loop._build_state(s)
        batches = loop.train_input.TrainInput(s, strategy, 0)
        step = loop.make_train_step(s, strategy, state, batches.dataset.element_spec)
        before = state.model.trainable_variables[0].numpy()
        for _ in range(2):
            _, applied = step(batches.next(0))
            self.assertTrue(bool(applied))
        self.assertEqual(int(state.step.numpy()), 2)
        self.assertNotAllClose(state.model.trainable_variables[0].numpy(), before)


if __name__ == '__main__':
    tf.test.main()
