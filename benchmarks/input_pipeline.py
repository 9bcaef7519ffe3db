r"""Training input speed: images/s after each stage, and the full dataset as train.py builds it.

  python benchmarks/input_pipeline.py                          # the shared records, 320 px
  python benchmarks/input_pipeline.py --records='out/records/wider/train-*' --json=out/bench/input.json

Stages (each includes the ones above it; all read the same shards):

| stage | what |
|---|---|
| read | TFRecordDataset over the shards, interleaved as build_dataset reads them |
| decode | + parse + full JPEG decode (tf.io.decode_jpeg): the baseline |
| crop | + data.pipeline.crops: records parsed and windows drawn 64 at a time, then per image only the window's part decoded, resized, padded, mirrored |
| full | training.train_input.training_crops, exactly what train.py iterates (+ shuffle, batch, faces moved into the crops) |
| step_input | the input work done inside the train step per batch, on this CPU: colour jitter + target assignment (data.augment.photometric, model.targets.for_batch) |

Each stage runs with 1 thread (tf.data private thread pool of 1) and with all cores, in
rounds that alternate the stages, so a busy machine slows them alike; the median round is
reported. ``ratio_full_to_decode`` compares full with decode at the same thread count. Peak
RSS is read from child processes that iterate the full dataset over the records once and
over them listed 10 times: it must not grow with the data.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_RECORDS = flags.DEFINE_string('records', 'out/records/shared/train-*.tfrecord',
                               'Glob(s) of training shards (configs/shared_records.flags writes these).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 320, 'Training crop side.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Batch size of the full dataset.')
_CROP = flags.DEFINE_list('crop_range', ['0.2', '1.2'], 'min,max crop side in short sides.')
_IMAGES = flags.DEFINE_integer('images', 2048, 'Images timed per stage and round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds of all stages (median reported).')
_RSS = flags.DEFINE_boolean('rss', True, 'Measure peak RSS over 1x and 10x the records.')
_JSON = flags.DEFINE_string('json', None, 'Write the figures here as JSON.')
_RSS_CHILD = flags.DEFINE_integer('rss_child', 0, 'Internal: iterate over the records listed N times, print peak RSS.')
_THREADS_CHILD = flags.DEFINE_boolean('threads_child', False, 'Internal: time the stages on 1 thread, print JSON.')

STAGES = ('read', 'decode', 'crop', 'full', 'step_input')
WARMUP_IMAGES = 512
SUMMARY_BATCH = 64


def _settings():
    from training import loop
    from model.detector import DetectorConfig
    low, high = (float(v) for v in _CROP.value)
    return loop.TrainSettings(train_records=_RECORDS.value, model_dir='', batch_size=_BATCH.value,
                              config=DetectorConfig(image_size=_IMAGE_SIZE.value),
                              crop_range=(low, high), shuffle_buffer=500)


def _records(files, threads):
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).repeat()
    return _with_threads(ds, threads)


def _with_threads(ds, threads):
    import tensorflow as tf
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    return ds


def _summarized(ds):
    """Each element reduced to the sizes of all its tensors (so none is pruned), batched:
    fetching dicts of tensors one by one into Python costs more than decoding them."""
    import tensorflow as tf
    return ds.map(lambda e: tf.add_n([tf.size(v) for v in e.values()])).batch(SUMMARY_BATCH)


def _stage(name, threads):
    """(dataset, images per element) of one stage."""
    import tensorflow as tf
    from data import features, pipeline
    from training import train_input
    s = _settings()
    files = pipeline.list_shards(s.train_records)
    if name == 'read':
        return _summarized(_records(files, threads).map(lambda r: {'record': r})), SUMMARY_BATCH
    if name == 'decode':
        return _summarized(_records(files, threads).map(features.parse_example,
                                                        tf.data.AUTOTUNE)), SUMMARY_BATCH
    if name == 'crop':
        return _summarized(pipeline.crops(_records(files, threads), s.config.image_size, True,
                                          s.crop_range)), SUMMARY_BATCH
    if name == 'full':
        return _with_threads(train_input.training_crops(s, s.batch_size, seed=0), threads), s.batch_size
    raise ValueError(name)


def _time_dataset(ds, per_element, images):
    iterator = iter(ds.prefetch(2))
    # Warm-up: threads, the shuffle buffer, tracing, and tf.data's autotuning of parallelism.
    for _ in range(max(2, WARMUP_IMAGES // per_element)):
        next(iterator)
    start = time.perf_counter()
    for _ in range(max(1, images // per_element)):
        next(iterator)
    return max(1, images // per_element) * per_element / (time.perf_counter() - start)


def _time_step_input(batches, threads):
    """Images/s of the in-step input work (colour jitter + targets) on prepared batches."""
    import tensorflow as tf
    from data import augment
    from model import targets
    s = _settings()
    spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None] * len(t.shape), t.dtype), batches[0])

    @tf.function(input_signature=[spec])
    def work(batch):
        images = augment.photometric(batch['image'])
        t = targets.for_batch(batch, s.config.image_size, s.config.strides, s.config.anchor_scale)
        return tf.reduce_sum(images) + tf.reduce_sum(t['cls_weight'])

    for batch in batches[:2]:
        work(batch).numpy()
    start = time.perf_counter()
    for batch in batches:
        work(batch).numpy()
    return len(batches) * s.batch_size / (time.perf_counter() - start)


def _rates(threads, rounds, images):
    datasets = {name: _stage(name, threads) for name in STAGES if name != 'step_input'}
    s = _settings()
    batches = list(_held_batches(s, images))
    table = {name: [] for name in STAGES}
    for r in range(rounds):
        for name, (ds, per) in datasets.items():
            table[name].append(_time_dataset(ds, per, images))
        table['step_input'].append(_time_step_input(batches, threads))
        print(f'  {threads or "all"} thread(s), round {r + 1}/{rounds}: ' +
              ', '.join(f'{k} {v[-1]:.0f}' for k, v in table.items()), flush=True)
    return {k: statistics.median(v) for k, v in table.items()}


def _held_batches(s, images):
    from training import train_input
    return train_input.training_crops(s, s.batch_size, seed=1).take(max(2, images // s.batch_size // 4))


def _one_thread_rates():
    """The stages in a child process whose TensorFlow runs on one thread throughout (the
    thread counts are fixed when TensorFlow starts)."""
    args = [sys.executable, os.path.abspath(__file__), '--threads_child', f'--records={_RECORDS.value}',
            f'--image_size={_IMAGE_SIZE.value}', f'--batch_size={_BATCH.value}',
            f'--crop_range={",".join(_CROP.value)}', f'--images={_IMAGES.value}',
            f'--rounds={_ROUNDS.value}']
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f'the 1-thread run failed:\n{out.stderr[-3000:]}')
    lines = out.stdout.strip().splitlines()
    print('\n'.join(lines[:-1]), flush=True)
    return json.loads(lines[-1])


def _peak_rss_mb(times):
    """Peak RSS of a child process that iterates the full dataset once over the records
    listed ``times`` times."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f'--records={_RECORDS.value}',
                          f'--rss_child={times}', f'--image_size={_IMAGE_SIZE.value}',
                          f'--batch_size={_BATCH.value}', f'--crop_range={",".join(_CROP.value)}'],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_child(times):
    from data import pipeline
    s = _settings()
    files = pipeline.list_shards(s.train_records)
    s.train_records = ','.join(files * times)
    import tensorflow as tf
    # training_crops' dataset, but one pass over the listed records instead of repeating:
    # here the data size is the point.
    ds = pipeline.build_dataset(s.train_records, s.batch_size, s.config.image_size, True,
                                shuffle_buffer=s.shuffle_buffer, seed=0,
                                scale_range=s.crop_range, repeat=False,
                                min_face_px=s.train_min_face)
    images, start = 0, time.perf_counter()
    for batch in ds:
        images += int(tf.shape(batch['image'])[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({'times': times, 'images': images, 'peak_rss_mb': round(peak, 1),
                      'seconds': round(time.perf_counter() - start, 1)}))


def main(argv):
    del argv
    if _RSS_CHILD.value:
        return _rss_child(_RSS_CHILD.value)
    import tensorflow as tf
    if _THREADS_CHILD.value:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        print(json.dumps(_rates(1, _ROUNDS.value, _IMAGES.value)))
        return
    cores = os.cpu_count()
    print(f'records {_RECORDS.value}, {_IMAGE_SIZE.value} px, batch {_BATCH.value}, '
          f'{cores} cores, TensorFlow {tf.__version__}', flush=True)
    results = {'cores': cores, 'records': _RECORDS.value, 'image_size': _IMAGE_SIZE.value}
    results['1_thread'] = _one_thread_rates()
    results['all_cores'] = _rates(None, _ROUNDS.value, _IMAGES.value)
    for label in ('1_thread', 'all_cores'):
        results[label]['ratio_full_to_decode'] = (results[label]['full'] /
                                                  results[label]['decode'])
    results['decode_images_per_s'] = results['all_cores']['decode']
    results['full_images_per_s'] = results['all_cores']['full']
    results['ratio_full_to_decode'] = results['all_cores']['ratio_full_to_decode']
    print('\n| stage | 1 thread img/s | all cores img/s |\n|---|---|---|')
    for name in STAGES:
        print(f'| {name} | {results["1_thread"][name]:.0f} | {results["all_cores"][name]:.0f} |')
    print(f'| full / decode | {results["1_thread"]["ratio_full_to_decode"]:.2f} | '
          f'{results["all_cores"]["ratio_full_to_decode"]:.2f} |')
    if _RSS.value:
        rss = [_peak_rss_mb(1), _peak_rss_mb(10)]
        results['peak_rss'] = rss
        print('\n| records | images | peak RSS MB | s |\n|---|---|---|---|')
        for r in rss:
            print(f'| {r["times"]}x | {r["images"]} | {r["peak_rss_mb"]:.0f} | {r["seconds"]} |')
        results['rss_ratio_10x_to_1x'] = rss[1]['peak_rss_mb'] / rss[0]['peak_rss_mb']
        print(f'peak RSS 10x / 1x: {results["rss_ratio_10x_to_1x"]:.2f}')
    if _JSON.value:
        os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
        with open(_JSON.value, 'w') as f:
            json.dump(results, f, indent=1)
        print(f'wrote {_JSON.value}')


if __name__ == '__main__':
    app.run(main)
