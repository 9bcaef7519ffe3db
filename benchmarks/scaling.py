r"""What compute buys: the validation AP of one train.py run at each validation, against the
training images seen, as a table and a PNG. Not a test.

  python benchmarks/scaling.py --model_dir=out/default_model \
      --png=benchmarks/scaling_default_model.png

Reads the run's TensorBoard scalars (val/ap50: plain photos at their own size with
--val_max_side; val/ap50_mean: with --val_variants, the mean over the plain photos and
the degraded copies) and its flags.txt (batch size, --train_steps). The points are
checkpoints of one schedule: before its end the learning rate has not decayed, so a run
with that smaller budget would score at least as well.
"""

import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from absl import app, flags  # noqa: E402

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'A train.py --model_dir.')
_PNG = flags.DEFINE_string('png', None, 'Where to write the chart (optional).')
flags.mark_flag_as_required('model_dir')

TAGS = {'val/ap50': 'AP@0.5, plain', 'val/ap50_mean': 'robustness mean'}


def main(argv):
    del argv
    from common import quiet
    quiet.import_tensorflow()
    from evaluation.plots import write_line_chart_png
    from training.summaries import read_scalars
    from training.checkpoints import recorded_flag
    model_dir = _MODEL_DIR.value
    batch = int(recorded_flag(model_dir, 'batch_size') or 32)
    budget = int(recorded_flag(model_dir, 'train_steps') or 0)
    scalars = read_scalars(os.path.join(model_dir, 'val'), TAGS)
    steps = sorted(set().union(*scalars.values()))
    if not steps:
        sys.exit(f'scaling.py: error: {model_dir}/val has no val/ap50 scalars: was the run '
                 'given --val_records?')
    print(f'{model_dir}: batch {batch}, budget {budget} steps')
    print('| step | share of the budget | images seen | ' + ' | '.join(TAGS.values()) + ' |')
    print('|---|---|---|' + '---|' * len(TAGS))
    for step in steps:
        share = f'{step / budget:.2f}' if budget else ''
        cells = [f'{scalars[t][step]:.3f}' if step in scalars[t] else '' for t in TAGS]
        print(f'| {step:,} | {share} | {step * batch:,} | ' + ' | '.join(cells) + ' |')
    if _PNG.value:
        series = {label: ([s * batch for s in sorted(scalars[t])],
                          [scalars[t][s] for s in sorted(scalars[t])])
                  for t, label in TAGS.items() if scalars[t]}
        write_line_chart_png(_PNG.value, series, 'training images seen', 'validation AP',
                             f'{os.path.basename(os.path.normpath(model_dir))}: AP by compute')
        print(f'chart: {_PNG.value}')


if __name__ == '__main__':
    app.run(main)
