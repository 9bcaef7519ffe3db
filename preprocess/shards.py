"""Writes items into round-robin TFRecord shards, in parallel, resumable after a kill.

Layout: ``{out_dir}/{split}-{i:05d}-of-{n:05d}.tfrecord``; item k of the split goes to
shard ``k % n`` (k counts the items a reader yields, SkipItems not included).

Resume. Each shard is written to ``<name>.tmp`` and renamed when it is complete, with its
counts in ``{out_dir}/.stats/<name>.json`` (renamed just before the shard, so a shard
never exists without its counts). A rerun writes only the shards that do not exist yet
and adds the saved counts of the others, so a kill costs at most the shards in progress
and never duplicates a record. For that to hold, ``make_items()`` must yield the same
items in the same order on every call: readers walk annotation files in file order and
directories sorted, synthetic items are indexed by (seed, split, index). The writer
finishes shards one after another (shard i's items are picked from a full pass over
``make_items()``), so a kill leaves all earlier shards done.

Parallelism. Items go to a ``multiprocessing`` Pool (fork: workers inherit the imported
modules, no re-import of TensorFlow) through ``imap``, which keeps their order. Workers
load and repair each item (``items.load_item``), run the optional landmark teacher on the
stored pixels (``landmark_teacher.Teacher``), JPEG-encode it and serialize the
tf.train.Example; the main process only appends bytes to the open shard. ``imap`` would
pull the whole input iterator into its task queue, so the input is gated by a semaphore:
at most ``max_in_flight`` items are between the reader and the writer, and memory stays
flat whatever the dataset size. Items may be lazy (any object with ``to_raw_item()``,
e.g. ``synthetic.SyntheticSpec``, ``negatives.CropItem``): they are materialized in the
worker, so pixels never pass through the main process.

The shard assignment (``assign``), the per-item work (``encode_job``), the counting
(``count_result``) and the finishing of a shard (``finish_shard``) are shared with
preprocess/beam_writer.py, which runs them on Apache Beam and writes the same files.
Paths go through tf.io.gfile, so ``out_dir`` may be ``gs://``.
"""

import dataclasses
import functools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import tensorflow as tf

from data import features
from preprocess import files
from preprocess import items as items_lib
from preprocess.items import SkipItem

MAX_PROBLEMS = 20
# Skip reasons that say nothing about the input's quality; strict mode only counts them.
SOFT_REASONS = frozenset({'no_face_free_crop'})
PROGRESS_EVERY_S = 2.0
STATS_DIR = '.stats'
_END = '__end_of_shard__'  # job marker after a shard's last item (a str: survives pickling)


class StrictError(Exception):
    """Raised in strict mode at the first skipped item; the message names the item."""


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f'{split}-{index:05d}-of-{num_shards:05d}.tfrecord'


def shard_paths(out_dir: str, split: str, num_shards: int) -> List[str]:
    """The ``num_shards`` shard paths of a split, in shard order."""
    return [os.path.join(out_dir, shard_name(split, i, num_shards)) for i in range(num_shards)]


def source_of(source_id: str) -> str:
    """The source a source id belongs to: its first path component ('wider/x.jpg' -> 'wider')."""
    return source_id.split('/', 1)[0]


@dataclasses.dataclass
class WriteStats:
    """Counts of what was written (and skipped) for one shard, a split or a whole run.

    ``by_source`` maps source -> {'images': int, 'faces': int}; ``skipped`` maps a skip
    reason -> items; ``dropped`` maps a box-repair reason -> boxes; ``teacher`` maps a
    landmark-teacher count ('landmarks_added', 'ignore_added', 'images') -> number (empty
    without a teacher); ``problems`` holds the first MAX_PROBLEMS messages
    ('reason: file:line: text').
    """
    images: int = 0
    faces: int = 0
    ignored_faces: int = 0
    by_source: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict)
    skipped: Dict[str, int] = dataclasses.field(default_factory=dict)
    dropped: Dict[str, int] = dataclasses.field(default_factory=dict)
    teacher: Dict[str, int] = dataclasses.field(default_factory=dict)
    problems: List[str] = dataclasses.field(default_factory=list)
    shards: List[str] = dataclasses.field(default_factory=list)
    reused_shards: List[str] = dataclasses.field(default_factory=list)

    def add_record(self, source: str, faces: int, ignored: int, dropped: Dict[str, int],
                   taught: Optional[Dict[str, int]] = None):
        self.images += 1
        self.faces += faces
        self.ignored_faces += ignored
        counts = self.by_source.setdefault(source, {'images': 0, 'faces': 0})
        counts['images'] += 1
        counts['faces'] += faces
        for reason, n in dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        for key, n in (taught or {}).items():
            self.teacher[key] = self.teacher.get(key, 0) + n

    def add_skip(self, reason: str, message: str):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f'{reason}: {message}')

    def merge(self, other: 'WriteStats') -> 'WriteStats':
        """Adds ``other`` into self and returns self."""
        self.images += other.images
        self.faces += other.faces
        self.ignored_faces += other.ignored_faces
        for source, counts in other.by_source.items():
            mine = self.by_source.setdefault(source, {'images': 0, 'faces': 0})
            for key, n in counts.items():
                mine[key] = mine.get(key, 0) + n
        for mine, theirs in ((self.skipped, other.skipped), (self.dropped, other.dropped),
                             (self.teacher, other.teacher)):
            for reason, n in theirs.items():
                mine[reason] = mine.get(reason, 0) + n
        self.problems += other.problems[:max(0, MAX_PROBLEMS - len(self.problems))]
        self.shards += other.shards
        self.reused_shards += other.reused_shards
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> 'WriteStats':
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def assign(items: Iterable, num_shards: int) -> Iterator[Tuple[int, object]]:
    """(shard, item) for a split's item stream: item k goes to shard k % num_shards (k
    counts items, not SkipItems); a reader's SkipItem goes to shard 0. Both writers use it."""
    k = 0
    for item in items:
        if isinstance(item, SkipItem):
            yield 0, item
        else:
            yield k % num_shards, item
            k += 1


def _skip_message(item, skip: SkipItem) -> str:
    origin = getattr(item, 'origin', '') or getattr(item, 'source_id', '')
    return f'{origin}: {skip.detail}' if origin and origin not in skip.detail else skip.detail


def encode_job(job, max_side: int, jpeg_quality: int, teacher=None):
    """Worker: (shard, item) -> a small tuple the writer can count (count_result) and write.

    ``teacher``: an optional landmark_teacher.Teacher, run here on the image as stored
    (the one place both runners pass through).

    Returns ('record', shard, source_id, serialized, faces, ignored, dropped, taught),
    ('skip', shard, source_id, reason, message) or ('end', shard).
    """
    shard, item = job
    if isinstance(item, str) and item == _END:
        return ('end', shard)
    if isinstance(item, SkipItem):  # a reader's problem: nothing to load
        return ('skip', shard, '', item.reason, item.detail)
    source_id = getattr(item, 'source_id', '?')
    try:
        if hasattr(item, 'to_raw_item'):
            item = item.to_raw_item()
        pixels, record, dropped = items_lib.load_item(item, max_side=max_side)
    except SkipItem as skip:
        return ('skip', shard, source_id, skip.reason, _skip_message(item, skip))
    taught = {}
    if teacher is not None and teacher.applies_to(record.source_id):
        record, taught = teacher.label(pixels, record)
        taught['images'] = 1
    record = items_lib.with_jpeg(record, pixels, jpeg_quality)
    data = features.to_example(record).SerializeToString(deterministic=True)  # same bytes on any worker
    return ('record', shard, source_id, data, record.num_faces, int(record.ignore.sum()), dropped, taught)


def count_result(stats: WriteStats, result: tuple, strict: bool) -> Optional[bytes]:
    """Counts an encode_job result ('record' or 'skip') into ``stats``; returns the
    serialized record to write, or None for a skip. Raises StrictError (see write_shards)."""
    if result[0] == 'skip':
        _, _, source_id, reason, message = result
        if strict and reason not in SOFT_REASONS:
            raise StrictError(f'{source_id or "reader"}: {reason}: {message}')
        stats.add_skip(reason, message)
        return None
    _, _, source_id, data, faces, ignored, dropped, taught = result
    stats.add_record(source_of(source_id), faces, ignored, dropped, taught)
    return data


def _stats_path(out_dir: str, path: str) -> str:
    return os.path.join(out_dir, STATS_DIR, os.path.basename(path) + '.json')


def load_stats(out_dir: str, path: str) -> Optional[WriteStats]:
    """The saved counts of the finished shard ``path``; None while it is not finished."""
    stats_path = _stats_path(out_dir, path)
    if not (tf.io.gfile.exists(path) and tf.io.gfile.exists(stats_path)):
        return None
    return WriteStats.from_dict(json.loads(files.read_text(stats_path)))


def finish_shard(out_dir: str, path: str, tmp: str, stats: WriteStats):
    """Saves a shard's counts, then renames its complete ``tmp`` file to ``path``."""
    stats.shards = [path]
    files.write_json(_stats_path(out_dir, path), stats.to_dict())
    tf.io.gfile.rename(tmp, path, overwrite=True)


def existing_shards(out_dir: str, split: str, num_shards: int) -> Tuple[WriteStats, List[int]]:
    """The counts of a split's finished shards (from an earlier run) and the shards missing."""
    tf.io.gfile.makedirs(out_dir)
    paths = shard_paths(out_dir, split, num_shards)
    total, missing = WriteStats(), []
    for i, path in enumerate(paths):
        saved = load_stats(out_dir, path)
        if saved is None:
            missing.append(i)  # no shard, or a shard without its counts: write it again
        else:
            saved.reused_shards = [path]
            total.merge(saved)
    stale = sorted(set(tf.io.gfile.glob(os.path.join(out_dir, f'{split}-*-of-*.tfrecord'))) - set(paths))
    if stale:
        print(f'warning: {out_dir} holds {len(stale)} {split} shards of another shard count '
              f'(e.g. {stale[0]}); a file pattern {split}-* would read them too. Delete them.',
              file=sys.stderr)
    total.shards = list(paths)
    return total, missing


class Progress:
    """Prints 'files done, images/s, ETA' to stderr at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, split: str, num_files: int, enabled: bool):
        self.split, self.num_files, self.enabled = split, num_files, enabled
        self.start = self.last = time.time()
        self.files_done = 0
        self.images = 0
        self.total_images = None  # known once the first pass over the items has ended

    def update(self, force: bool = False):
        now = time.time()
        if not self.enabled or (not force and now - self.last < PROGRESS_EVERY_S):
            return
        self.last = now
        rate = self.images / max(now - self.start, 1e-9)
        if self.total_images is not None and rate > 0:
            eta = f'{max(self.total_images - self.images, 0) / rate:.0f}s'
        elif self.files_done and self.num_files:
            eta = f'{(now - self.start) / self.files_done * (self.num_files - self.files_done):.0f}s'
        else:
            eta = '?'
        print(f'[{self.split}] files {self.files_done}/{self.num_files} done, '
              f'{self.images} images, {rate:.1f} images/s, ETA {eta}', file=sys.stderr, flush=True)


def write_shards(make_items: Callable[[], Iterable], out_dir: str, split: str, num_shards: int,
                 num_workers: int = 1, max_side: int = 0, jpeg_quality: int = 90,
                 strict: bool = False, max_in_flight: Optional[int] = None,
                 progress: bool = True, expected_items: Optional[int] = None,
                 teacher=None) -> WriteStats:
    """Writes one split's items into ``num_shards`` round-robin shards (see module doc).

    Args:
      make_items: zero-argument callable returning a fresh iterable of RawItem, lazy
        items (with ``to_raw_item()``) and SkipItem objects (reader problems), in the same
        order on every call. Called once per shard still to write.
      out_dir: output folder (created).
      split: split name used in the file names; items are not filtered by it.
      num_shards: number of shards (>= 1).
      num_workers: encoding processes; <= 1 encodes in this process.
      max_side: downscale images larger than this on their long side (0: never).
      jpeg_quality: JPEG quality of the written images.
      strict: raise StrictError at the first skipped item instead of counting it
        (SOFT_REASONS excepted).
      max_in_flight: items between reader and writer at once (default 32 per worker).
      progress: print a progress line to stderr every ~2 s.
      expected_items: the split's item count if known (for the ETA before the first pass ends).
      teacher: optional landmark_teacher.Teacher run on every item (see encode_job).

    Returns:
      WriteStats of the whole split, the shards kept from an earlier run included.
      Reader-level SkipItems are charged to shard 0.
    """
    if num_shards < 1:
        raise ValueError(f'num_shards must be >= 1, got {num_shards}')
    paths = shard_paths(out_dir, split, num_shards)
    total, missing = existing_shards(out_dir, split, num_shards)
    if not missing:
        return total

    meter = Progress(split, num_shards, progress)
    meter.files_done = num_shards - len(missing)
    if expected_items is not None:
        meter.total_images = expected_items * len(missing) // num_shards
    stop = threading.Event()
    in_flight = max_in_flight or 32 * max(1, num_workers)
    gate = threading.Semaphore(in_flight)
    gated = num_workers > 1

    first_count = []

    def jobs():
        for n_pass, shard in enumerate(missing):
            k = 0
            for target, item in assign(make_items(), num_shards):
                k += not isinstance(item, SkipItem)
                if target != shard:
                    continue
                while gated and not gate.acquire(timeout=0.2):
                    if stop.is_set():
                        return
                yield shard, item
            if n_pass == 0:
                first_count.append(k)
                meter.total_images = k * len(missing) // num_shards
            elif k != first_count[0]:  # round-robin and resume need a fixed item order
                raise RuntimeError(f'make_items() yielded {first_count[0]} items on the first pass and '
                                   f'{k} on a later one: the item stream of {split} is not deterministic')
            while gated and not gate.acquire(timeout=0.2):
                if stop.is_set():
                    return
            yield shard, _END

    encode = functools.partial(encode_job, max_side=max_side, jpeg_quality=jpeg_quality, teacher=teacher)
    pool = None
    if num_workers > 1:
        method = 'fork' if 'fork' in multiprocessing.get_all_start_methods() else None
        # Workers take SIGTERM's default back: pool.terminate() ends them with SIGTERM, and a
        # handler inherited from make_records (preemption.raise_on_sigterm) would hang it.
        pool = multiprocessing.get_context(method).Pool(num_workers, initializer=signal.signal,
                                                        initargs=(signal.SIGTERM, signal.SIG_DFL))
        # Chunks amortize the inter-process hops (an item is ~3 ms of work for a small JPEG).
        chunksize = max(1, min(8, in_flight // (4 * num_workers)))
        results = pool.imap(encode, jobs(), chunksize=chunksize)
    else:
        results = map(encode, jobs())

    writer, stats = None, WriteStats()
    try:
        for result in results:
            if gated:
                gate.release()
            shard = result[1]
            if writer is None:  # a shard that got no item is still written, empty
                writer_path = paths[shard] + '.tmp'
                writer = tf.io.TFRecordWriter(writer_path)
            if result[0] != 'end':
                data = count_result(stats, result, strict)
                if data is not None:
                    writer.write(data)
                    meter.images += 1
            else:  # shard complete
                writer.close()
                writer = None
                finish_shard(out_dir, paths[shard], paths[shard] + '.tmp', stats)
                total.merge(stats)
                stats = WriteStats()
                meter.files_done += 1
            meter.update()
    finally:
        stop.set()
        if writer is not None:  # an unfinished shard: its .tmp is of no use to a rerun
            writer.close()
            tf.io.gfile.remove(writer_path)
        if pool is not None:
            pool.terminate()
            pool.join()
    meter.update(force=True)
    total.shards = list(paths)
    return total
