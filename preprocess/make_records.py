r"""Turns face datasets into TFRecord shards plus a manifest.

Usage (from the repository root):

  # the embedded synthetic dataset (no download): 2000 train + 200 val images into
  # out/records/synthetic; no flags at all runs the same (configs/synthetic.flags)
  python preprocess/make_records.py --flagfile=configs/synthetic.flags

  # the same on Apache Beam (DirectRunner here; Dataflow, Flink or Spark by options, BUILD.md)
  python preprocess/make_records.py --flagfile=configs/synthetic.flags --runner=beam \
      --beam_pipeline_options='--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing'

  # WIDER FACE train/val with 10% face-free images (generated + crops of the photos)
  python preprocess/make_records.py --source=wider --wider_dir=/data/wider_face \
      --output_dir=out/records/wider --negative_fraction=0.1 --negatives=generated,crops

  # several sources at once; a failing item stops the run (exit 1) instead of being counted
  python preprocess/make_records.py --source=wider,jsonl --wider_dir=... \
      --jsonl=/data/extra/labels.jsonl --output_dir=out/records/mix --strict

  # teacher landmarks and ignore regions from a YuNet model (BUILD.md, preprocess/landmark_teacher.py)
  python preprocess/make_records.py --flagfile=configs/shared_records.flags \
      --landmark_teacher=../shared/peers/yunet_n_640_640.onnx --output_dir=out/records/shared_lm

Writes ``{output_dir}/{split}-{i:05d}-of-{n:05d}.tfrecord`` per split (see
preprocess/shards.py: round-robin, resumable: rerun the same command after a kill and only
the missing shards are written) and ``{output_dir}/manifest.json`` (counts per split and
source, skipped items and dropped boxes by reason, the first problems, shard names, flags,
time taken).

Before any work the output folder is checked (writable, ``--min_free_gb`` free) and
claimed with ``{output_dir}/.lock`` (common/output_dirs.py): a second run on the same folder
is refused, naming the holder. ``preprocess/verify_records.py`` checks the result.

Splits: every item carries its split from its reader and is written only to that split's
shards; an item id found in train and in an evaluation split stops the run. Negatives
(``--negative_fraction``) are added to train and val, each split from its own positives.
"""

import os
import shlex
import sys

# Runnable as a script from the repo root (there is no setup.py): make `data`, `preprocess` importable.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from common import quiet  # noqa: E402
quiet.import_tensorflow()  # first: without its start-up notices (common/quiet.py)
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from common import output_dirs  # noqa: E402
from common import preemption  # noqa: E402
from preprocess import record_sources  # noqa: E402
from preprocess import shards  # noqa: E402

_SOURCE = flags.DEFINE_list(
    'source', ['synthetic'], f'Comma-separated sources: {", ".join(record_sources.SOURCE_NAMES)}.')
_WIDER_DIR = flags.DEFINE_string('wider_dir', None, 'WIDER FACE root (WIDER_train/, wider_face_split/).')
_WIDER_HOLDOUT = flags.DEFINE_float(
    'wider_holdout', 0.0, 'WIDER: fraction of train images moved to val by a hash of their path '
    '(for copies without the official val set).')
_CELEBA_DIR = flags.DEFINE_string(
    'celeba_dir', None, 'CelebA root, either layout: official (Anno/, Eval/, img_celeba/ or '
    'img_align_celeba/) or Kaggle (*.csv, img_align_celeba/img_align_celeba/).')
_CELEBA_IGNORE_UNLABELLED = flags.DEFINE_boolean(
    'celeba_ignore_unlabelled', False, 'CelebA: mark unlabelled faces as ignore regions.')
_FDDB_DIR = flags.DEFINE_string('fddb_dir', None, 'FDDB root (originalPics/, FDDB-folds/).')
_JSONL = flags.DEFINE_string('jsonl', None, 'Path of a labels.jsonl manifest (source "jsonl").')
_JSONL_BOX_ADJUST = flags.DEFINE_list(
    'jsonl_box_adjust', None, 'dx,dy,sw,sh: move and scale every box of --jsonl into another '
    'convention, in units of its width and height (x += dx*w, y += dy*h, w *= sw, h *= sh).')
_TFDS_DATA_DIR = flags.DEFINE_string('tfds_data_dir', None, 'TFDS data dir holding celeb_a (source "celeba_tfds").')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Folder for the shards and manifest.json.')
_SPLITS = flags.DEFINE_list('splits', ['train', 'val'], 'Splits to write (train, val, test).')
_TRAIN_SHARDS = flags.DEFINE_integer('train_shards', 4, 'Shards for the train split.', lower_bound=1)
_VAL_SHARDS = flags.DEFINE_integer('val_shards', 1, 'Shards for the val split.', lower_bound=1)
_TEST_SHARDS = flags.DEFINE_integer('test_shards', 1, 'Shards for the test split.', lower_bound=1)
_NUM_WORKERS = flags.DEFINE_integer('num_workers', None, 'Encoding processes (default: CPU count).')
_MAX_SIDE = flags.DEFINE_integer('max_side', 1024, 'Downscale images longer than this (0: never).')
_JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 90, 'JPEG quality of the stored images.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the synthetic images and of the negatives.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 2200, 'Synthetic: images over all splits.')
_VAL_FRACTION = flags.DEFINE_float(
    'val_fraction', 0.1, 'Synthetic: fraction of images in val; folder negatives: hash slice in val.')
_SYNTHETIC_MIN_SIDE = flags.DEFINE_integer('synthetic_min_side', 160, 'Synthetic/generated image side, min.')
_SYNTHETIC_MAX_SIDE = flags.DEFINE_integer('synthetic_max_side', 320, 'Synthetic/generated image side, max.')
_SYNTHETIC_NEGATIVE_FRACTION = flags.DEFINE_float(
    'synthetic_negative_fraction', 0.1, 'Synthetic: fraction of its images drawn without a face.')
_NEGATIVE_FRACTION = flags.DEFINE_float(
    'negative_fraction', 0.0, 'Fraction of extra face-free images in each train/val split\'s output.')
_NEGATIVES = flags.DEFINE_list('negatives', ['generated'], 'Kinds of negatives: generated, crops, folder.')
_NEGATIVES_DIR = flags.DEFINE_string('negatives_dir', None, 'Folder of face-free photos (kind "folder").')
_STRICT = flags.DEFINE_boolean('strict', False, 'Any skipped item is an error (exit 1, naming the item).')
_MIN_FREE_GB = flags.DEFINE_float(
    'min_free_gb', 1.0, 'Refuse to start (exit 2) when --output_dir has less free space (GB).')
_PROGRESS = flags.DEFINE_boolean('progress', True, 'Print a progress line every ~2 s.')
_RUNNER = flags.DEFINE_enum(
    'runner', 'local', record_sources.RUNNERS, 'local: --num_workers processes on this machine; '
    'beam: an Apache Beam pipeline (preprocess/beam_writer.py), same shards and manifest.')
_BEAM_PIPELINE_OPTIONS = flags.DEFINE_string(
    'beam_pipeline_options', '', '--runner=beam: Beam pipeline arguments, e.g. '
    '"--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing" '
    'or "--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp".')
_LANDMARK_TEACHER = flags.DEFINE_string(
    'landmark_teacher', None, 'A YuNet .onnx face detector (needs opencv-python-headless): its '
    'landmarks go to matched labelled faces, its confident unlabelled faces become ignore '
    'regions (preprocess/landmark_teacher.py). Negatives are not touched.')
_LANDMARK_TEACHER_IOU = flags.DEFINE_float(
    'landmark_teacher_iou', 0.5, '--landmark_teacher: IoU a detection needs with a labelled '
    'face to give it landmarks (one-to-one, highest IoU first).')
_LANDMARK_TEACHER_IGNORE_SCORE = flags.DEFINE_float(
    'landmark_teacher_ignore_score', 0.7, '--landmark_teacher: a detection this confident that '
    'overlaps no labelled face (IoU < 0.3) is added as an ignore region.')

_SHOWN_PROBLEMS = 10


def _config() -> record_sources.Config:
    """Reads the flags (the only place that does) into a Config."""
    return record_sources.Config(
        sources=tuple(_SOURCE.value), output_dir=_OUTPUT_DIR.value, splits=tuple(_SPLITS.value),
        num_shards={'train': _TRAIN_SHARDS.value, 'val': _VAL_SHARDS.value, 'test': _TEST_SHARDS.value},
        wider_dir=_WIDER_DIR.value, wider_holdout=_WIDER_HOLDOUT.value, celeba_dir=_CELEBA_DIR.value,
        celeba_ignore_unlabelled=_CELEBA_IGNORE_UNLABELLED.value, fddb_dir=_FDDB_DIR.value,
        jsonl=_JSONL.value, jsonl_box_adjust=_JSONL_BOX_ADJUST.value, tfds_data_dir=_TFDS_DATA_DIR.value,
        num_workers=_NUM_WORKERS.value or os.cpu_count() or 1, max_side=_MAX_SIDE.value,
        jpeg_quality=_JPEG_QUALITY.value, seed=_SEED.value, num_images=_NUM_IMAGES.value,
        val_fraction=_VAL_FRACTION.value, synthetic_min_side=_SYNTHETIC_MIN_SIDE.value,
        synthetic_max_side=_SYNTHETIC_MAX_SIDE.value,
        synthetic_negative_fraction=_SYNTHETIC_NEGATIVE_FRACTION.value,
        negative_fraction=_NEGATIVE_FRACTION.value, negatives=tuple(_NEGATIVES.value),
        negatives_dir=_NEGATIVES_DIR.value, strict=_STRICT.value, progress=_PROGRESS.value,
        runner=_RUNNER.value, beam_options=tuple(shlex.split(_BEAM_PIPELINE_OPTIONS.value)),
        landmark_teacher=_LANDMARK_TEACHER.value, landmark_teacher_iou=_LANDMARK_TEACHER_IOU.value,
        landmark_teacher_ignore_score=_LANDMARK_TEACHER_IGNORE_SCORE.value)


def _flag_values() -> dict:
    """The values of this program's flags, for the manifest."""
    holders = [h for h in globals().values() if isinstance(h, flags.FlagHolder)]
    return {h.name: h.value for h in sorted(holders, key=lambda h: h.name)} | {'argv': sys.argv}


def main(argv):
    if len(argv) > 1:
        _fail(f'unexpected arguments {argv[1:]}; every option is a --flag')
    config = _config()
    if config.output_dir:
        try:  # before any work: a full disk or a second writer would spoil the shards
            output_dirs.check_output_dir(config.output_dir, _MIN_FREE_GB.value)
            output_dirs.claim(config.output_dir)
        except output_dirs.OutputDirError as e:
            _fail(str(e))
    preemption.raise_on_sigterm()  # the cleanup below and the lock's release run, as for Ctrl-C
    try:
        manifest = record_sources.make_records(config, flag_values=_flag_values())
    except preemption.Terminated:
        print('terminated (SIGTERM): finished shards are kept; rerun the same command to write '
              'the rest', file=sys.stderr)
        sys.exit(preemption.EXIT_STATUS)
    except record_sources.ConfigError as e:
        _fail(str(e))
    except shards.StrictError as e:
        print(f'error: --strict: stopped at a skipped item: {e}', file=sys.stderr)
        sys.exit(1)
    problems = manifest['problems']
    if problems:
        print(f'{sum(manifest["skipped"].values())} items skipped, '
              f'{sum(manifest["dropped_boxes"].values())} boxes dropped; first problems:')
        for line in problems[:_SHOWN_PROBLEMS]:
            print(f'  {line}')
    for split, info in manifest['splits'].items():
        reused = f' ({len(info["reused_shards"])} kept from an earlier run)' if info['reused_shards'] else ''
        print(f'{split}: {info["images"]} images, {info["faces"]} faces '
              f'({info["ignored_faces"]} ignored) in {len(info["shards"])} shards{reused}: '
              f'{os.path.join(config.output_dir, split)}-*-of-{len(info["shards"]):05d}.tfrecord')
    teacher = manifest['landmark_teacher']
    if teacher:
        print(f'landmark teacher {teacher["model"]}: {teacher["landmarks_added"]} faces got landmarks, '
              f'{teacher["ignore_added"]} ignore regions added in {teacher["images"]} images')
    print(f'manifest: {os.path.join(config.output_dir, "manifest.json")} '
          f'({manifest["seconds"]:.1f} s)')


def _fail(message: str):
    """One clear error line and exit code 2, no traceback."""
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


_DEFAULT_FLAGFILE = os.path.join(_REPO_ROOT, 'configs', 'synthetic.flags')

if __name__ == '__main__':
    if len(sys.argv) == 1:
        print(f'no flags given: writing the embedded synthetic set ({_DEFAULT_FLAGFILE}) '
              'into out/records/synthetic')
        sys.argv.append(f'--flagfile={_DEFAULT_FLAGFILE}')
    app.run(main)
