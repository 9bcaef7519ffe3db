"""Reading train.py's checkpoints: which one to take, which objects it holds, and the
network it restores into; and reading an export's weights back into a trainable network.
export.py and the training loop (resume, --init_from) share these.
"""

import json
import os

import tensorflow as tf

from model.detector import (DetectorConfig, build_detector, is_widening, unfold_batch_norms,
                            widen_weights)
from model.runtime import MODEL_INFO, read_info

CONFIG_FILE = 'model_config.json'


def write_text(path, text):
    """Writes text to path through a temporary file renamed over it, so that no reader sees
    it half-written: the workers of a multi-worker run write the same files of their shared
    model_dir at the same moment, and one read another's truncated model_config.json."""
    temporary = f'{path}.{os.getpid()}.tmp'
    with open(temporary, 'w') as f:
        f.write(text)
    os.replace(temporary, path)


def recorded_flag(model_dir, name):
    """The value of --name that model_dir/flags.txt (train.py writes it) records, or None."""
    try:
        with open(os.path.join(model_dir, 'flags.txt')) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = [line.split('=', 1)[1] for line in lines if line.startswith(f'--{name}=')]
    return found[-1] if found else None


def recorded_precision(model_dir):
    """The --precision that model_dir/flags.txt records, when model_dir has checkpoints to
    resume (train.py writes the precision it resolved there); else None."""
    if not tf.train.get_checkpoint_state(os.path.join(model_dir, 'checkpoints')):
        return None
    return recorded_flag(model_dir, 'precision')


def init_export(model_dir):
    """The export a training run started from (--init_from=<export dir>), or None."""
    source = recorded_flag(model_dir, 'init_from')
    return source if source and is_export(source) else None


def resume_precision(model_dir, asked, precision, why):
    """(precision, why) for a run on model_dir: a resume keeps the precision its run started
    with when --precision=auto (a float16 run begun on a T4 resumes in float16 on an A100),
    so that its checkpoints, which hold the float16 loss scale or not, can be read.

    Raises ValueError when an explicit --precision cannot read them (float16 against not).
    """
    recorded = recorded_precision(model_dir)
    if recorded is None or recorded == precision:
        return precision, why
    if asked == 'auto':
        return recorded, f'as {model_dir} started; auto would pick {precision} here: {why}'
    if 'mixed_float16' in (recorded, precision):
        raise ValueError(
            f'{model_dir} started with --precision={recorded}, whose checkpoints '
            f'{"hold" if recorded == "mixed_float16" else "lack"} the float16 loss scale; '
            f'--precision={precision} cannot resume them: rerun with --precision={recorded} '
            'or auto, or use a new --model_dir')
    return precision, f'as given; {model_dir} started with {recorded} (float32 weights either way)'


def saved_objects(path):
    """Top-level names in a checkpoint ('model', 'ema', 'optimizer', 'step', ...)."""
    return {name.split('/')[0] for name, _ in tf.train.list_variables(path)}


def find_checkpoint(model_dir, which='best'):
    """Resolves 'best' (falls back to latest), 'latest' or a path to a checkpoint prefix."""
    if which not in ('best', 'latest'):
        if not tf.io.gfile.exists(which + '.index'):
            raise FileNotFoundError(f'no checkpoint at {which}')
        return which
    path = None
    if which == 'best':
        path = tf.train.latest_checkpoint(os.path.join(model_dir, 'best'))
    path = path or tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
    if not path:
        raise FileNotFoundError(f'no checkpoint in {model_dir}: train first with train.py '
                                f'--model_dir={model_dir}')
    return path


def non_finite_weight(model):
    """The path of a floating-point weight of model holding NaN or inf, or None."""
    for w in model.weights:
        if tf.as_dtype(w.dtype).is_floating and not bool(tf.reduce_all(tf.math.is_finite(w))):
            return w.path
    return None


def load_config(model_dir):
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f'{config_path} is missing: is {model_dir} a train.py '
                                '--model_dir?')
    with open(config_path) as f:
        return DetectorConfig.from_json(f.read())


def load_trained(model_dir, which='best'):
    """Rebuilds the network from model_config.json and restores its weights.

    Returns (model, config, checkpoint path).
    """
    config = load_config(model_dir)
    model = build_detector(config)
    path = find_checkpoint(model_dir, which)
    # Runs trained with --ema_decay > 0 keep averaged weights under 'ema': those are the ones
    # validation scored, so they are the ones to ship.
    key = 'ema' if 'ema' in saved_objects(path) else 'model'
    tf.train.Checkpoint(**{key: model}).restore(path).expect_partial() \
        .assert_existing_objects_matched()
    return model, config, path


def is_export(path):
    """Whether path is an export.py directory (a SavedModel with facedet.json)."""
    return (os.path.exists(os.path.join(path, MODEL_INFO)) and
            os.path.exists(os.path.join(path, 'saved_model.pb')))


def export_config(export_dir):
    info = read_info(export_dir)
    if 'config' not in info:
        raise ValueError(f'{export_dir}/{MODEL_INFO} has no network config: re-export it with '
                         'this version of export.py')
    return DetectorConfig.from_json(json.dumps(info['config']))


def load_export(export_dir):
    """The folded network of an export (batch norms inside the convolutions, as export.py
    writes it) with its weights, read from the SavedModel's variables by layer name.

    Returns (folded model, config).
    """
    config = export_config(export_dir)
    folded = build_detector(config, folded=True)
    loaded = tf.saved_model.load(export_dir)
    values = {v.name.split(':')[0]: v for v in loaded.signatures['serving_default'].variables}
    wanted = {w.path for w in folded.weights}
    if set(values) != wanted:
        missing, extra = sorted(wanted - set(values)), sorted(set(values) - wanted)
        raise ValueError(f'{export_dir} does not hold the network its {MODEL_INFO} describes '
                         f'(missing {missing[:5]}, unexpected {extra[:5]})')
    for w in folded.weights:
        if tuple(values[w.path].shape) != tuple(w.shape):
            raise ValueError(f'{export_dir}: {w.path} is {values[w.path].shape}, its '
                             f'{MODEL_INFO} config builds {w.shape}')
        w.assign(values[w.path].numpy())
    return folded, config


def init_source_config(model_dir):
    """The network config of an --init_from source: a train.py run or an export."""
    if is_export(model_dir):
        return export_config(model_dir)
    if os.path.exists(os.path.join(model_dir, CONFIG_FILE)):
        return load_config(model_dir)
    raise FileNotFoundError(f'--init_from={model_dir} is neither a train.py --model_dir '
                            f'(no {CONFIG_FILE}) nor an export.py directory (no '
                            f'{MODEL_INFO} beside saved_model.pb)')


def check_init_source(model_dir, config):
    """Raises ValueError unless model_dir's run (or export) built config's network or a
    narrower one (same layers; see detector.is_widening). Returns the source's config."""
    source_config = init_source_config(model_dir)
    if not is_widening(source_config, config):
        raise ValueError(f'--init_from={model_dir} holds another network ({source_config}) '
                         f'than this run ({config}); give this run its network flags (it '
                         'may add channels, not layers)')
    return source_config


def init_weights(model_dir, config, model, ema_model=None, image_batches=None):
    """Copies the weights of an earlier run (its best checkpoint, the averaged weights when
    it kept them) or of an export (export.py's directory, such as models/facedet_default)
    into a new run's network, for fine-tuning or a second schedule; the optimizer and step
    of the new run start from zero. Returns the checkpoint or export path.

    The earlier run must have built the same network (its crop size may differ) or a
    narrower one, which is widened so that the new run starts from the same outputs
    (detector.widen_weights). An export's batch norms were folded into its convolutions:
    they are unfolded (detector.unfold_batch_norms), with the statistics they read on
    image_batches (training batches), so the network starts from the export's outputs.
    """
    check_init_source(model_dir, config)
    if is_export(model_dir):
        folded, source_config = load_export(model_dir)
        source = unfold_batch_norms(folded, build_detector(source_config), image_batches or ())
        path = model_dir
    else:
        source, _, path = load_trained(model_dir)
    widen_weights(source, model)
    if ema_model is not None:
        ema_model.set_weights(model.get_weights())
    return path


def landmarks_trained(checkpoint_path):
    """Whether the checkpoint's training run saw landmark labels (train.py counts them).

    Checkpoints from before that count existed are taken as trained.
    """
    for name, _ in tf.train.list_variables(checkpoint_path):
        if name.startswith('landmark_points/'):
            return float(tf.train.load_variable(checkpoint_path, name)) > 0
    return True
