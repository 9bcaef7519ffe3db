"""Catching a run that diverges, before it writes checkpoints as if all were well.

The train step applies no update whose loss or gradients are not finite (loop.make_train_step)
and reports it. This guard counts bad steps: those, and steps whose loss exploded (over
EXPLODED_FACTOR times the median of the good steps before, or of LOSS_FLOOR, which warns). After
``max_bad_steps`` in a row (a few good steps among them do not end the run of bad ones) the
run stops with Diverged. While an exploded step's update may be in the weights (``suspect``),
the loop writes no checkpoint, so the last one written is the last good one. A skipped
update leaves the weights as they were: the next good step logs and saves as usual (under
float16 the first steps often skip while the loss scale halves from 32768).
"""

import collections
import math
import statistics

EXPLODED_FACTOR = 100.0  # a loss this many times the median of the good ones is a bad step
WINDOW = 50              # losses the median is taken over
LOSS_FLOOR = 0.1         # a median below this is taken as this: a batch without faces has a
                         # loss near 0, and the next one's 2 is no explosion
RECOVERED = 5            # good steps in a row that end a run of bad ones


class Diverged(ValueError):
    """Training stopped: too many bad steps in a row."""


class DivergenceGuard:

    def __init__(self, max_bad_steps):
        self.max_bad_steps = max_bad_steps
        self.skipped = 0          # steps whose update was not applied, in this run
        self.in_a_row = 0
        self._recent = collections.deque(maxlen=WINDOW)
        self._warned = False
        self._good_run = 0
        self.suspect = False      # an exploded update was applied in this run of bad steps

    def check(self, step, loss, applied):
        """Counts one step; returns a line to print (or None); raises Diverged."""
        median = statistics.median(self._recent) if self._recent else None
        ratio = (loss / max(median, LOSS_FLOOR) if median is not None and math.isfinite(loss)
                 else 1.0)
        bad = not applied or ratio > EXPLODED_FACTOR
        self.skipped += not applied
        self._good_run = 0 if bad else self._good_run + 1
        if bad:
            self.in_a_row += 1
            self.suspect = self.suspect or applied
        elif self._good_run >= RECOVERED:
            self.in_a_row = 0
            self.suspect = False
        if not self.in_a_row:
            self._recent.append(loss)
        if self.in_a_row >= self.max_bad_steps:
            raise Diverged(
                f'training diverged: {self.in_a_row} bad steps in a row up to step {step} '
                f'(loss {loss:.4g}: not finite, or over {EXPLODED_FACTOR:g}x the median of '
                'the good steps before). Lower --learning_rate (or raise --warmup_steps) and '
                'rerun in a new --model_dir. The last good checkpoint is kept')
        if not applied:
            what = 'gradients' if math.isfinite(loss) else 'loss'
            return f'step {step}: {what} not finite (loss {loss:.4g}): update skipped'
        warn, self._warned = bad and not self._warned, bad
        if warn:  # once until the loss comes back
            return (f'warning: step {step} loss {loss:.4g} is {ratio:.0f}x the median of the '
                    f'last {len(self._recent)} steps: the run may be diverging '
                    '(--learning_rate too high?)')
        return None
