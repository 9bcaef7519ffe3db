"""Progress lines of a long run: step, losses, images/s and ETA."""

import time

import numpy as np


class Progress:
    """Prints step, losses, images/s and ETA."""

    def __init__(self, total_steps, batch_size):
        self.total, self.batch = total_steps, batch_size
        self.t0 = self.step0 = None

    def start(self, step):
        """Starts the clock after the first step, so tracing time is not counted as speed."""
        if self.t0 is None:
            self.t0, self.step0 = time.time(), step

    def line(self, step, terms):
        elapsed = max(time.time() - self.t0, 1e-9)
        rate = (step - self.step0) / elapsed
        eta = (self.total - step) / rate if rate > 0 else float('inf')
        parts = ' '.join(f'{k} {v:.4f}' for k, v in terms.items() if k != 'num_positive')
        return (f'step {step}/{self.total} {parts} | {rate * self.batch:.1f} img/s | '
                f'ETA {duration(eta)}')


def duration(seconds):
    if not np.isfinite(seconds):
        return '?'
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'
