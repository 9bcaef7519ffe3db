"""SIGTERM (a preemption notice, `kill`, `docker stop`, `scancel`) handled like Ctrl-C: the
training loop saves at the next step boundary, train.py exits 143. No TensorFlow import, so
train.py can name Terminated before TensorFlow loads."""

import signal
import threading

EXIT_STATUS = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(Exception):
    """SIGTERM stopped the run; the loop saved the step it reached (the exception's arg)."""


class SigtermFlag:
    """Notes SIGTERM instead of dying, so the loop can save at its next step boundary.

    Single-worker only: under multi_worker each worker would stop at its own step and the
    others hang in their collectives, so there SIGTERM keeps its default (the process ends;
    the rerun resumes from the last checkpoint, as after SIGKILL).
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
