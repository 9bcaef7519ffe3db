"""benchmarks/chaos.py in short: a 120-step run killed 3 times (seed 6: a SIGTERM, a SIGKILL
while a checkpoint is written and a SIGKILL), rerun after each; the benchmark's own checks
(step reached, steps lost per kill, checkpoints readable, export) must all hold."""

import re
import tempfile

import pytest
import tensorflow as tf

from tests import cli

pytestmark = pytest.mark.slow


class ChaosTest(tf.test.TestCase):

    def test_three_kills_lose_nothing_they_may_not(self):
        work_dir = tempfile.mkdtemp()
        out = cli.run('benchmarks/chaos.py', '--kills=3', '--seed=6', '--train_steps=120',
                      '--checkpoint_every=5', '--baselines=0', f'--work_dir={work_dir}',
                      timeout=900)
        self.assertEqual(out.returncode, 0, out.stdout[-3000:] + out.stderr[-2000:])
        rows = re.findall(r'^\| \d+ \| (SIG[^|]*) \|.*: (ok|FAILED) \|$', out.stdout, re.M)
        self.assertEqual([kind.strip() for kind, _ in rows],
                         ['SIGTERM', 'SIGKILL at a checkpoint', 'SIGKILL'], out.stdout)
        self.assertEqual({verdict for _, verdict in rows}, {'ok'})
        self.assertIn('| reached | step 120 of 120 |', out.stdout)
        self.assertIn('| export | ok |', out.stdout)
        readable = re.search(r'\| checkpoints readable \| (\d+) of (\d+) \|', out.stdout)
        self.assertEqual(readable.group(1), readable.group(2))


if __name__ == '__main__':
    tf.test.main()
