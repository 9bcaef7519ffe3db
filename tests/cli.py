"""Runs the project's entry points in a fresh Python process, as a user would."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, timeout=600, tf_log_level='3'):
    """Runs `python <script> args...` from the repo root; returns the CompletedProcess.
    tf_log_level None runs it as a user would, without TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    env['PYTHONPATH'] = ROOT
    if tf_log_level is not None:
        env['TF_CPP_MIN_LOG_LEVEL'] = tf_log_level
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def start(script, *args, env=None):
    """Starts `python <script> args...` without waiting; returns the Popen (text pipes)."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3', **(env or {}))
    return subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
