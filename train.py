"""Trains the face detector from TFRecords, streaming (the dataset is never held in RAM).

Usage:
  python train.py --flagfile=configs/quickstart.flags
  python train.py --flagfile=configs/quickstart.flags --data_service=grpc://HOST:5050
  tensorboard --logdir=<model_dir>

Rerunning the same command after an interrupt resumes from the last checkpoint in
--model_dir and the step count carries on. The flags are saved to <model_dir>/flags.txt and
the network's shape to <model_dir>/model_config.json, which export.py reads. --model_dir is
checked first (writable, --min_free_gb free) and held by <model_dir>/.lock (the chief's), so
a second train.py on it is refused (common/output_dirs.py).

Distribution goes through tf.distribute: --strategy=auto uses MirroredStrategy when several
GPUs are visible; --strategy=multi_worker reads the cluster from the TF_CONFIG environment
variable; --cpu_devices=N splits the CPU into N logical devices (to test multi-device code
without GPUs). --precision=auto (the default) picks float32, mixed_float16 or mixed_bfloat16
for the devices and prints its choice. --data_service runs the input pipeline on a tf.data
service (data_service.py) instead of this machine's CPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import quiet  # noqa: E402
quiet.import_tensorflow()  # first: without its start-up notices (common/quiet.py)

from absl import app, flags, logging  # noqa: E402

_TRAIN_RECORDS = flags.DEFINE_string('train_records', None, 'Glob(s) of training TFRecord shards.')
_VAL_RECORDS = flags.DEFINE_string('val_records', None, 'Glob(s) of validation shards (optional).')
_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'Checkpoints, logs and flags go here.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'Square training crop side (multiple of 32).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Global batch size (all replicas).')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 1000, 'Total optimizer steps.')
_STEPS_PER_EPOCH = flags.DEFINE_integer('steps_per_epoch', 250, 'Steps between validations.')
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every', 100, 'Steps between checkpoints.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 20, 'Steps between progress lines.')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 2e-3, 'Peak AdamW learning rate.')
_WARMUP_STEPS = flags.DEFINE_integer('warmup_steps', 100, 'Linear warmup steps.')
_WEIGHT_DECAY = flags.DEFINE_float('weight_decay', 1e-4, 'AdamW weight decay.')
_PRECISION = flags.DEFINE_enum(
    'precision', 'auto', ['auto', 'float32', 'mixed_float16', 'mixed_bfloat16'],
    'Compute precision; outputs and losses stay float32. auto: float32 on CPUs, '
    'mixed_float16 on NVIDIA GPUs of compute capability 7.x, mixed_bfloat16 on 8.0 and newer.')
_STRATEGY = flags.DEFINE_enum('strategy', 'auto', ['auto', 'default', 'mirrored', 'multi_worker'],
                              'tf.distribute strategy.')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', 1, 'Split the CPU into N logical devices.')
_JIT_COMPILE = flags.DEFINE_boolean(
    'jit_compile', False, "XLA-compile each replica's forward pass, loss and gradients "
    '(augmentation, targets and the update stay outside).')
_DATA_SERVICE = flags.DEFINE_string(
    'data_service', None, 'grpc://HOST:PORT of a tf.data service dispatcher (data_service.py): '
    'the input pipeline runs on its workers instead of this machine\'s CPU.')
_DATA_SERVICE_TIMEOUT = flags.DEFINE_float(
    'data_service_timeout', 300.0, 'Seconds without a batch from --data_service (its dispatcher '
    'or every worker gone) after which the run saves its step and stops with one line.')
_WIDTH = flags.DEFINE_float('width', 1.0, 'Channel width multiplier of the network.')
_NECK_CHANNELS = flags.DEFINE_integer('neck_channels', 48, 'FPN/head channels (before width).')
_STEM_CHANNELS = flags.DEFINE_integer('stem_channels', 24,
                                      'Channels of the stride-4 stem (before width).')
_HEAD_UNITS = flags.DEFINE_integer('head_units', 1,
                                   'Depthwise + pointwise units in the shared head.')
_QUALITY_HEAD = flags.DEFINE_bool(
    'quality_head', False, 'Add an IoU output learned on faces only; the face logit then '
    'learns face or not, and the score is their product (as YuNet).')
_STAGE_CHANNELS = flags.DEFINE_list('stage_channels', ['48', '64', '96'],
                                    'Backbone channels at strides 8,16,32 (before width).')
_STAGE_UNITS = flags.DEFINE_list('stage_units', ['3', '4', '3'],
                                 'Backbone units (blocks) at strides 8,16,32.')
_STRIDES = flags.DEFINE_list(
    'strides', ['8', '16', '32'], 'Feature levels: 8,16,32, or 4,8,16,32 to add a stride-4 '
    'level on the stem for faces of 8-16 px (with 320 px crops on 2 CPU cores it trained at '
    '11-12 images/s against 25 without it; the input pipeline kept up).')
_ANCHOR_SCALE = flags.DEFINE_float('anchor_scale', 4.0, 'Anchor side in strides (assignment).')
_MIN_CROP = flags.DEFINE_float('min_crop', 0.3, 'Smallest random crop, in short sides.')
_MAX_CROP = flags.DEFINE_float('max_crop', 2.0, 'Largest random crop (>1 zooms out).')
_SHUFFLE_BUFFER = flags.DEFINE_integer('shuffle_buffer', 1000, 'Records in the shuffle buffer.')
_ROBUST_AUGMENT = flags.DEFINE_bool(
    'robust_augment', False, 'Copy-paste of faces onto face-free photos, small rotations, '
    'blur, noise, faded contrast, JPEG artefacts and crops around large faces '
    '(data/robust.py), for photos unlike the training set.')
_TRAIN_MIN_FACE = flags.DEFINE_float(
    'train_min_face', 4.0, 'Faces under this many pixels in a training crop are ignored '
    '(neither face nor background).')
_VAL_MIN_FACE = flags.DEFINE_float('val_min_face', 4.0,
                                   'Faces under this many pixels (at the validation size) are ignored '
                                   'by the validation AP.')
_VAL_IMAGE_SIZE = flags.DEFINE_integer('val_image_size', 0,
                                       'Validation images are letterboxed to this side '
                                       '(multiple of 32); 0 = --image_size.')
_VAL_MAX_SIDE = flags.DEFINE_integer(
    'val_max_side', 0, 'If > 0, the validation AP that picks the best checkpoint is measured '
    'on each photo at its own size (downscaled only past this long side, padded to a '
    'multiple of 32), as export.py --max_side and detect.py run it; --val_min_face then '
    'counts the photo\'s pixels, and the letterboxed AP is reported as ap50_letterbox. '
    '0: AP on the letterboxes.')
_VAL_VARIANTS = flags.DEFINE_list(
    'val_variants', [], 'Degraded copies of the validation photos also scored '
    '(evaluation/variants.py: grey, blur, jpeg, large, low_contrast), each reported as '
    'ap50/<variant>; the best checkpoint is then chosen by ap50_mean, the mean of ap50 and '
    'theirs. Empty: ap50 alone.')
_EMA_DECAY = flags.DEFINE_float('ema_decay', 0.999,
                                'Exponential moving average of the weights, used for '
                                'validation and export; 0 turns it off.')
_INIT_FROM = flags.DEFINE_string(
    'init_from', None, 'model_dir of an earlier train.py run whose best weights this run '
    'starts from (fresh optimizer and step), or an export.py directory such as '
    'models/facedet_default (fine-tuning the shipped model; its folded batch norms are '
    'unfolded with statistics of the first training crops): the same network, or one these '
    'flags widen (more channels, same layers; it starts computing what the earlier one '
    'did). Network flags not given take the source\'s values. Ignored when --model_dir has '
    'checkpoints to resume.')
_BAD_RECORDS = flags.DEFINE_enum(
    'bad_records', 'skip', ['skip', 'stop'], 'A damaged training shard (a corrupt or '
    'truncated record): skip its unreadable part and go on, counting the records left out '
    '(printed, and faults/lost_records in TensorBoard), or stop with a checkpoint saved. '
    'Either way the shard and the byte offset are named.')
_MAX_BAD_STEPS = flags.DEFINE_integer(
    'max_bad_steps', 20, 'Stop (exit status 1, the last good checkpoint kept) after this many '
    'steps in a row whose loss or gradients are not finite (their updates are skipped) or '
    'whose loss exploded (over 100x the median of the good steps before).', lower_bound=1)
_MIN_FREE_GB = flags.DEFINE_float(
    'min_free_gb', 1.0, 'Refuse to start when --model_dir has less free space (GB).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')

for _name in ('train_records', 'model_dir'):
    flags.mark_flag_as_required(_name)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from common import output_dirs
    from common import preemption
    try:
        output_dirs.check_output_dir(_MODEL_DIR.value, _MIN_FREE_GB.value)
        if _is_chief():  # the other workers of a cluster write below the chief's model_dir
            output_dirs.claim(_MODEL_DIR.value)
        _train()
    except (output_dirs.OutputDirError, ValueError, FileNotFoundError) as e:
        sys.exit(f'train.py: error: {e}')
    except KeyboardInterrupt:
        sys.exit(130)  # the loop saved a checkpoint and said how to resume
    except preemption.Terminated:
        sys.exit(preemption.EXIT_STATUS)  # SIGTERM: the loop saved and said so, as for Ctrl-C


def _is_chief():
    """Whether this process is its cluster's chief (TF_CONFIG), by the rule training/loop.py
    goes by (training.devices.is_chief)."""
    import json

    from training import devices
    try:
        tf_config = json.loads(os.environ.get('TF_CONFIG') or '{}')
    except ValueError:
        return True  # the strategy reports the bad TF_CONFIG
    task = tf_config.get('task') or {}
    if _STRATEGY.value != 'multi_worker':
        return True
    return devices.is_chief(task.get('type'), task.get('index'), tf_config.get('cluster') or {})


# The flags that shape the network (DetectorConfig's fields but the crop size).
NETWORK_FLAGS = ('width', 'neck_channels', 'stem_channels', 'stage_channels', 'stage_units',
                 'strides', 'anchor_scale', 'head_units', 'quality_head')


def _take_network_flags(source):
    """Network flags given neither on the command line nor in a flagfile take the
    --init_from source's values, so fine-tuning needs no copy of its network flags."""
    taken = []
    for name in NETWORK_FLAGS:
        if flags.FLAGS[name].present:
            continue
        value = getattr(source, name)
        if isinstance(value, (list, tuple)):
            value = [str(v) for v in value]
        setattr(flags.FLAGS, name, value)
        taken.append(f'--{name}={",".join(value) if isinstance(value, list) else value}')
    if taken:
        print('network flags from --init_from: ' + ' '.join(taken), flush=True)


def _train():
    import tensorflow as tf  # imported here so --help is fast

    from model.detector import DetectorConfig
    from training import checkpoints, devices, loop

    size = _IMAGE_SIZE.value
    if size % 32:
        raise ValueError(f'--image_size must be a multiple of 32, got {size}')
    if _VAL_IMAGE_SIZE.value % 32:
        raise ValueError(f'--val_image_size must be a multiple of 32, got {_VAL_IMAGE_SIZE.value}')
    if _VAL_MAX_SIDE.value < 0:
        raise ValueError(f'--val_max_side must be at least 0 (0: letterboxed AP), got '
                         f'{_VAL_MAX_SIDE.value}')
    from evaluation import variants
    try:
        val_variants = variants.parse_names(_VAL_VARIANTS.value)
    except ValueError as e:
        raise ValueError(f'--val_variants: {e}') from None
    if not 0.0 <= _EMA_DECAY.value < 1.0:
        raise ValueError(f'--ema_decay must be in [0, 1), got {_EMA_DECAY.value}')
    if not 0.0 < _MIN_CROP.value <= _MAX_CROP.value:
        raise ValueError(f'--min_crop and --max_crop need 0 < min_crop <= max_crop, got '
                         f'{_MIN_CROP.value} and {_MAX_CROP.value}')
    for flag in (_TRAIN_MIN_FACE, _VAL_MIN_FACE):
        if flag.value < 0:
            raise ValueError(f'--{flag.name} must be at least 0 (0 ignores no face), '
                             f'got {flag.value}')
    if _INIT_FROM.value:
        _take_network_flags(checkpoints.init_source_config(_INIT_FROM.value))
    try:
        stage_channels = tuple(int(v) for v in _STAGE_CHANNELS.value)
        stage_units = tuple(int(v) for v in _STAGE_UNITS.value)
        strides = tuple(int(v) for v in _STRIDES.value)
    except ValueError as e:
        raise ValueError(f'--stage_channels, --stage_units and --strides take integers: {e}') from None
    # Checks the stages (DetectorConfig.__post_init__) before anything is written.
    config = DetectorConfig(width=_WIDTH.value, neck_channels=_NECK_CHANNELS.value,
                            stem_channels=_STEM_CHANNELS.value, stage_channels=stage_channels,
                            stage_units=stage_units, strides=strides, anchor_scale=_ANCHOR_SCALE.value,
                            head_units=_HEAD_UNITS.value, quality_head=_QUALITY_HEAD.value,
                            image_size=size)
    if _INIT_FROM.value:
        checkpoints.check_init_source(_INIT_FROM.value, config)
    precision, why = checkpoints.resume_precision(
        _MODEL_DIR.value, _PRECISION.value, *devices.resolve_precision(_PRECISION.value))
    print(f'precision {precision} ({why})', flush=True)
    flags.FLAGS.precision = precision  # flags.txt records what ran
    os.makedirs(_MODEL_DIR.value, exist_ok=True)
    checkpoints.write_text(os.path.join(_MODEL_DIR.value, 'flags.txt'),
                           flags.FLAGS.flags_into_string())

    config_path = os.path.join(_MODEL_DIR.value, checkpoints.CONFIG_FILE)
    if os.path.exists(config_path):
        saved = checkpoints.load_config(_MODEL_DIR.value)
        if saved != config:
            raise ValueError(f'{config_path} describes another network ({saved}) than these '
                             f'flags ({config}); use a new --model_dir or the original flags')
    checkpoints.write_text(config_path, config.to_json())

    tf.random.set_seed(_SEED.value)
    loop.train(loop.TrainSettings(
        train_records=_TRAIN_RECORDS.value, val_records=_VAL_RECORDS.value,
        model_dir=_MODEL_DIR.value, config=config, batch_size=_BATCH_SIZE.value,
        train_steps=_TRAIN_STEPS.value, steps_per_epoch=_STEPS_PER_EPOCH.value,
        checkpoint_every=_CHECKPOINT_EVERY.value, log_every=_LOG_EVERY.value,
        learning_rate=_LEARNING_RATE.value, warmup_steps=_WARMUP_STEPS.value,
        weight_decay=_WEIGHT_DECAY.value, precision=_PRECISION.value,
        strategy=_STRATEGY.value, cpu_devices=_CPU_DEVICES.value,
        jit_compile=_JIT_COMPILE.value, crop_range=(_MIN_CROP.value, _MAX_CROP.value),
        shuffle_buffer=_SHUFFLE_BUFFER.value, robust_augment=_ROBUST_AUGMENT.value,
        train_min_face=_TRAIN_MIN_FACE.value,
        val_min_face=_VAL_MIN_FACE.value,
        val_image_size=_VAL_IMAGE_SIZE.value, val_max_side=_VAL_MAX_SIDE.value,
        val_variants=val_variants,
        ema_decay=_EMA_DECAY.value, data_service=_DATA_SERVICE.value,
        data_service_timeout=_DATA_SERVICE_TIMEOUT.value,
        bad_records=_BAD_RECORDS.value, max_bad_steps=_MAX_BAD_STEPS.value,
        init_from=_INIT_FROM.value, seed=_SEED.value))


if __name__ == '__main__':
    app.run(main)
