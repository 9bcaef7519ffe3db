"""The streaming input pipeline: TFRecord shards -> batches of images and per-point targets.

Nothing is held in memory beyond the shuffle buffer and a few prefetched batches, so the
dataset can be any size.
"""

import tensorflow as tf

from data import augment
from data import boxes as box_lib
from data import features
from model import anchors as anchor_lib
from model import targets as target_lib


def list_shards(file_pattern):
    """Expands a comma-separated list of globs; raises ValueError naming what matched nothing."""
    files = []
    for pattern in str(file_pattern).split(','):
        matched = tf.io.gfile.glob(pattern.strip())
        if not matched:
            raise ValueError(f'no files match {pattern.strip()!r}: write records first with '
                             'preprocess/make_records.py, or fix the path')
        files.extend(sorted(matched))
    return files


def check_shards(files):
    """Reads the first record of each shard; raises ValueError naming a file that is not one,
    or saying that all of them are empty."""
    non_empty = 0
    for path in files:
        try:
            for serialized in tf.data.TFRecordDataset(path).take(1):
                features.parse_example(serialized, decode_image=False)
                non_empty += 1
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise ValueError(f'{path} is not a facedet TFRecord shard ({e.message.splitlines()[0]}); '
                             'rewrite it with preprocess/make_records.py') from None
    if files and not non_empty:
        raise ValueError(f'the dataset is empty: {len(files)} shard(s) without a record, e.g. '
                         f'{files[0]}; check the manifest.json written next to them')


def make_targets(example, image_size, anchors, anchor_scale):
    """Per-image target assignment (before batching, so no face-count padding is needed).

    anchors: (points, point_strides, level_sizes) from model.anchors.anchor_points for the
    image_size square, computed once per dataset rather than once per image.
    """
    points, point_strides, level_sizes = anchors
    boxes_px = box_lib.to_pixels(example['boxes'], image_size, image_size)
    landmarks_px = example['landmarks'] * float(image_size)
    targets = target_lib.assign(points, point_strides, level_sizes, boxes_px, example['ignore'],
                                landmarks_px, example['landmarks_valid'],
                                anchor_scale=anchor_scale)
    return {'image': example['image'], 'targets': targets, 'boxes': example['boxes'],
            'ignore': example['ignore'],
            'face_mask': tf.ones_like(example['ignore'], dtype=tf.bool)}


def build_dataset(file_pattern, batch_size, image_size, is_training, strides=(8, 16, 32),
                  anchor_scale=4.0, shuffle_buffer=1000, seed=None, scale_range=(0.3, 2.0),
                  repeat=None, input_context=None,
                  min_face_px=augment.MIN_FACE_PX):
    """Builds the training or validation dataset.

    Args:
      file_pattern: glob(s) of TFRecord shards written by preprocess/make_records.py.
      batch_size: per-replica batch size (global batch when no input_context).
      image_size: side of the square training / validation images (multiple of 32).
      is_training: random crops, flips and colour jitter; otherwise a deterministic
        letterbox of the whole image.
      repeat: repeat forever (defaults to is_training).
      input_context: tf.distribute.InputContext, to shard files across input pipelines.
      min_face_px: faces smaller than this in a training crop are marked ignore (neither face
        nor background; data/augment.py).

    Returns:
      A dataset of dicts: ``image`` [B, S, S, 3] float32 0..255, ``targets`` (dict of
      [B, P, ...] tensors, see model.targets.assign), ``boxes`` [B, N, 4] normalized yxyx,
      ``ignore`` [B, N] and ``face_mask`` [B, N] (False on padding).
    """
    files = list_shards(file_pattern)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if is_training:
        ds = ds.shuffle(len(files), seed=seed)
    # Interleave reads several shards at once, so one shuffle buffer mixes their images.
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not is_training)
    if is_training:
        # Shuffle serialized records (small) rather than decoded images (large).
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    if repeat if repeat is not None else is_training:
        ds = ds.repeat()
    ds = ds.map(features.parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    if is_training:
        def _augment(example):
            example = augment.random_square_crop(example, image_size, scale_range,
                                                  min_face_px=min_face_px)
            example = augment.random_flip(example)
            return augment.photometric(example)
    else:
        def _augment(example):
            return augment.letterbox(example, image_size)
    ds = ds.map(_augment, num_parallel_calls=tf.data.AUTOTUNE)
    anchors = anchor_lib.anchor_points(image_size, image_size, strides)
    ds = ds.map(lambda e: make_targets(e, image_size, anchors, anchor_scale),
                num_parallel_calls=tf.data.AUTOTUNE)
    # Targets have a fixed [P, ...] shape; the faces themselves (kept for validation AP) are
    # padded to the batch's largest count, with ``face_mask`` telling real from padding.
    ds = ds.padded_batch(batch_size, drop_remainder=is_training)
    return ds.prefetch(tf.data.AUTOTUNE)
