"""One update rule at any replica count (training.loop.update), on logical CPU devices:
the gradient is clipped by the global norm of its sum over the replicas, and a gradient
that is not finite on one replica of two skips the step on both (float16 loss scaling
then halves the scale). Each case runs tests/replica_updates.py in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import cli
from training import loop

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier


# The helper's batch: rows [30, 0], [0, 40], [6, 8], [12, -4]; the mean gradient [12, 11].
MEAN_GRADIENT = np.array([12.0, 11.0])


def _run(replicas, case):
    out = subprocess.run([sys.executable, os.path.join(cli.ROOT, 'tests', 'replica_updates.py'),
                          f'--replicas={replicas}', f'--case={case}'], cwd=cli.ROOT,
                         env=dict(os.environ, PYTHONPATH=cli.ROOT, TF_CPP_MIN_LOG_LEVEL='3'),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class ReplicaUpdateTest(tf.test.TestCase):

    def test_clipping_is_one_rule_at_one_and_two_replicas(self):
        clipped = MEAN_GRADIENT * loop.GLOBAL_CLIPNORM / np.linalg.norm(MEAN_GRADIENT)
        for replicas in (1, 2):
            out = _run(replicas, 'clip')
            self.assertEqual(out['applied'], [1] * replicas)
            for w in out['w']:  # SGD at rate 1: the update is minus the clipped gradient
                self.assertAllClose(w, -clipped, atol=1e-4)

    def test_non_finite_gradient_on_one_replica_skips_the_step_on_both(self):
        out = _run(2, 'overflow')
        self.assertEqual(out['applied'], [0, 0])
        self.assertEqual(out['w'], [[0.0, 0.0], [0.0, 0.0]])
        self.assertEqual(out['iterations'], 0)
        self.assertEqual(out['loss_scale'], 2.0 ** 14)  # halved from Keras' 2 ** 15


if __name__ == '__main__':
    tf.test.main()
