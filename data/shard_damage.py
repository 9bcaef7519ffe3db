"""Damaged TFRecord shards: where a shard stops being readable, and what that costs.

A TFRecord file cannot be read past a corrupt or truncated record (the lengths and
checksums that frame the records after it can no longer be trusted), so the readable part
of a damaged shard is the records before the damage. The training loop (--bad_records)
and preprocess/verify_records.py report damage through ``scan``.
"""

import dataclasses
import os
import re
from typing import List, Optional

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Damage:
    path: str
    readable: int             # records before the damage
    offset: Optional[int]     # byte offset TensorFlow reports
    problem: str              # TensorFlow's message, e.g. 'corrupted record at 266282'
    written: Optional[int]    # records make_records wrote into the shard, when its counts exist

    @property
    def lost(self) -> Optional[int]:
        """Records past the damage (unknown without the shard's counts)."""
        return None if self.written is None else max(0, self.written - self.readable)

    def describe(self) -> str:
        rest = ('the rest of it cannot be read' if self.lost is None else
                f'{self.lost} of its {self.written} records cannot be read')
        return f'{self.path}: {self.problem}, after {self.readable} good records; {rest}'


def scan(files) -> List[Damage]:
    """The damage in each of files (shards that read to their end are left out)."""
    return [d for d in (scan_shard(path) for path in files) if d is not None]


def count_records(path, ignore_errors=False) -> int:
    """The records of one shard, every checksum checked; raises tf.errors.DataLossError at
    damage (scan_shard then locates it), or with ignore_errors counts those before it."""
    ds = tf.data.TFRecordDataset(path)
    if ignore_errors:
        ds = ds.ignore_errors()
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def scan_shard(path) -> Optional[Damage]:
    """Reads every record of one shard (checking its checksums); None when all are good."""
    try:
        count_records(path)
        return None
    except tf.errors.DataLossError as e:
        problem = e.message.strip().splitlines()[0]
    problem = re.sub(r'\s*\[Op:.*$', '', re.sub(r'^\{\{function_node [^}]*\}\}\s*', '', problem))
    # A TFRecord reader stops at the first bad record: what ignore_errors yields is what
    # came before it.
    readable = count_records(path, ignore_errors=True)
    offset = re.search(r' at (\d+)', problem)
    return Damage(path, readable, int(offset.group(1)) if offset else None, problem,
                  _written(path))


def _written(path) -> Optional[int]:
    """The record count make_records saved for the shard (preprocess/shards.py)."""
    from preprocess import shards
    stats = shards.load_stats(os.path.dirname(path), path)
    return None if stats is None else stats.images
