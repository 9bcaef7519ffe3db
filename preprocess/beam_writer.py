"""Writes a run's splits with Apache Beam: the shards and counts that shards.write_shards writes.

The work is the local writer's, step for step; only the scheduling is Beam's (DirectRunner
on one machine, Dataflow, Flink or Spark by pipeline options), as tensorflow-datasets
builds its large datasets:

  1. This process lists each split's items (record_sources' readers) and assigns them to
     shards with ``shards.assign``, so item k of a split lands in shard k % n as it does
     locally. The listing goes to chunk files under ``{out_dir}/.beam/`` (pickled paths
     and boxes, no pixels; deleted at the end), which keeps the job graph small on a
     cluster.
  2. The pipeline reads the chunks and groups the listed items by shard (only paths and
     boxes cross the shuffle, never image bytes).
  3. Each shard is one unit of work: its items in the local writer's order, each encoded
     with ``shards.encode_job`` (``items.encode_item``: the same load, repair and skip
     rules) and counted with ``shards.count_result``, streamed to a temporary file renamed
     when complete, its counts saved first (``shards.finish_shard``).

A killed or failed job therefore leaves only complete shards, and a rerun writes only
the missing ones, whichever runner wrote the others. A retried bundle writes its own
temporary file, so two attempts at one shard never mix. Paths go through tf.io.gfile,
so ``gs://`` inputs and outputs work. Beam writes as many shards at once as it has
workers, so give a split at least as many shards as there are workers.
"""

import contextlib
import io
import logging
import os
import pickle
import re
import threading
import uuid
from typing import Callable, Dict, Iterable, List, Tuple

logging.getLogger('apache_beam').setLevel(logging.WARNING)  # before its import-time notices

import apache_beam as beam  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # noqa: E402
from apache_beam.runners.runner import create_runner  # noqa: E402

from preprocess import shards  # noqa: E402

BEAM_DIR = '.beam'
CHUNK_ITEMS = 500  # items per listing chunk: a unit of work Beam can hand to a worker
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# split -> (make_items, num_shards, expected item count), as record_sources describes them
SplitJobs = Dict[str, Tuple[Callable[[], Iterable], int, int]]


def write_splits(jobs: SplitJobs, out_dir: str, pipeline_options: Tuple[str, ...] = (),
                 max_side: int = 0, jpeg_quality: int = 90, strict: bool = False,
                 progress: bool = True, teacher=None) -> Dict[str, shards.WriteStats]:
    """Writes every split's missing shards in one Beam pipeline; returns each split's counts.

    Raises:
      shards.StrictError: in strict mode, when a shard holds a skipped item.
    """
    missing = {split: shards.existing_shards(out_dir, split, n)[1] for split, (_, n, _) in jobs.items()}
    missing = {split: todo for split, todo in missing.items() if todo}
    listing_dir = os.path.join(out_dir, BEAM_DIR)
    if tf.io.gfile.exists(listing_dir):
        tf.io.gfile.rmtree(listing_dir)  # a killed run's listing
    for tmp in tf.io.gfile.glob(os.path.join(out_dir, '*.tfrecord.tmp-*')):
        tf.io.gfile.remove(tmp)  # a killed run's unfinished shards
    if missing:
        expected = sum(jobs[s][2] * len(todo) // jobs[s][1] for s, todo in missing.items())
        try:
            chunks = _save_listing(jobs, missing, listing_dir)
            with _Poller(out_dir, jobs, missing, expected, progress):
                _run(chunks, missing, jobs, out_dir, pipeline_options, max_side, jpeg_quality, strict,
                     teacher)
        finally:
            tf.io.gfile.rmtree(listing_dir)
    return {split: _split_stats(out_dir, split, n, missing.get(split, ()))
            for split, (_, n, _) in jobs.items()}


def check_options(pipeline_options: Tuple[str, ...]):
    """Raises ValueError (one line) for pipeline options Beam would refuse, before any work."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):  # argparse prints its usage there, then exits
            options = PipelineOptions(list(pipeline_options))
            options.get_all_options()
            create_runner(options.view_as(StandardOptions).runner or 'DirectRunner')
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise ValueError(lines[-1].split('error: ', 1)[-1] if lines else 'Beam refused them') from None
    except ValueError as e:
        raise ValueError(str(e).split('. Valid values')[0]) from None


def _save_listing(jobs: SplitJobs, missing: Dict[str, List[int]], listing_dir: str) -> List[str]:
    """Pickles ((split, shard), (position, item)) for the missing shards, CHUNK_ITEMS a file."""
    tf.io.gfile.makedirs(listing_dir)
    paths, chunk = [], []

    def flush():
        paths.append(os.path.join(listing_dir, f'items-{len(paths):05d}.pickle'))
        with tf.io.gfile.GFile(paths[-1], 'wb') as f:
            pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
        chunk.clear()

    for split, todo in missing.items():
        wanted = set(todo)
        make_items, num_shards, _ = jobs[split]
        for position, (shard, item) in enumerate(shards.assign(make_items(), num_shards)):
            if shard in wanted:
                chunk.append(((split, shard), (position, item)))
                if len(chunk) == CHUNK_ITEMS:
                    flush()
    if chunk:
        flush()
    return paths


def _run(chunks, missing, jobs, out_dir, pipeline_options, max_side, jpeg_quality, strict, teacher):
    # DirectRunner's worker processes import this package from the repository root.
    paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    os.environ['PYTHONPATH'] = os.pathsep.join([_REPO_ROOT] + [p for p in paths if p != _REPO_ROOT])
    if not any(o.startswith('--default_sdk_harness_log_level') for o in pipeline_options):
        pipeline_options = (*pipeline_options, '--default_sdk_harness_log_level=WARNING')
    num_shards = {split: jobs[split][1] for split in missing}
    every_shard = [((split, s), None) for split, todo in missing.items() for s in todo]
    try:
        with beam.Pipeline(options=PipelineOptions(list(pipeline_options))) as p:
            listed = p | 'Chunks' >> beam.Create(chunks) | 'Items' >> beam.FlatMap(_load_chunk)
            empty = p | 'EveryShard' >> beam.Create(every_shard)  # shards with no item too
            _ = ((listed, empty) | beam.Flatten() | 'ByShard' >> beam.GroupByKey()
                 | 'Write' >> beam.Map(_write_shard, out_dir, num_shards, max_side, jpeg_quality, strict,
                                     teacher))
    except Exception as e:  # the runner wraps a worker's exception in its own
        found = re.search(r'StrictError: (.*)', str(e))
        if found:
            raise shards.StrictError(found.group(1)) from None
        raise


def _load_chunk(path: str):
    with tf.io.gfile.GFile(path, 'rb') as f:
        yield from pickle.load(f)


def _write_shard(element, out_dir: str, num_shards: Dict[str, int], max_side: int,
                 jpeg_quality: int, strict: bool, teacher=None):
    """Encodes and writes one shard's items in item order; its counts saved beside it."""
    (split, shard), listed = element
    path = shards.shard_paths(out_dir, split, num_shards[split])[shard]
    tmp = f'{path}.tmp-{uuid.uuid4().hex[:8]}'
    stats = shards.WriteStats()
    with tf.io.TFRecordWriter(tmp) as writer:
        for _, item in sorted((v for v in listed if v is not None), key=lambda v: v[0]):
            result = shards.encode_job((shard, item), max_side, jpeg_quality, teacher)
            data = shards.count_result(stats, result, strict)
            if data is not None:
                writer.write(data)
    shards.finish_shard(out_dir, path, tmp, stats)


def _split_stats(out_dir: str, split: str, num_shards: int, written) -> shards.WriteStats:
    """A split's counts from its shards' saved counts; fails if a shard is still missing."""
    total = shards.WriteStats()
    paths = shards.shard_paths(out_dir, split, num_shards)
    for i, path in enumerate(paths):
        saved = shards.load_stats(out_dir, path)
        if saved is None:
            raise RuntimeError(f'the Beam job ended without writing {path}: rerun the same '
                               'command to write the missing shards')
        saved.reused_shards = [] if i in written else [path]
        total.merge(saved)
    total.shards = paths
    return total


class _Poller:
    """Prints shards done, images written, images/s and ETA while the job runs (by the
    shards' saved counts, so it works for any runner and output file system)."""

    def __init__(self, out_dir, jobs, missing, expected, enabled):
        self.out_dir = out_dir
        self.paths = [shards.shard_paths(out_dir, split, jobs[split][1])[i]
                      for split, todo in missing.items() for i in todo]
        self.meter = shards.Progress(','.join(missing), len(self.paths), enabled)
        self.meter.total_images = expected
        self.enabled, self.stop, self.done = enabled, threading.Event(), {}

    def __enter__(self):
        if self.enabled:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self.thread.join()
            self._show()

    def _loop(self):
        while not self.stop.wait(shards.PROGRESS_EVERY_S):
            self._show()

    def _show(self):
        for path in self.paths:
            stats = None if path in self.done else shards.load_stats(self.out_dir, path)
            if stats is not None:
                self.done[path] = stats.images
        if self.meter.files_done < len(self.done) or self.meter.files_done < len(self.paths):
            self.meter.files_done, self.meter.images = len(self.done), sum(self.done.values())
            self.meter.update(force=True)
