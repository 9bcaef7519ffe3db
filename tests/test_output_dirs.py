"""common/output_dirs.py and the entry points that use it: unwritable or full output
folders refused before any work, and one writer per folder (a lock naming its holder)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

from common import output_dirs
from tests import cli

_AS_ROOT = hasattr(os, 'geteuid') and os.geteuid() == 0


def _finished_pid():
    """The pid of a process that has ended (no live process has it now)."""
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


class CheckOutputDirTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def test_writable_folder_with_space_passes_and_leaves_nothing(self):
        output_dirs.check_output_dir(os.path.join(self.dir, 'new', 'deeper'), 0.0)
        self.assertEqual(os.listdir(self.dir), [])

    def test_too_little_free_space_names_folder_and_flag(self):
        with self.assertRaisesRegex(output_dirs.OutputDirError,
                                    rf'{self.dir} has only [\d.]+ GB free, needs --min_free_gb=1e\+09'):
            output_dirs.check_output_dir(self.dir, 1e9)

    @unittest.skipIf(_AS_ROOT, 'root writes into read-only folders')
    def test_read_only_folder_is_not_writable(self):
        locked = os.path.join(self.dir, 'ro')
        os.mkdir(locked, 0o500)
        self.addCleanup(os.chmod, locked, 0o700)
        with self.assertRaisesRegex(output_dirs.OutputDirError, rf'{locked} is not writable'):
            output_dirs.check_output_dir(os.path.join(locked, 'records'), 0.0)

    def test_failed_probe_write_is_not_writable(self):
        # Runs as root too (where chmod does not block): the probe file cannot be made.
        def refuse(**_):
            raise PermissionError(13, 'Permission denied')
        original, output_dirs.tempfile.mkstemp = output_dirs.tempfile.mkstemp, refuse
        self.addCleanup(setattr, output_dirs.tempfile, 'mkstemp', original)
        with self.assertRaisesRegex(output_dirs.OutputDirError,
                                    rf'^{self.dir} is not writable \(Permission denied\)$'):
            output_dirs.check_output_dir(self.dir, 0.0)


class LockTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.lock = os.path.join(self.dir, output_dirs.LOCK_FILE)

    def _hold(self, pid, command='make_records.py --output_dir=x'):
        with open(self.lock, 'w') as f:
            json.dump({'pid': pid, 'host': socket.gethostname(), 'command': command}, f)

    def test_claim_writes_holder_and_release_removes_it(self):
        path = output_dirs.claim(self.dir)
        with open(path) as f:
            self.assertEqual(json.load(f)['pid'], os.getpid())
        self.assertEqual(output_dirs.claim(self.dir), path)  # ours already: claimed again
        output_dirs.release(path)
        self.assertFalse(os.path.exists(path))

    def test_folder_created_for_the_lock_is_removed_when_left_empty(self):
        folder = os.path.join(self.dir, 'new')
        path = output_dirs.claim(folder)
        output_dirs.release(path, remove_empty_folder=True)
        self.assertFalse(os.path.exists(folder))
        path = output_dirs.claim(folder)
        open(os.path.join(folder, 'output'), 'w').close()
        output_dirs.release(path, remove_empty_folder=True)
        self.assertEqual(os.listdir(folder), ['output'])

    def test_live_holder_is_refused_by_name(self):
        sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
        self.addCleanup(sleeper.kill)
        self._hold(sleeper.pid, 'train.py --model_dir=m')
        with self.assertRaises(output_dirs.OutputDirError) as caught:
            output_dirs.claim(self.dir)
        for part in (self.lock, f'pid {sleeper.pid}', socket.gethostname(), 'train.py --model_dir=m'):
            self.assertIn(part, str(caught.exception))
        with open(self.lock) as f:
            self.assertEqual(json.load(f)['pid'], sleeper.pid)  # left to its holder

    def test_stale_lock_is_taken_over(self):
        self._hold(_finished_pid())
        path = output_dirs.claim(self.dir)
        with open(path) as f:
            self.assertEqual(json.load(f)['pid'], os.getpid())
        output_dirs.release(path)

    def test_release_leaves_another_processs_lock(self):
        self._hold(os.getppid())
        output_dirs.release(self.lock)
        self.assertTrue(os.path.exists(self.lock))


class EntryPointsTest(unittest.TestCase):
    """Each entry point refuses a bad output folder with one line and a non-zero exit."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.out = os.path.join(self.dir, 'out')

    def _assert_refused(self, result, *parts):
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertNotIn('Traceback', result.stderr)
        for part in parts:
            self.assertIn(part, result.stderr)

    def _make_records(self, *args):
        return cli.run('preprocess/make_records.py', '--flagfile=configs/smoke_records.flags',
                       f'--output_dir={self.out}', '--num_workers=1', '--noprogress', *args)

    def _train(self, *args):
        return cli.run('train.py', '--flagfile=configs/smoke.flags', f'--model_dir={self.out}',
                       f'--train_records={self.dir}/none-*.tfrecord', *args)

    def test_full_disk_refused_before_any_work(self):
        self._assert_refused(self._make_records('--min_free_gb=1e9'), self.dir, 'GB free',
                             '--min_free_gb=1e+09')
        self.assertFalse(os.path.exists(self.out))
        self._assert_refused(self._train('--min_free_gb=1e9'), 'GB free', '--min_free_gb')
        self.assertFalse(os.path.exists(self.out))

    @unittest.skipIf(_AS_ROOT, 'root writes into read-only folders')
    def test_read_only_folder_refused_by_each(self):
        os.chmod(self.dir, 0o500)
        self.addCleanup(os.chmod, self.dir, 0o700)
        self._assert_refused(self._make_records(), f'{self.dir} is not writable')
        self._assert_refused(self._train(), f'{self.dir} is not writable')
        result = cli.run('export.py', '--model_dir=models/facedet_default',
                         f'--export_dir={self.out}')
        self._assert_refused(result, f'{self.dir} is not writable')

    def test_export_into_a_non_folder_refused_before_loading(self):
        with open(self.out, 'w') as f:
            f.write('a file, not a folder')
        result = cli.run('export.py', '--model_dir=models/facedet_default',
                         f'--export_dir={self.out}/export')
        self._assert_refused(result, f'{self.out} is not a folder')

    def test_second_writer_refused_naming_the_holder(self):
        os.makedirs(self.out)
        sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
        self.addCleanup(sleeper.kill)
        lock = os.path.join(self.out, output_dirs.LOCK_FILE)
        with open(lock, 'w') as f:
            json.dump({'pid': sleeper.pid, 'host': socket.gethostname(),
                       'command': 'make_records.py --output_dir=out'}, f)
        for result in (self._make_records(), self._train()):
            self._assert_refused(result, lock, f'pid {sleeper.pid}', socket.gethostname(),
                                 'make_records.py --output_dir=out')
        self.assertEqual(sorted(os.listdir(self.out)), [output_dirs.LOCK_FILE])

    def test_stale_lock_taken_over_and_removed_at_exit(self):
        os.makedirs(self.out)
        lock = os.path.join(self.out, output_dirs.LOCK_FILE)
        with open(lock, 'w') as f:
            json.dump({'pid': _finished_pid(), 'host': socket.gethostname(), 'command': 'x'}, f)
        result = self._make_records('--num_images=4', '--negative_fraction=0')
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn(f'taking over the stale lock {lock}', result.stderr)
        self.assertFalse(os.path.exists(lock))
        self.assertTrue(os.path.exists(os.path.join(self.out, 'manifest.json')))


if __name__ == '__main__':
    unittest.main()
