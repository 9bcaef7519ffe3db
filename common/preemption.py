"""SIGTERM (a preemption notice, `kill`, `docker stop`, `scancel`) handled like Ctrl-C.

| entry point | on SIGTERM |
|---|---|
| train.py | the loop saves at the next step boundary, says so, exit 143 (SigtermFlag; under multi_worker TensorFlow's PreemptionCheckpointHandler, training/loop.py) |
| make_records.py, export.py | Terminated is raised where the process is; their cleanup for Ctrl-C runs, exit 143 (raise_on_sigterm) |

No TensorFlow import, so entry points can name Terminated before TensorFlow loads.
"""

import signal
import threading

EXIT_STATUS = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(BaseException):
    """SIGTERM stopped the run. A BaseException, as KeyboardInterrupt is, so that no
    `except Exception` on the way takes it for an error of its own."""


class SigtermFlag:
    """Notes SIGTERM instead of dying, so the training loop can save at its next step.

    Single-worker only: under multi_worker each worker would stop at its own step and the
    others hang in their collectives; there TensorFlow's PreemptionCheckpointHandler agrees
    on the step across workers (training/loop._preemption_handler).
    """

    def __init__(self, enabled):
        self.received = False
        self._before = None
        if enabled and threading.current_thread() is threading.main_thread():
            self._before = signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum, frame):
        del signum, frame
        self.received = True

    def restore(self):
        """Puts back the handler there was before."""
        if self._before is not None:
            signal.signal(signal.SIGTERM, self._before)
            self._before = None


def raise_on_sigterm():
    """From now on SIGTERM raises Terminated in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so `finally` blocks and atexit (lock release) run."""
    def terminated(signum, frame):
        del signum, frame
        raise Terminated()
    signal.signal(signal.SIGTERM, terminated)
