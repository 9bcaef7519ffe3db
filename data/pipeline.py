"""The streaming input pipeline: TFRecord shards -> batches of crops and their faces.

Nothing is held in memory beyond the shuffle buffer and a few prefetched batches, so the
dataset can be any size.
"""

import tensorflow as tf

from data import augment
from data import features
from data import robust as robust_lib


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


# Per-face tensors of a batch, padded to the batch's largest face count (see _fit_faces).
FACE_KEYS = ('boxes', 'landmarks', 'landmarks_valid', 'ignore', 'face_mask')
MIN_FACE_SLOTS = 8
# Records parsed and planned together: batch-wide ops cost about as much for 64 as for 1.
PLAN_BATCH = 64


def build_dataset(file_pattern, batch_size, image_size, is_training, shuffle_buffer=1000,
                  seed=None, scale_range=(0.3, 2.0), repeat=None, input_context=None,
                  min_face_px=augment.MIN_FACE_PX, readable=None, robust=False):
    """Builds the training or validation dataset.

    Args:
      file_pattern: glob(s) of TFRecord shards written by preprocess/make_records.py.
      batch_size: per-replica batch size (global batch when no input_context).
      image_size: side of the square training / validation images.
      is_training: random crops and flips; otherwise a deterministic letterbox of the
        whole image. Colour jitter and target assignment run in the train step
        (data.augment.photometric, model.targets.for_batch), on the accelerator.
      repeat: repeat forever (defaults to is_training).
      input_context: tf.distribute.InputContext, to shard files across input pipelines.
      min_face_px: faces smaller than this in a training crop are marked ignore (neither face
        nor background; data/augment.py).
      readable: {shard path: records} for damaged shards (data/shard_damage.py): only their
        first records are read.
      robust: training crops around large faces and JPEG artefacts (data/robust.py; the rest
        of the robustness augmentation runs in the train step).

    Returns:
      A dataset of dicts: ``image`` [B, S, S, 3] uint8, ``boxes`` [B, N, 4] normalized yxyx,
      ``landmarks`` [B, N, 10], ``landmarks_valid``, ``ignore`` and ``face_mask`` [B, N]
      (False on padding). N is the batch's largest face count rounded up to a power of two
      (at least MIN_FACE_SLOTS), so a compiled step sees few shapes.
    """
    files = list_shards(file_pattern)
    limits = [(readable or {}).get(f, -1) for f in files]  # -1: all of it
    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(limits, tf.int64)))
    if input_context and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if is_training:
        ds = ds.shuffle(len(files), seed=seed)
    # Interleave reads several shards at once, so one shuffle buffer mixes their images.
    ds = ds.interleave(lambda path, limit: tf.data.TFRecordDataset(path).take(limit),
                       cycle_length=min(4, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not is_training)
    if is_training:
        # Shuffle serialized records (small) rather than decoded images (large).
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    if repeat if repeat is not None else is_training:
        ds = ds.repeat()

    ds = crops(ds, image_size, is_training, scale_range, robust and is_training)
    # The faces (kept for targets and validation AP) are padded to the batch's largest
    # count, with ``face_mask`` telling real from padding, then moved into their crops.
    ds = ds.padded_batch(batch_size, drop_remainder=is_training)
    ds = ds.map(lambda b: {'image': b['image'], **_fit_faces(
        augment.place_faces(b, b, image_size, min_face_px))}, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def crops(records, image_size, is_training, scale_range=(0.3, 2.0), robust=False):
    """Serialized records -> one dict per image: ``image`` uint8 [S, S, 3], its faces as
    stored (photo frame, for augment.place_faces), ``face_mask`` and its crop plan.

    Records are parsed and their windows planned PLAN_BATCH at a time; the only work done
    image by image is decoding the window and resizing it (augment.render).
    """
    def plan(serialized):
        example = features.parse_batch(serialized)
        height = tf.cast(example['height'], tf.float32)
        width = tf.cast(example['width'], tf.float32)
        if is_training:
            windows, flip = augment.random_windows(height, width, scale_range)
            if robust:
                windows = augment.face_windows(height, width, windows, example['boxes'],
                                               example['ignore'], robust_lib.LARGE_FACE_PROB)
        else:
            windows, flip = augment.letterbox_windows(height, width)
        faces = {k: example[k] for k in FACE_KEYS if k != 'face_mask'}
        return {'encoded': example['encoded'], **faces,
                **augment.plan_crops(height, width, windows, flip, image_size)}

    def render(example):
        out = {k: v for k, v in example.items() if k != 'encoded'}
        out['image'] = augment.render(example['encoded'], example, image_size)
        if robust:
            out['image'] = robust_lib.jpeg(out['image'])
        out['face_mask'] = tf.ones_like(example['ignore'])
        return out

    ds = records.batch(PLAN_BATCH).map(plan, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return ds.map(render, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not is_training)


def _fit_faces(faces):
    """Moves each image's faces to the front and pads or trims the face axis to a power of
    two (at least MIN_FACE_SLOTS) that holds the largest count."""
    order = tf.argsort(tf.cast(~faces['face_mask'], tf.int32), axis=1, stable=True)
    count = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(faces['face_mask'], tf.int32), 1)),
                       MIN_FACE_SLOTS)
    # log2(count - 0.5) keeps float error from rounding an exact power of two up.
    log2 = tf.math.log(tf.cast(count, tf.float32) - 0.5) / tf.math.log(2.0)
    slots = tf.cast(2.0 ** tf.math.ceil(log2), tf.int32)
    out = {}
    for key in FACE_KEYS:
        value = tf.gather(faces[key], order, batch_dims=1)[:, :slots]
        rank = len(value.shape)
        extra = slots - tf.shape(value)[1]
        out[key] = tf.pad(value, [[0, 0], [0, extra]] + [[0, 0]] * (rank - 2))
    return out
