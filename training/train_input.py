"""The training input as the loop iterates it, and what happens when a shard is damaged.

A corrupt or truncated record stops a TFRecord reader (tf.errors.DataLossError, which names
neither the file nor what is left). The loop's input then scans the shards
(data/shard_damage.py), names each damaged one with its byte offset and how many records
are lost, and by --bad_records either stops (the checkpoint at that step saved) or goes on
without the unreadable part, counting the records it leaves out.
"""

import tensorflow as tf

from data import pipeline
from data import shard_damage
from training import data_service

class DamagedShards(ValueError):
    """Training stopped at damaged shards (--bad_records=stop); the message names them."""


def training_crops(s, batch_size, seed, input_context=None, readable=None):
    """The training dataset as train.py iterates it: crops and their faces, batched; with
    s.data_service, produced by the tf.data service's workers (training/data_service.py).
    readable: {damaged shard: its good records} (see pipeline.build_dataset)."""
    cfg = s.config
    ds = pipeline.build_dataset(
        s.train_records, batch_size, cfg.image_size, True, shuffle_buffer=s.shuffle_buffer,
        seed=seed, scale_range=s.crop_range, input_context=input_context,
        min_face_px=s.train_min_face, readable=readable, robust=s.robust_augment)
    if s.data_service:
        ds = data_service.distribute(ds, s.data_service)
    return ds


class TrainInput:
    """Batches for the distributed train step; rebuilt without the unreadable part of a
    shard when one turns out to be damaged (s.bad_records == 'skip')."""

    def __init__(self, s, strategy, seed):
        self._s, self._strategy = s, strategy
        if s.data_service:
            data_service.check_reachable(s.data_service)
        self.readable = {}     # damaged shard -> good records read from it
        self.lost_records = 0  # records past the damage, left out (when the counts exist)
        self.dataset = self._distribute(seed)
        self._iterator = iter(self.dataset)

    def _distribute(self, seed):
        s = self._s
        return self._strategy.distribute_datasets_from_function(
            lambda ctx: training_crops(s, ctx.get_per_replica_batch_size(s.batch_size), seed,
                                       ctx, self.readable))

    def next(self, step):
        """The next batch; on damage, reports it and goes on (or raises DamagedShards)."""
        try:
            if self._s.data_service:
                return data_service.next_within(self._iterator, self._s.data_service_timeout,
                                                self._s.data_service)
            return next(self._iterator)
        except tf.errors.DataLossError as e:
            self._handle_damage(step, e)
            return self.next(step)

    def _handle_damage(self, step, error):
        files = pipeline.list_shards(self._s.train_records)
        found = [d for d in shard_damage.scan(files) if d.path not in self.readable]
        if not found:
            raise error  # not a shard's damage: let its own message through
        lines = '\n'.join(d.describe() for d in found)
        if self._s.bad_records == 'stop':
            raise DamagedShards(
                f'damaged training shard(s) at step {step}:\n{lines}\nrewrite them (delete '
                'each and rerun make_records.py with the same flags: it writes only missing '
                'shards; preprocess/verify_records.py checks the rest), or rerun with '
                '--bad_records=skip to train on without their unreadable records')
        for d in found:
            self.readable[d.path] = d.readable
            self.lost_records += d.lost or 0
        print(f'skipping the unreadable part of damaged shard(s) at step {step} '
              f'(--bad_records=skip):\n{lines}', flush=True)
        if all(self.readable.get(f, -1) == 0 for f in files):
            raise DamagedShards('no training record is readable:\n' + lines)
        self.dataset = self._distribute(self._s.seed + step)
        self._iterator = iter(self.dataset)
