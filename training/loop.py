"""The training loop: tf.distribute, mixed precision, checkpoints that resume, TensorBoard.

A custom loop rather than ``model.fit`` so that checkpoint resume keeps the exact step,
XLA stays off unless asked (Keras turns it on by itself on GPUs), and validation can report
average precision with the project's own decoding path.
"""

import dataclasses
import json
import os
import time
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from data import augment
from data import boxes as box_lib
from data import features
from data import pipeline
from evaluation import wider
from model import anchors as anchor_lib
from model import losses
from model import postprocess
from model import serving
from model.detector import DetectorConfig, build_detector
from training import checkpoints

# Batches of training crops whose statistics an export's unfolded batch norms take
# (--init_from=<export dir>): 256 crops at batch 32. Training-mode norms use each batch's
# own statistics anyway; these only start the moving averages (momentum 0.99), which the
# first few hundred steps replace.
CALIBRATION_BATCHES = 8


@dataclasses.dataclass
class TrainSettings:
    train_records: str
    model_dir: str
    config: DetectorConfig
    val_records: Optional[str] = None
    batch_size: int = 32
    train_steps: int = 1000
    steps_per_epoch: int = 250
    checkpoint_every: int = 100
    log_every: int = 20
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    precision: str = 'float32'
    strategy: str = 'auto'
    cpu_devices: int = 1
    jit_compile: bool = False
    crop_range: Tuple[float, float] = (0.3, 2.0)
    shuffle_buffer: int = 1000
    train_min_face: float = augment.MIN_FACE_PX  # smaller faces in a crop are ignored
    val_min_face: float = 4.0
    val_image_size: int = 0      # letterbox side for validation; 0 = the training size
    # > 0: the AP that picks the best checkpoint is measured on each validation photo at its
    # own size (long side at most this), as the export runs it; 0: on the letterboxes.
    val_max_side: int = 0
    ema_decay: float = 0.999     # weight averaging; 0 turns it off
    ema_warmup: int = 1000       # the decay ramps up over about this many steps
    init_from: Optional[str] = None  # model_dir of an earlier run: start from its weights
    seed: int = 0


def make_strategy(name, cpu_devices=1):
    """Returns the tf.distribute strategy for a --strategy flag value."""
    if cpu_devices > 1:
        cpus = tf.config.list_physical_devices('CPU')
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError:
            pass  # already initialised in this process (tests): keep what is there
    if name == 'multi_worker':
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices('GPU')
    if name == 'mirrored' or (name == 'auto' and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices('CPU')]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def _optimizer(s: TrainSettings):
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, s.train_steps - s.warmup_steps),
        warmup_target=s.learning_rate, warmup_steps=s.warmup_steps, alpha=0.02)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=s.weight_decay,
                                       clipnorm=None, global_clipnorm=10.0)
    optimizer.exclude_from_weight_decay(var_names=['bn', 'bias'])
    if s.precision == 'mixed_float16':
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class _Progress:
    """Prints step, losses, images/s and ETA."""

    def __init__(self, total_steps, batch_size):
        self.total, self.batch = total_steps, batch_size
        self.t0 = self.step0 = None

    def start(self, step):
        """Starts the clock after the first step, so tracing time is not counted as speed."""
        if self.t0 is None:
            self.t0, self.step0 = time.time(), step

    def line(self, step, terms):
        elapsed = max(time.time() - self.t0, 1e-9)
        rate = (step - self.step0) / elapsed
        eta = (self.total - step) / rate if rate > 0 else float('inf')
        parts = ' '.join(f'{k} {v:.4f}' for k, v in terms.items() if k != 'num_positive')
        return (f'step {step}/{self.total} {parts} | {rate * self.batch:.1f} img/s | '
                f'ETA {_duration(eta)}')


def _duration(seconds):
    if not np.isfinite(seconds):
        return '?'
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def train(s: TrainSettings):
    """Runs training to s.train_steps, resuming from s.model_dir if it has checkpoints.

    Returns:
      dict of the last validation metrics (empty without val_records).
    """
    keras.mixed_precision.set_dtype_policy(s.precision)  # before any layer is built
    strategy = make_strategy(s.strategy, s.cpu_devices)
    replicas = strategy.num_replicas_in_sync
    if s.batch_size % replicas:
        raise ValueError(f'--batch_size={s.batch_size} must divide by the {replicas} replicas')
    cfg = s.config
    size = cfg.image_size
    files = pipeline.list_shards(s.train_records)
    pipeline.check_shards(files)
    if s.val_records:
        pipeline.check_shards(pipeline.list_shards(s.val_records))

    with strategy.scope():
        model = build_detector(cfg)
        optimizer = _optimizer(s)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        # How many positive points had landmark labels: export.py ships the landmark outputs
        # only when the network was taught them (real-photo sets without landmarks teach
        # nothing, and their landmark outputs are noise).
        landmark_points = tf.Variable(0.0, trainable=False, name='landmark_points')
        # The averaged weights live in a second copy of the network: validation, the best
        # checkpoint and export.py use it (see ema_update).
        ema_model = build_detector(cfg) if s.ema_decay > 0 else None
        if ema_model is not None:
            ema_model.set_weights(model.get_weights())
        trackables = {'ema': ema_model} if ema_model is not None else {}
        checkpoint = tf.train.Checkpoint(step=step, model=model, optimizer=optimizer,
                                         landmark_points=landmark_points, **trackables)
    # Every worker of a cluster must save (saving reads the distributed variables), but only
    # the chief writes model_dir; the others write to model_dir/workers/<task>. All resume
    # from the chief's checkpoints.
    out_dir, is_chief = _writer_dir(strategy, s.model_dir)
    chief_checkpoints = os.path.join(s.model_dir, 'checkpoints')
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, 'checkpoints'),
                                         max_to_keep=3)
    best_manager = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, 'best'),
                                              max_to_keep=1)
    resume_from = tf.train.latest_checkpoint(chief_checkpoints)
    if resume_from:
        _restore(resume_from, step, model, optimizer, ema_model, landmark_points)
        print(f'resumed from {resume_from} at step {int(step.numpy())}', flush=True)
    elif s.init_from:
        crops = None
        if checkpoints.is_export(s.init_from):
            # The statistics of training crops, which training-mode batch norm normalizes,
            # for the export's unfolded norms.
            crops = [b['image'] for b in
                     training_crops(s, s.batch_size, s.seed).take(CALIBRATION_BATCHES)]
        source = checkpoints.init_weights(s.init_from, cfg, model, ema_model,
                                          image_batches=crops)
        unfolded = (f' (an export: batch norms unfolded with the statistics of '
                    f'{sum(len(c) for c in crops)} training crops)' if crops else '')
        print(f'starting from the weights of {source}{unfolded}', flush=True)
    start_step = int(step.numpy())
    if start_step >= s.train_steps:
        print(f'already trained to step {start_step} (--train_steps={s.train_steps})', flush=True)

    points, point_strides, _ = anchor_lib.anchor_points(size, size, cfg.strides)

    def dataset_fn(ctx):
        ds = training_crops(s, ctx.get_per_replica_batch_size(s.batch_size),
                            s.seed + start_step, ctx)
        # The padded face lists change shape from batch to batch and would retrace the
        # step function each time; training needs only the fixed-shape targets.
        return ds.map(lambda b: {'image': b['image'], 'targets': b['targets']})

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def step_fn(batch):
        with tf.GradientTape() as tape:
            raw = model(batch['image'], training=True)
            terms = losses.detection_loss(raw, batch['targets'], points, point_strides)
            loss = terms['loss'] / replicas
            if scaled:
                loss = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return terms, tf.reduce_sum(batch['targets']['landmark_weight'])

    @tf.function(jit_compile=s.jit_compile)
    def train_step(batch):
        terms, labelled = strategy.run(step_fn, args=(batch,))
        step.assign_add(1)
        landmark_points.assign_add(strategy.reduce(tf.distribute.ReduceOp.SUM, labelled, axis=None))
        if ema_model is not None:
            ema_update(ema_model, model, step, s.ema_decay, s.ema_warmup)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in terms.items()}

    if is_chief:
        writer = tf.summary.create_file_writer(os.path.join(s.model_dir, 'train'))
        val_writer = tf.summary.create_file_writer(os.path.join(s.model_dir, 'val'))
    else:
        writer = val_writer = tf.summary.create_noop_writer()
    progress = _Progress(s.train_steps, s.batch_size)
    # Validation runs outside the distributed step, on the chief only; the other workers wait
    # for it at their next collective.
    validator_model = ema_model if ema_model is not None else model
    validate = make_validator(validator_model, s) if s.val_records and is_chief else None
    metrics = {}
    current = start_step
    try:
        while current < s.train_steps:
            terms = train_step(next(iterator))
            current = int(step.numpy())
            progress.start(current)
            if current % s.log_every == 0 or current == s.train_steps:
                values = {k: float(v) for k, v in terms.items()}
                if not np.isfinite(values['loss']):
                    raise FloatingPointError(f'loss became {values["loss"]} at step {current}')
                print(progress.line(current, values), flush=True)
                with writer.as_default(step=current):
                    for k, v in values.items():
                        tf.summary.scalar(f'loss/{k}' if k != 'num_positive' else k, v)
                    tf.summary.scalar('learning_rate', _learning_rate(optimizer))
            if current % s.checkpoint_every == 0:
                manager.save(checkpoint_number=current)
            if validate and (current % s.steps_per_epoch == 0 or current == s.train_steps):
                metrics = validate()
                print(f'validation at step {current}: ' +
                      ' '.join(f'{k} {v:.4f}' for k, v in metrics.items()), flush=True)
                with val_writer.as_default(step=current):
                    for k, v in metrics.items():
                        tf.summary.scalar(f'val/{k}', v)
                _keep_best(best_manager, s.model_dir, current, metrics)
    except KeyboardInterrupt:
        manager.save(checkpoint_number=int(step.numpy()))
        print(f'\ninterrupted: saved step {int(step.numpy())}; rerun the same command to resume',
              flush=True)
        raise
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f'-{current}'):
        manager.save(checkpoint_number=current)
    writer.flush()
    val_writer.flush()
    print(f'checkpoints: {manager.directory}  tensorboard --logdir={s.model_dir}', flush=True)
    return metrics


def training_crops(s: TrainSettings, batch_size, seed, input_context=None):
    """The training dataset: augmented crops with their targets, batched."""
    cfg = s.config
    return pipeline.build_dataset(
        s.train_records, batch_size, cfg.image_size, True, strides=cfg.strides,
        anchor_scale=cfg.anchor_scale, shuffle_buffer=s.shuffle_buffer, seed=seed,
        scale_range=s.crop_range, input_context=input_context, min_face_px=s.train_min_face)


def _restore(path, step, model, optimizer, ema_model, landmark_points):
    """Restores a checkpoint; the network, optimizer and step must all be in it. The weight
    average and the landmark count may be missing (checkpoints written before they
    existed): the average then starts from the restored weights, the count from zero.
    """
    tf.train.Checkpoint(step=step, model=model, optimizer=optimizer).restore(path) \
        .expect_partial().assert_existing_objects_matched()
    saved = checkpoints.saved_objects(path)
    extras = {'landmark_points': landmark_points}
    if ema_model is not None:
        if 'ema' in saved:
            extras['ema'] = ema_model
        else:
            ema_model.set_weights(model.get_weights())
    extras = {k: v for k, v in extras.items() if k in saved}
    if extras:
        tf.train.Checkpoint(**extras).restore(path).expect_partial() \
            .assert_existing_objects_matched()


def _writer_dir(strategy, model_dir):
    """(directory this process writes, whether it is the chief) for the strategy's cluster.

    The chief is the 'chief' task, or worker 0 of a cluster without one (TF's convention).
    """
    resolver = getattr(strategy, 'cluster_resolver', None)
    task_type = getattr(resolver, 'task_type', None)
    if not task_type:
        return model_dir, True
    task_id = resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    if task_type == 'chief' or (task_type == 'worker' and task_id == 0 and 'chief' not in cluster):
        return model_dir, True
    return os.path.join(model_dir, 'workers', f'{task_type}_{task_id}'), False


def ema_update(ema_model, model, step, decay, warmup):
    """ema = d * ema + (1 - d) * weights, for every weight including batch-norm statistics.

    d = decay * (1 - exp(-step / warmup)) ramps up from 0, so the average does not drag the
    random initial weights along (the rule of YOLOv5 and SCRFD's model EMA).
    """
    d = decay * (1.0 - tf.exp(-tf.cast(step, tf.float32) / float(warmup)))
    for ema_w, w in zip(ema_model.weights, model.weights):
        if tf.as_dtype(ema_w.dtype).is_floating:
            ema_w.assign(d * ema_w + (1.0 - d) * tf.cast(w, ema_w.dtype))
        else:
            ema_w.assign(w)


def _learning_rate(optimizer):
    inner = getattr(optimizer, 'inner_optimizer', optimizer)
    lr = inner.learning_rate
    return float(lr.numpy() if hasattr(lr, 'numpy') else lr)


def _keep_best(best_manager, model_dir, step, metrics):
    """Keeps a copy of the checkpoint with the best validation AP (or loss without AP)."""
    path = os.path.join(model_dir, 'best', 'best.json')
    key, sign = ('ap50', 1.0) if 'ap50' in metrics else ('loss', -1.0)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if key in previous and sign * metrics[key] <= sign * previous[key]:
            return
    best_manager.save(checkpoint_number=step)
    checkpoints.write_text(path, json.dumps({'step': step, **metrics}))


def make_validator(model, s: TrainSettings):
    """Returns validate(): validation loss and AP@0.5 on images letterboxed to
    s.val_image_size (the training size when 0); with s.val_max_side, ``ap50`` is instead
    measured on each photo at its own size and the letterboxed AP is ``ap50_letterbox``.

    Photos shrunk to a 320-px training size lose their small faces, so a larger validation
    size ranks checkpoints closer to how the exported model (run at the image's own size)
    will score; the photo's own size ranks them as the export is run (by detect.py and
    benchmarks/peers.py), through the same preprocessing, decoding and NMS
    (model/serving.py). The tf.functions are built once here, so validating every epoch does
    not retrace them.
    """
    size = s.val_image_size or s.config.image_size
    points, point_strides, _ = anchor_lib.anchor_points(size, size, s.config.strides)

    @tf.function(reduce_retracing=True)
    def eval_step(images, targets):
        raw = model(images, training=False)
        terms = losses.detection_loss(raw, targets, points, point_strides)
        dets = postprocess.detect(raw, size, size, s.config.strides, score_threshold=0.05,
                                  max_detections=300)
        return terms, dets

    def letterboxed():
        ds = pipeline.build_dataset(s.val_records, s.batch_size, size, False,
                                    strides=s.config.strides, anchor_scale=s.config.anchor_scale)
        batch_terms = []
        accumulator = wider.Accumulator(iou_threshold=0.5, min_face=s.val_min_face)
        for batch in ds:
            terms, dets = eval_step(batch['image'], batch['targets'])
            batch_terms.append({k: float(v) for k, v in terms.items()})
            for i in range(int(tf.shape(batch['image'])[0])):
                mask = batch['face_mask'][i].numpy()
                n = int(dets['num_detections'][i])
                accumulator.add_image(
                    gt_boxes=_xywh(batch['boxes'][i].numpy()[mask], size),
                    det_boxes=_xywh(dets['boxes'][i, :n].numpy(), size),
                    det_scores=dets['scores'][i, :n].numpy(),
                    gt_ignore=batch['ignore'][i].numpy()[mask])
        metrics = losses.pool_batch_losses(batch_terms)
        metrics['ap50'] = accumulator.result().ap
        return metrics

    if not s.val_max_side:
        return letterboxed

    # The export's settings (its 0.05 score floor; --max_detections=1000 for crowds).
    detector = serving.Detector(model, s.config.strides, max_side=s.val_max_side,
                                max_detections=1000)
    own_size_step = tf.function(detector.detect_images,
                                input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])

    def validate():
        metrics = letterboxed()
        metrics['ap50_letterbox'] = metrics.pop('ap50')
        metrics['ap50'] = own_size_ap(own_size_step, s.val_records, s.val_min_face)
        return metrics

    return validate


def own_size_ap(detect, val_records, min_face):
    """AP@0.5 (WIDER protocol) of detect on each photo of val_records at its own size.

    Args:
      detect: [1, H, W, 3] float32 image -> dict with ``boxes`` [1, K, 4] pixel xywh,
        ``scores`` [1, K] and ``num_detections`` [1] (the export's signature).
      val_records: glob(s) of TFRecord shards.
      min_face: faces shorter than this many pixels of the photo are ignored.
    """
    ds = tf.data.TFRecordDataset(pipeline.list_shards(val_records))
    ds = ds.map(features.parse_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    accumulator = wider.Accumulator(iou_threshold=0.5, min_face=min_face)
    for example in ds:
        h, w = int(example['height']), int(example['width'])
        dets = detect(tf.cast(example['image'], tf.float32)[None])
        n = int(dets['num_detections'][0])
        accumulator.add_image(gt_boxes=box_lib.normalized_to_xywh(example['boxes'].numpy(), h, w),
                              det_boxes=np.asarray(dets['boxes'][0, :n]),
                              det_scores=np.asarray(dets['scores'][0, :n]),
                              gt_ignore=example['ignore'].numpy())
    return accumulator.result().ap


def _xywh(boxes, size):
    return box_lib.normalized_to_xywh(boxes, size, size)
