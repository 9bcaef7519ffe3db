r"""Train-step speed: images/s of train.py's step fed from memory and fed by the real pipeline.

  python benchmarks/train_step.py                                   # every combination
  python benchmarks/train_step.py --precisions=float32 --jit=false --batches=32 --steps=10

For each precision (float32, mixed_bfloat16, and mixed_float16 where a GPU is visible), XLA
on and off, and each batch size, it builds the network of --model (the shipped model's shape
by default) and times the very step train.py runs (training.loop.make_train_step: colour
jitter, target assignment, loss, update, weight average) twice: on one batch held in memory
and repeated (what the device can do), and on the real input pipeline
(training.train_input.training_crops over --records). ``input_bound`` = real / memory: 1.0 means
the pipeline keeps up; lower means the device waits for input. Prints the device it ran on.
"""

import os
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_RECORDS = flags.DEFINE_string('records', 'out/records/shared/train-*.tfrecord', 'Training shards.')
_MODEL = flags.DEFINE_string('model', 'models/facedet_default',
                             'An export or train.py model_dir whose network shape is timed.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 320, 'Training crop side.')
_PRECISIONS = flags.DEFINE_list('precisions', None, 'Default: float32, mixed_bfloat16 '
                                '(+ mixed_float16 on a GPU).')
_JIT = flags.DEFINE_list('jit', ['false', 'true'], 'XLA settings to time.')
_BATCHES = flags.DEFINE_list('batches', ['32', '64', '128'], 'Batch sizes.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per row and feed.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps first (tracing, XLA compiling).')


def _device():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return True, f'{len(gpus)} GPU(s): {details.get("device_name", "GPU")}, compute capability ' \
                     f'{details.get("compute_capability")}'
    return False, f'CPU only ({os.cpu_count()} cores)'


def _time(train_step, iterator, warmup, steps):
    for _ in range(warmup):
        train_step(next(iterator))[0]['loss'].numpy()
    start = time.perf_counter()
    for _ in range(steps):
        terms, _ = train_step(next(iterator))
    terms['loss'].numpy()
    return time.perf_counter() - start


def _row(precision, jit, batch, config):
    """(memory img/s, pipeline img/s) of the train step."""
    import keras
    import tensorflow as tf
    from training import loop, train_input
    keras.mixed_precision.set_dtype_policy(precision)
    s = loop.TrainSettings(train_records=_RECORDS.value, model_dir='', config=config,
                           batch_size=batch, precision=precision, jit_compile=jit,
                           crop_range=(0.2, 1.2), shuffle_buffer=500, train_steps=10 ** 6)
    strategy = tf.distribute.get_strategy()
    state = loop._build_state(s)
    real = strategy.distribute_datasets_from_function(
        lambda ctx: train_input.training_crops(s, batch, seed=0, input_context=ctx))
    held = next(iter(train_input.training_crops(s, batch, seed=0)))
    memory = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.from_tensors(held).repeat())
    train_step = loop.make_train_step(s, strategy, state, real.element_spec)
    seconds = {}
    for name, ds in (('memory', memory), ('pipeline', real)):
        seconds[name] = _time(train_step, iter(ds), _WARMUP.value, _STEPS.value)
    keras.mixed_precision.set_dtype_policy('float32')
    return tuple(_STEPS.value * batch / seconds[k] for k in ('memory', 'pipeline'))


def main(argv):
    del argv
    import dataclasses
    import tensorflow as tf
    from training import checkpoints
    has_gpu, device = _device()
    print(f'device: {device}; TensorFlow {tf.__version__}', flush=True)
    config = dataclasses.replace(checkpoints.init_source_config(_MODEL.value),
                                 image_size=_IMAGE_SIZE.value)
    precisions = _PRECISIONS.value or (['float32', 'mixed_bfloat16'] +
                                       (['mixed_float16'] if has_gpu else []))
    print(f'network of {_MODEL.value} at {_IMAGE_SIZE.value} px; {_STEPS.value} timed steps '
          f'after {_WARMUP.value}\n', flush=True)
    print('| precision | jit | batch | memory img/s | pipeline img/s | input_bound |')
    print('|---|---|---|---|---|---|', flush=True)
    for precision in precisions:
        for jit in (v.lower() == 'true' for v in _JIT.value):
            for batch in (int(b) for b in _BATCHES.value):
                memory, pipeline = _row(precision, jit, batch, config)
                print(f'| {precision} | {"on" if jit else "off"} | {batch} | {memory:.1f} | '
                      f'{pipeline:.1f} | {pipeline / memory:.2f} |', flush=True)


if __name__ == '__main__':
    app.run(main)
