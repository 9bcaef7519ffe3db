"""common/quiet.py: TF's start-up notices are dropped, every other stderr line is kept."""

import os
import subprocess
import sys

import tensorflow as tf

from common import quiet
from tests import cli

_SCRIPT = r"""
import os, sys
from common import quiet
with quiet.drop_notices():
    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n')
    os.write(2, b'I0000 00:00:1.2  7 port.cc:153] oneDNN custom operations are on. You may see\n')
    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n')
    os.write(2, b'E0000 real_error.cc:1] something failed\n')
    print('python warning line', file=sys.stderr)
print('after', file=sys.stderr)
with quiet.drop_notices():
    raise ValueError('shown')
"""


class QuietTest(tf.test.TestCase):

    def test_notices_dropped_errors_and_tracebacks_kept(self):
        proc = subprocess.run([sys.executable, '-c', _SCRIPT], cwd=cli.ROOT,
                              capture_output=True, text=True, timeout=60)
        self.assertNotIn('absl::InitializeLog', proc.stderr)
        self.assertNotIn('oneDNN', proc.stderr)
        self.assertNotIn('XNNPACK', proc.stderr)
        self.assertIn('E0000 real_error.cc:1] something failed\npython warning line\nafter\n',
                      proc.stderr)
        self.assertIn('Traceback', proc.stderr)
        self.assertIn('ValueError: shown', proc.stderr)
        self.assertEqual(proc.returncode, 1)

    def test_no_cuinit_line_without_a_gpu(self):
        if quiet.has_nvidia_device():
            self.skipTest('an NVIDIA device is here: its cuInit line would be a real fault')
        env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
        script = ('import os\nfrom common import quiet\ntf = quiet.import_tensorflow()\n'
                  'tf.constant(1)\nos.write(2, b"E0000 real_error.cc:1] kept\\n")\n')
        proc = subprocess.run([sys.executable, '-c', script], cwd=cli.ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn('cuInit', proc.stderr)
        self.assertIn('E0000 real_error.cc:1] kept', proc.stderr)


if __name__ == '__main__':
    tf.test.main()
