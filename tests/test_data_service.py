"""train.py through a tf.data service: a dispatcher and a worker in this process run the
input pipeline; training steps, checkpoints and a resume go through them."""

import os
import re
import tempfile

import pytest
import tensorflow as tf

from tests import cli
from tests import fixtures
from training import data_service
from training import devices

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier


class DataServiceTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        cls.train = fixtures.write_tiny_shards(os.path.join(cls.dir, 'rec'),
                                               fixtures.random_records(8), 'train', 2)

    def _service(self):
        """A dispatcher and a worker of the test's own: the worker's task count then tells
        whether this test's input ran on it (WorkerServer._num_tasks, TF's own test hook)."""
        dispatcher = data_service.start_dispatcher()
        worker = data_service.start_worker(data_service.address_of(dispatcher))
        self.assertEqual(worker._num_tasks(), 0)  # pylint: disable=protected-access
        return dispatcher, worker

    def _train(self, model_dir, dispatcher, *extra):
        return cli.run('train.py', '--flagfile=configs/smoke.flags', '--val_records=',
                       f'--train_records={self.train}', f'--model_dir={model_dir}',
                       f'--data_service={dispatcher.target}', '--precision=auto', *extra)

    def test_training_steps_and_resume_through_the_service(self):
        dispatcher, worker = self._service()
        model_dir = os.path.join(self.dir, 'model')
        first = self._train(model_dir, dispatcher)
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        self.assertIn('step 2/2', first.stdout)
        self.assertIn('precision float32 (no GPU', first.stdout)
        with open(os.path.join(model_dir, 'flags.txt')) as f:
            self.assertIn('--precision=float32', f.read())
        # The training input ran on this worker, not in train.py's process.
        self.assertGreaterEqual(worker._num_tasks(), 1)  # pylint: disable=protected-access
        second = self._train(model_dir, dispatcher, '--train_steps=4')
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        self.assertIn('resumed from', second.stdout)
        self.assertIn('step 4/4', second.stdout)
        self.assertGreaterEqual(worker._num_tasks(), 2)  # pylint: disable=protected-access
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
        self.assertEqual(os.path.basename(latest), 'ckpt-4')

    def test_batches_come_from_the_worker(self):
        from data import pipeline
        dispatcher, worker = self._service()
        ds = pipeline.build_dataset(self.train, 2, 64, True, shuffle_buffer=4)
        remote = data_service.distribute(ds, dispatcher.target)
        batch = next(iter(remote))
        self.assertEqual(worker._num_tasks(), 1)  # pylint: disable=protected-access
        self.assertEqual(batch['image'].dtype, tf.uint8)
        self.assertEqual(batch['image'].shape, (2, 64, 64, 3))


class ServiceFaultTest(tf.test.TestCase):
    """Faults of a service in processes of its own, as on other machines: a worker killed,
    the dispatcher killed and restarted with its --work_dir (fault-tolerant mode)."""

    def test_training_goes_on_past_a_lost_worker_and_a_restarted_dispatcher(self):
        from tests.test_train import _free_ports
        root = tempfile.mkdtemp()
        train = fixtures.write_tiny_shards(os.path.join(root, 'rec'), fixtures.random_records(8),
                                           'train', 2)
        port = _free_ports(1)[0]
        dispatcher_args = ('data_service.py', f'--port={port}', '--workers=0',
                           f'--work_dir={os.path.join(root, "journal")}')
        dispatcher = cli.start(*dispatcher_args)
        self.assertIn('dispatcher at', dispatcher.stdout.readline())
        workers = [cli.start('data_service.py', f'--dispatcher=localhost:{port}', '--workers=1')
                   for _ in range(2)]
        for worker in workers:
            self.assertIn('registered', worker.stdout.readline())
        trainer = cli.start('train.py', '--flagfile=configs/smoke.flags', '--val_records=',
                            f'--train_records={train}', f'--model_dir={os.path.join(root, "m")}',
                            f'--data_service=grpc://localhost:{port}', '--train_steps=400',
                            '--log_every=10', '--checkpoint_every=1000')
        steps = []
        try:
            for line in trainer.stdout:
                match = re.match(r'step (\d+)/', line)
                if not match:
                    continue
                steps.append(int(match.group(1)))
                if steps[-1] == 50:
                    workers[1].kill()  # the other worker serves on
                if steps[-1] == 200:
                    dispatcher.kill()
                    dispatcher.wait()
                    dispatcher = cli.start(*dispatcher_args)  # recovers from its journal
            _, stderr = trainer.communicate(timeout=300)
        finally:
            for process in [dispatcher, *workers, trainer]:
                process.kill()
        self.assertEqual(trainer.returncode, 0, stderr[-3000:])
        self.assertEqual(steps[-1], 400)
        self.assertIn(50, steps)
        self.assertIn(200, steps)

    def test_a_service_that_is_gone_stops_the_run_with_one_line_and_it_resumes(self):
        # The dispatcher and its only worker killed for good: tf.data's own client would
        # wait forever; the run saves its step and names the address after the timeout.
        from tests.test_train import _free_ports
        root = tempfile.mkdtemp()
        train = fixtures.write_tiny_shards(os.path.join(root, 'rec'), fixtures.random_records(8),
                                           'train', 1)
        port = _free_ports(1)[0]
        address = f'grpc://localhost:{port}'
        dispatcher = cli.start('data_service.py', f'--port={port}', '--workers=1')
        self.assertIn('dispatcher at', dispatcher.stdout.readline())
        model_dir = os.path.join(root, 'm')
        args = ('train.py', '--flagfile=configs/smoke.flags', '--val_records=',
                f'--train_records={train}', f'--model_dir={model_dir}', '--train_steps=400',
                '--log_every=10', '--checkpoint_every=1000')
        trainer = cli.start(*args, f'--data_service={address}', '--data_service_timeout=10')
        try:
            for line in trainer.stdout:
                if line.startswith('step 30/'):
                    dispatcher.kill()
                    break
            _, stderr = trainer.communicate(timeout=120)
        finally:
            for process in (dispatcher, trainer):
                process.kill()
        self.assertEqual(trainer.returncode, 1, stderr[-3000:])
        last = stderr.strip().splitlines()[-1]
        self.assertIn(f'train.py: error: no batch from the tf.data service at {address} in 10 s',
                      last)
        self.assertNotIn('Traceback', stderr)
        again = cli.run(*args, '--train_steps=40')  # on this machine's CPU now
        self.assertEqual(again.returncode, 0, again.stderr[-3000:])
        resumed = int(re.search(r'resumed from \S+ at step (\d+)', again.stdout).group(1))
        self.assertGreaterEqual(resumed, 30)

    def test_no_dispatcher_at_the_address_is_one_line(self):
        from tests.test_train import _free_ports
        address = f'grpc://localhost:{_free_ports(1)[0]}'
        root = tempfile.mkdtemp()
        train = fixtures.write_tiny_shards(os.path.join(root, 'rec'), fixtures.random_records(4),
                                           'train', 1)
        out = cli.run('train.py', '--flagfile=configs/smoke.flags', '--val_records=',
                      f'--train_records={train}', f'--model_dir={os.path.join(root, "m")}',
                      f'--data_service={address}')
        self.assertEqual(out.returncode, 1, out.stderr[-3000:])
        self.assertEqual(out.stderr.strip().splitlines()[-1][:60],
                         f'train.py: error: no tf.data service dispatcher at {address}'[:60])


class PrecisionTest(tf.test.TestCase):

    def test_auto_picks_by_compute_capability(self):
        self.assertEqual(devices.resolve_precision('auto', [])[0], 'float32')
        self.assertEqual(devices.resolve_precision('auto', [(6, 1)])[0], 'float32')
        self.assertEqual(devices.resolve_precision('auto', [(7, 5)])[0], 'mixed_float16')
        self.assertEqual(devices.resolve_precision('auto', [(8, 0)])[0], 'mixed_bfloat16')
        self.assertEqual(devices.resolve_precision('auto', [(9, 0), (7, 0)])[0], 'mixed_float16')
        self.assertEqual(devices.resolve_precision('mixed_float16')[0], 'mixed_float16')
        with self.assertRaisesRegex(ValueError, 'choose auto'):
            devices.resolve_precision('float8')


if __name__ == '__main__':
    tf.test.main()
