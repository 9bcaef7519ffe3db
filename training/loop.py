"""The training loop: tf.distribute, mixed precision, checkpoints that resume, TensorBoard.

A custom loop rather than ``model.fit`` so that checkpoint resume keeps the exact step,
XLA stays off unless asked (Keras turns it on by itself on GPUs), and validation can report
average precision with the project's own decoding path.
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from common import preemption
from data import augment
from data import pipeline
from data import robust
from model import anchors as anchor_lib
from model import losses
from model import targets as target_lib
from model.detector import DetectorConfig, build_detector
from training import checkpoints
from training import data_service
from training import devices
from training import progress as progress_lib
from training import divergence
from training import train_input
from training import validation

# Batches of training crops whose statistics an export's unfolded batch norms take
# (--init_from=<export dir>): 256 crops at batch 32. Training-mode norms use each batch's
# own statistics anyway; these only start the moving averages (momentum 0.99), which the
# first few hundred steps replace.
CALIBRATION_BATCHES = 8
# The largest global norm of a step's gradient (summed over the replicas); larger ones are
# scaled down to it.
GLOBAL_CLIPNORM = 10.0


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
    robust_augment: bool = False  # data/robust.py: copy-paste, rotation, blur, noise, JPEG...
    train_min_face: float = augment.MIN_FACE_PX  # smaller faces in a crop are ignored
    val_min_face: float = 4.0
    val_image_size: int = 0      # letterbox side for validation; 0 = the training size
    # > 0: the AP that picks the best checkpoint is measured on each validation photo at its
    # own size (long side at most this), as the export runs it; 0: on the letterboxes.
    val_max_side: int = 0
    val_variants: Tuple[str, ...] = ()  # evaluation.variants names; ap50_mean then picks the best
    ema_decay: float = 0.999     # weight averaging; 0 turns it off
    ema_warmup: int = 1000       # the decay ramps up over about this many steps
    init_from: Optional[str] = None  # model_dir of an earlier run: start from its weights
    data_service: Optional[str] = None  # grpc://host:port of a tf.data service dispatcher
    data_service_timeout: float = 300.0  # seconds without a batch from it that stop the run
    bad_records: str = 'skip'    # a damaged shard: 'skip' its unreadable part, or 'stop'
    max_bad_steps: int = 20      # non-finite (or exploded) steps in a row that stop the run
    seed: int = 0


def _optimizer(s: TrainSettings):
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, s.train_steps - s.warmup_steps),
        warmup_target=s.learning_rate, warmup_steps=s.warmup_steps, alpha=0.02)
    # No clipping here: _step_gradient clips the gradient summed over the replicas.
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=s.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=['bn', 'bias'])
    if s.precision == 'mixed_float16':
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@dataclasses.dataclass
class _State:
    """What a checkpoint holds, and the managers that write it."""
    model: keras.Model
    ema_model: Optional[keras.Model]
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable
    landmark_points: tf.Variable  # positive points that had landmark labels (export reads it)
    checkpoint: tf.train.Checkpoint
    manager: Optional[tf.train.CheckpointManager] = None
    best_manager: Optional[tf.train.CheckpointManager] = None


def train(s: TrainSettings):
    """Runs training to s.train_steps, resuming from s.model_dir if it has checkpoints.

    Returns:
      dict of the last validation metrics (empty without val_records).
    """
    keras.mixed_precision.set_dtype_policy(s.precision)  # before any layer is built
    strategy = devices.make_strategy(s.strategy, s.cpu_devices)
    if s.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f'--batch_size={s.batch_size} must divide by the '
                         f'{strategy.num_replicas_in_sync} replicas')
    pipeline.check_shards(pipeline.list_shards(s.train_records))
    if s.val_records:
        pipeline.check_shards(pipeline.list_shards(s.val_records))
    with strategy.scope():
        state = _build_state(s)
    print(f'{strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), dtype policy '
          f'{state.model.dtype_policy.name}, optimizer {type(state.optimizer).__name__}', flush=True)
    # Every worker of a cluster must save (saving reads the distributed variables), but only
    # the chief writes model_dir; the others write to model_dir/workers/<task>. All resume
    # from the chief's checkpoints.
    out_dir, is_chief = _writer_dir(strategy, s.model_dir)
    state.manager = tf.train.CheckpointManager(state.checkpoint,
                                               os.path.join(out_dir, 'checkpoints'), max_to_keep=3)
    state.best_manager = tf.train.CheckpointManager(state.checkpoint, os.path.join(out_dir, 'best'),
                                                    max_to_keep=1)
    from_source = _resume_or_init(s, state)
    start_step = int(state.step.numpy())
    if start_step >= s.train_steps:
        print(f'already trained to step {start_step} (--train_steps={s.train_steps})', flush=True)

    batches = train_input.TrainInput(s, strategy, s.seed + start_step)
    train_step = make_train_step(s, strategy, state, batches.dataset.element_spec)
    # Validation runs outside the distributed step, on the chief only; the other workers wait
    # for it at their next collective.
    validate = None
    if s.val_records and is_chief:
        validate = validation.make_validator(state.ema_model or state.model, s)
        if from_source:  # the log then shows the AP before and after the fine-tune
            print('validation before training (the --init_from weights): ' + _metrics_text(
                validate()), flush=True)
    handler = _preemption_handler(s, strategy, state)
    metrics = _run(s, state, train_step, batches, validate, is_chief, handler)
    print(f'checkpoints: {state.manager.directory}  tensorboard --logdir={s.model_dir}', flush=True)
    return metrics


def _build_state(s: TrainSettings):
    """The network, its weight average, the optimizer and the counters (in strategy scope)."""
    model = build_detector(s.config)
    optimizer = _optimizer(s)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    # export.py ships the landmark outputs only when the network was taught them (real-photo
    # sets without landmarks teach nothing, and their landmark outputs are noise).
    landmark_points = tf.Variable(0.0, trainable=False, name='landmark_points')
    # The averaged weights live in a second copy of the network: validation, the best
    # checkpoint and export.py use it (see ema_update).
    ema_model = build_detector(s.config) if s.ema_decay > 0 else None
    if ema_model is not None:
        ema_model.set_weights(model.get_weights())
    trackables = {'ema': ema_model} if ema_model is not None else {}
    checkpoint = tf.train.Checkpoint(step=step, model=model, optimizer=optimizer,
                                     landmark_points=landmark_points, **trackables)
    return _State(model, ema_model, optimizer, step, landmark_points, checkpoint)


def _resume_or_init(s: TrainSettings, state: _State):
    """Restores the chief's latest checkpoint, or else starts from --init_from's weights;
    returns whether it did the latter."""
    if _resume(os.path.join(s.model_dir, 'checkpoints'), state):
        return False
    if not s.init_from:
        return False
    crops = None
    if checkpoints.is_export(s.init_from):
        # The statistics of training crops, which training-mode batch norm normalizes, for
        # the export's unfolded norms: jittered as the train step jitters them.
        crops = [augment.photometric(b['image']) for b in
                 train_input.training_crops(s, s.batch_size, s.seed).take(CALIBRATION_BATCHES)]
    source = checkpoints.init_weights(s.init_from, s.config, state.model, state.ema_model,
                                      image_batches=crops)
    unfolded = (f' (an export: batch norms unfolded with the statistics of '
                f'{sum(len(c) for c in crops)} training crops)' if crops else '')
    print(f'starting from the weights of {source}{unfolded}', flush=True)
    return True


def _metrics_text(metrics):
    return ' '.join(f'{k} {v:.4f}' for k, v in metrics.items())


def _resume(directory, state: _State):
    """Restores the newest readable checkpoint in directory; returns whether one was.

    A checkpoint cut short (a full disk, a copy that stopped) is reported and the one
    before it taken; a run killed while saving never lists the one it was writing.
    """
    listed = tf.train.get_checkpoint_state(directory)
    for path in reversed(list(listed.all_model_checkpoint_paths) if listed else []):
        if not os.path.isabs(path):
            path = os.path.join(directory, path)
        try:
            _restore(path, state)
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
            print(f'checkpoint {path} cannot be read ({str(e).strip().splitlines()[0][:200]}): '
                  'trying the one before it', flush=True)
            continue
        print(f'resumed from {path} at step {int(state.step.numpy())}', flush=True)
        return True
    if listed and listed.all_model_checkpoint_paths:
        raise ValueError(f'no checkpoint in {directory} can be read: move it away to start '
                         'over, or restore it from a copy')
    return False


def make_train_step(s: TrainSettings, strategy, state: _State, element_spec):
    """The distributed train step: colour jitter, target assignment, loss, update, average.

    Jitter and targets run here, on the accelerator and on the whole batch, rather than in
    the input pipeline, which then only decodes and crops (data/pipeline.py). The step is
    traced once for element_spec, whose face axis has no fixed size.
    """
    cfg, model, optimizer = s.config, state.model, state.optimizer
    points, point_strides, _ = anchor_lib.anchor_points(cfg.image_size, cfg.image_size,
                                                        cfg.strides)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    replicas = strategy.num_replicas_in_sync

    def gradients(images, targets):
        with tf.GradientTape() as tape:
            raw = model(images, training=True)
            terms = losses.detection_loss(raw, targets, points, point_strides)
            loss = terms['loss'] / replicas
            if scaled:
                loss = optimizer.scale_loss(loss)
        return terms, tape.gradient(loss, model.trainable_variables)

    # --jit_compile: XLA compiles each replica's forward pass, loss and gradients, on its own
    # device. Augmentation (robust.py's CropAndResize and ImageProjectiveTransformV3 have no
    # XLA kernel), targets, the cross-replica sum and the update stay outside.
    if s.jit_compile:
        gradients = tf.function(gradients, jit_compile=True, reduce_retracing=True)

    def step_fn(batch):
        if s.robust_augment:
            batch = robust.geometric(batch, s.train_min_face)
        images = augment.photometric(batch['image'])
        if s.robust_augment:
            images = robust.degrade(images)
        targets = target_lib.for_batch(batch, cfg.image_size, cfg.strides, cfg.anchor_scale)
        terms, grads = gradients(images, targets)
        variables = model.trainable_variables
        applied = update(optimizer, grads, terms['loss'], variables)
        return terms, tf.reduce_sum(targets['landmark_weight']), applied

    @tf.function(input_signature=[element_spec])
    def train_step(batch):
        terms, labelled, applied = strategy.run(step_fn, args=(batch,))
        applied = strategy.experimental_local_results(applied)[0]  # the replicas agree
        if applied:
            state.step.assign_add(1)
            state.landmark_points.assign_add(
                strategy.reduce(tf.distribute.ReduceOp.SUM, labelled, axis=None))
            if state.ema_model is not None:
                ema_update(state.ema_model, model, state.step, s.ema_decay, s.ema_warmup)
        terms = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                 for k, v in terms.items()}
        return terms, applied

    return train_step


def update(optimizer, grads, loss, variables):
    """Applies one step's gradient (grads of each replica's loss / replicas, scaled under a
    LossScaleOptimizer) from the replica context; returns whether it was applied.

    An update from a non-finite loss or gradient would make every weight NaN: it is skipped
    on every replica together (_step_gradient) and counted (training/divergence.py). Under
    loss scaling the optimizer is told too (non-finite gradients), so it halves the scale.
    """
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    grads, applied = _step_gradient(grads, loss, optimizer.dynamic_scale if scaled else None)
    if scaled:
        optimizer.apply([g * tf.where(applied, optimizer.dynamic_scale, np.nan) for g in grads],
                        variables)
    else:
        _apply_if(applied, optimizer, grads, variables)
    return applied


def _apply_if(applied, optimizer, grads, variables):
    """optimizer.apply(grads, variables) where applied is true, from the replica context.

    Under MirroredStrategy the update merges across replicas, which a tf.cond in the
    replica context cannot hold: the condition then runs in the cross-replica context and
    the update in each replica, as keras' LossScaleOptimizer does it.
    """
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(applied, lambda: optimizer.apply(grads, variables), lambda: None)
        return

    def cross_replica(distribution, applied, grads):
        def apply():
            distribution.extended.call_for_each_replica(optimizer.apply,
                                                        args=(grads, variables))
        ok = distribution.experimental_local_results(applied)[0]  # the replicas agree
        tf.cond(ok, apply, lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(applied, grads))


def _step_gradient(grads, loss, loss_scale=None):
    """(grads for optimizer.apply, applied): the step's gradient, the same on every replica.

    Each replica's gradient is summed over the replicas here (the loss was divided by their
    count), unscaled (float16), and clipped to GLOBAL_CLIPNORM by the global norm of that
    sum, so one rule holds at any replica count (Keras' global_clipnorm clips each replica's
    part before its own sum). `applied` is whether the summed gradient and every replica's
    loss are finite: one answer for all replicas, so all skip together. Keras' apply sums
    over the replicas again, so each gets its share (sum / replicas).
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    if replicas > 1:
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if loss_scale is not None:
        grads = [g / loss_scale for g in grads]
    bad_loss = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                  1.0 - tf.cast(tf.math.is_finite(loss), tf.float32))
    norm = tf.linalg.global_norm(grads)
    applied = (bad_loss == 0.0) & tf.math.is_finite(norm)
    clip = tf.minimum(1.0, GLOBAL_CLIPNORM / tf.maximum(norm, 1e-12))
    return [g * (clip / replicas) for g in grads], applied


def _preemption_handler(s: TrainSettings, strategy, state: _State):
    """multi_worker: TensorFlow's PreemptionCheckpointHandler, which takes SIGTERM on any
    worker, agrees with every worker on the step to save at, saves there on all of them
    and then stops each with the same line as a single worker's SIGTERM (exit 143).
    Single workers use preemption.SigtermFlag in _run."""
    if s.strategy != 'multi_worker':
        return None

    def stop():
        step = int(state.step.numpy())
        print(f'terminated (SIGTERM): saved step {step}; rerun the same command to resume',
              flush=True)
        raise preemption.Terminated(step)

    return tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver, state.manager,
        termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=stop))


def _run(s: TrainSettings, state: _State, train_step, batches, validate, is_chief,
         handler=None):
    """Steps to s.train_steps with progress lines, summaries, checkpoints and validation.

    The host reads a step's results (loss, applied, the step) only where it needs them: the
    first step, log, checkpoint and validation steps, the last, and SIGTERM. In between it
    queues the next step at once, so an accelerator never waits for the host's read of the
    step before (_read_steps checks every step's loss when it does read).
    """
    if is_chief:
        writer = tf.summary.create_file_writer(os.path.join(s.model_dir, 'train'))
        val_writer = tf.summary.create_file_writer(os.path.join(s.model_dir, 'val'))
    else:
        writer = val_writer = tf.summary.create_noop_writer()
    progress = progress_lib.Progress(s.train_steps, s.batch_size)
    guard = divergence.DivergenceGuard(s.max_bad_steps)
    metrics = {}
    current = int(state.step.numpy())
    pending = []  # (terms, applied) of the steps run since current was read
    sigterm = preemption.SigtermFlag(s.strategy != 'multi_worker')
    try:
        while current < s.train_steps:
            if sigterm.received:
                current = _read_steps(pending, guard, state)[2]
                if not (state.manager.latest_checkpoint or '').endswith(f'-{current}'):
                    _save(state.manager, state, current)
                print(f'terminated (SIGTERM): saved step {current}; rerun the same command to '
                      'resume', flush=True)
                writer.flush()
                raise preemption.Terminated(current)
            pending.append(train_step(batches.next(current + len(pending))))
            if handler is not None:  # all workers save at one agreed step, then stop
                handler.save_checkpoint_if_preempted(checkpoint_number=state.step)
            if progress.t0 is not None and not _due(s, current + len(pending), validate):
                continue  # not read yet: no step before the next due one needs the host
            terms, applied, current = _read_steps(pending, guard, state)
            progress.start(current)
            if not applied or guard.suspect:
                continue  # no logs, checkpoints or validation of an exploded update
            if current % s.log_every == 0 or current == s.train_steps:
                _log(current, terms, progress, writer, state.optimizer,
                     {'skipped_steps': guard.skipped, 'lost_records': batches.lost_records})
            if current % s.checkpoint_every == 0:
                _save(state.manager, state, current)
            if validate and (current % s.steps_per_epoch == 0 or current == s.train_steps):
                with val_writer.as_default(step=current):  # validate() writes its photos
                    metrics = validate()
                    print(f'validation at step {current}: ' + _metrics_text(metrics),
                          flush=True)
                    for k, v in metrics.items():
                        tf.summary.scalar(f'val/{k}', v)
                _keep_best(state, s.model_dir, current, metrics)
    except KeyboardInterrupt:
        _save(state.manager, state, int(state.step.numpy()))
        print(f'\ninterrupted: saved step {int(state.step.numpy())}; rerun the same command to '
              'resume', flush=True)
        raise
    except (train_input.DamagedShards, data_service.ServiceLost):
        _read_steps(pending, guard, state)
        _save(state.manager, state, int(state.step.numpy()))  # only the input stopped
        raise
    except divergence.Diverged as e:
        kept = state.manager.latest_checkpoint or 'none was written before'
        raise divergence.Diverged(f'{e}: {kept}') from None
    finally:
        sigterm.restore()
    latest = state.manager.latest_checkpoint
    if not guard.suspect and (latest is None or not latest.endswith(f'-{current}')):
        _save(state.manager, state, current)
    writer.flush()
    val_writer.flush()
    return metrics


def _due(s: TrainSettings, step, validate):
    """Whether the loop acts at step (logs, saves, validates or ends) and so reads it."""
    every = [s.log_every, s.checkpoint_every] + ([s.steps_per_epoch] if validate else [])
    return step >= s.train_steps or any(step % n == 0 for n in every)


def _read_steps(pending, guard, state: _State):
    """Reads the steps run since the last read (emptying pending), checks each with the
    divergence guard in order and returns the last one's (terms, applied) and the step."""
    step = int(state.step.numpy()) - sum(bool(a) for _, a in pending)
    terms, applied = {}, True
    for terms, applied in pending:
        applied = bool(applied)
        step += applied
        line = guard.check(step, float(terms['loss']), applied)
        if line:
            print(line, flush=True)
    pending.clear()
    return terms, applied, int(state.step.numpy())


def _save(manager, state: _State, step):
    """Saves a checkpoint unless the weights are not finite (then the last good one stays)."""
    bad = checkpoints.non_finite_weight(state.model) or (
        state.ema_model and checkpoints.non_finite_weight(state.ema_model))
    if bad:
        print(f'step {step}: weight {bad} is not finite: no checkpoint written, the last good '
              'one is kept', flush=True)
        return None
    return manager.save(checkpoint_number=step)


def _log(step, terms, progress, writer, optimizer, counts):
    """Prints a progress line; writes the loss terms, learning rate and counts (skipped
    steps, records left out of damaged shards) to TensorBoard."""
    values = {k: float(v) for k, v in terms.items()}
    scale = (float(optimizer.dynamic_scale.numpy())
             if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None)
    line = progress.line(step, values)
    if scale is not None:  # float16: a falling scale means overflowing (skipped) steps
        line += f' | loss scale {scale:g}, {counts["skipped_steps"]} skipped'
    print(line, flush=True)
    with writer.as_default(step=step):
        for k, v in values.items():
            tf.summary.scalar(f'loss/{k}' if k != 'num_positive' else k, v)
        tf.summary.scalar('learning_rate', _learning_rate(optimizer))
        if scale is not None:
            tf.summary.scalar('loss_scale', scale)
        for k, v in counts.items():
            tf.summary.scalar(f'faults/{k}', v)


def _restore(path, state: _State):
    """Restores a checkpoint; the network, optimizer and step must all be in it. The weight
    average and the landmark count may be missing (checkpoints written before they
    existed): the average then starts from the restored weights, the count from zero.
    """
    tf.train.Checkpoint(step=state.step, model=state.model, optimizer=state.optimizer) \
        .restore(path).expect_partial().assert_existing_objects_matched()
    saved = checkpoints.saved_objects(path)
    extras = {'landmark_points': state.landmark_points}
    if state.ema_model is not None:
        if 'ema' in saved:
            extras['ema'] = state.ema_model
        else:
            state.ema_model.set_weights(state.model.get_weights())
    extras = {k: v for k, v in extras.items() if k in saved}
    if extras:
        tf.train.Checkpoint(**extras).restore(path).expect_partial() \
            .assert_existing_objects_matched()


def _writer_dir(strategy, model_dir):
    """(directory this process writes, whether it is the chief) for the strategy's cluster."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    task_type = getattr(resolver, 'task_type', None)
    if not task_type or devices.is_chief(task_type, resolver.task_id,
                                         resolver.cluster_spec().as_dict()):
        return model_dir, True
    return os.path.join(model_dir, 'workers', f'{task_type}_{resolver.task_id}'), False


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


def _keep_best(state: _State, model_dir, step, metrics):
    """Keeps a copy of the checkpoint with the best validation AP (ap50_mean, the mean over
    the plain and degraded photos, when validation has variants; or loss without AP); never
    one with a non-finite metric or weight."""
    path = os.path.join(model_dir, 'best', 'best.json')
    key, sign = next(((k, 1.0) for k in ('ap50_mean', 'ap50') if k in metrics), ('loss', -1.0))
    if not all(np.isfinite(v) for v in metrics.values()):
        return
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if key in previous and sign * metrics[key] <= sign * previous[key]:
            return
    if _save(state.best_manager, state, step) is None:
        return
    checkpoints.write_text(path, json.dumps({'step': step, **metrics}))
