"""What make_records.py does, as a library: sources registry, splits, negatives, manifest.

``make_records(config)`` takes a ``Config`` (make_records.py fills it from flags; tests
build one directly), describes each requested split's items once (``_split_jobs``) and
hands them to a runner: ``shards.write_shards`` (local processes, ``runner='local'``) or
``beam_writer.write_splits`` (Apache Beam, ``runner='beam'``). Both write the same shards.

Sources are looked up in ``_REGISTRY`` and their modules imported only when used, so a
missing optional dependency (or a reader not written yet) only matters to whoever asks for
that source. Every reader yields RawItem (with ``.split`` set) or SkipItem objects.

Item order, which resume relies on: sources in the order given, each reader's own order,
then the negatives (generated, crops, folder, in the order given), all deterministic.
"""

import dataclasses
import importlib
import itertools
import json
import os
import time
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

from preprocess import files
from preprocess import jsonl_source
from preprocess import negatives as negatives_lib
from preprocess import shards
from preprocess import synthetic
from preprocess.items import LayoutError, SkipItem

EVAL_SPLITS = ('val', 'test')
RUNNERS = ('local', 'beam')
NEGATIVE_KINDS = ('generated', 'crops', 'folder')
_NEGATIVE_SPLITS = ('train', 'val')


class ConfigError(Exception):
    """Bad input (unknown source, missing folder, nothing to write): one line, names the fix."""


@dataclasses.dataclass
class Config:
    """Everything make_records needs; field meanings follow make_records.py's flags."""
    output_dir: str
    sources: Tuple[str, ...] = ('synthetic',)
    splits: Tuple[str, ...] = ('train', 'val')
    num_shards: Dict[str, int] = dataclasses.field(default_factory=lambda: {'train': 4, 'val': 1, 'test': 1})
    wider_dir: Optional[str] = None
    wider_holdout: float = 0.0
    celeba_dir: Optional[str] = None
    celeba_ignore_unlabelled: bool = False
    fddb_dir: Optional[str] = None
    jsonl: Optional[str] = None
    jsonl_box_adjust: Optional[Tuple[float, ...]] = None  # (dx, dy, sw, sh), see jsonl_source
    tfds_data_dir: Optional[str] = None
    num_workers: int = 1
    max_side: int = 1024
    jpeg_quality: int = 90
    seed: int = 0
    num_images: int = 2200
    val_fraction: float = 0.1
    synthetic_min_side: int = 160
    synthetic_max_side: int = 320
    synthetic_negative_fraction: float = 0.1
    negative_fraction: float = 0.0
    negatives: Tuple[str, ...] = ('generated',)
    negatives_dir: Optional[str] = None
    strict: bool = False
    progress: bool = True
    runner: str = 'local'
    beam_options: Tuple[str, ...] = ()  # Beam pipeline arguments, e.g. ('--runner=DirectRunner',)
    landmark_teacher: Optional[str] = None  # YuNet .onnx path (preprocess/landmark_teacher.py)
    landmark_teacher_iou: float = 0.5
    landmark_teacher_ignore_score: float = 0.7


@dataclasses.dataclass(frozen=True)
class _Source:
    module: str                   # under preprocess/, imported on first use
    path_field: Optional[str]     # the Config field (and flag) holding its input path
    expects: str                  # what that path should be, for error messages
    read: Callable                # (module, config, splits) -> RawItem | SkipItem iterable; may
                                  # hold items of other splits too (callers filter by split)


def _synthetic(_, config: Config, splits) -> Iterator:
    """Lazy synthetic specs: drawn in the writer's workers."""
    num_val = int(round(config.num_images * config.val_fraction))
    counts = {'train': config.num_images - num_val, 'val': num_val}
    for split in splits:
        yield from synthetic.generate_specs(
            counts.get(split, 0), config.seed, split, config.synthetic_min_side,
            config.synthetic_max_side, config.synthetic_negative_fraction)


def _wider(module, config: Config, splits) -> Iterator:
    """WIDER FACE in its official splits; ``wider_holdout`` carves a val split out of train.

    For copies without the official val set (like a train-only subset): a train image goes
    to val when preprocess.splits.split_by_hash of its source id says so, a fixed rule that
    never drifts between runs. With the official val present, use the official split.
    """
    from preprocess.splits import split_by_hash
    official = tuple(x for x in config.splits if x in ('train', 'val'))
    # All requested splits every time (the caller filters): the reader fails when none of
    # the splits it is given has a gt file, e.g. 'val' alone on a train-only copy.
    for item in module.read_items(config.wider_dir, splits=official or ('train',)):
        if config.wider_holdout > 0 and not isinstance(item, SkipItem) and item.split == 'train':
            item.split = split_by_hash(item.source_id, val_fraction=config.wider_holdout)
        yield item


_REGISTRY = {
    'synthetic': _Source('synthetic', None, '', _synthetic),
    'wider': _Source('widerface', 'wider_dir', 'the folder holding WIDER_train/ and wider_face_split/',
                     _wider),
    'celeba': _Source('celeba', 'celeba_dir', 'the official CelebA folder (img_celeba/, Anno/, Eval/)',
                      lambda m, c, s: m.read_items(c.celeba_dir, aligned=False,
                                                   ignore_unlabelled=c.celeba_ignore_unlabelled)),
    'celeba_aligned': _Source('celeba', 'celeba_dir', 'the CelebA folder, official (Anno/, Eval/) or Kaggle (.csv files)',
                              lambda m, c, s: m.read_items(c.celeba_dir, aligned=True,
                                                           ignore_unlabelled=c.celeba_ignore_unlabelled)),
    'celeba_tfds': _Source('tfds_celeba', 'tfds_data_dir', 'a TFDS data dir holding celeb_a',
                           lambda m, c, s: m.read_items(c.tfds_data_dir)),
    'fddb': _Source('fddb', 'fddb_dir', 'the FDDB folder (originalPics/, FDDB-folds/)',
                    lambda m, c, s: m.read_items(c.fddb_dir)),
    'jsonl': _Source('jsonl_source', 'jsonl', 'a labels.jsonl manifest file',
                     lambda m, c, s: m.read_items(c.jsonl, val_fraction=c.val_fraction,
                                                  box_adjust=c.jsonl_box_adjust)),
}
SOURCE_NAMES = tuple(_REGISTRY)
_FLAG_OF = {'wider_dir': '--wider_dir', 'celeba_dir': '--celeba_dir', 'fddb_dir': '--fddb_dir',
            'jsonl': '--jsonl', 'tfds_data_dir': '--tfds_data_dir'}


def _check(config: Config):
    """Raises ConfigError for anything that would fail later, before any work."""
    if not config.output_dir:
        raise ConfigError('--output_dir is required (e.g. --output_dir=out/records/synthetic)')
    if config.runner not in RUNNERS:
        raise ConfigError(f'--runner={config.runner}: choose from {", ".join(RUNNERS)}')
    if not config.sources:
        raise ConfigError(f'--source is empty; choose from {", ".join(SOURCE_NAMES)}')
    for name in config.sources:
        if name not in _REGISTRY:
            raise ConfigError(f'unknown source {name!r} in --source; choose from {", ".join(SOURCE_NAMES)}')
        spec = _REGISTRY[name]
        if spec.path_field:
            path, flag = getattr(config, spec.path_field), _FLAG_OF[spec.path_field]
            if not path:
                raise ConfigError(f'--source={name} needs {flag}=<{spec.expects}>')
            if not files.exists(path):
                raise ConfigError(f'{flag}={path} does not exist; point it at {spec.expects}')
    bad = [s for s in config.splits if s not in config.num_shards]
    if bad or not config.splits:
        raise ConfigError(f'--splits={",".join(config.splits)}: choose from {", ".join(config.num_shards)}')
    if not 0.0 <= config.negative_fraction < 1.0:
        raise ConfigError(f'--negative_fraction={config.negative_fraction} must be in [0, 1)')
    if not 0.0 <= config.val_fraction < 1.0:
        raise ConfigError(f'--val_fraction={config.val_fraction} must be in [0, 1)')
    if config.negative_fraction > 0:
        for kind in config.negatives:
            if kind not in NEGATIVE_KINDS:
                raise ConfigError(f'unknown kind {kind!r} in --negatives; choose from {", ".join(NEGATIVE_KINDS)}')
        if not config.negatives:
            raise ConfigError('--negative_fraction > 0 needs --negatives=generated,crops,folder (one or more)')
        if 'folder' in config.negatives:
            if not config.negatives_dir:
                raise ConfigError('--negatives=folder needs --negatives_dir=<a folder of face-free photos>')
            if not files.isdir(config.negatives_dir):
                raise ConfigError(f'--negatives_dir={config.negatives_dir} is not a folder')
    if config.jsonl_box_adjust is not None:
        try:
            jsonl_source.check_box_adjust(config.jsonl_box_adjust)
        except ValueError as e:
            raise ConfigError(f'--jsonl_box_adjust: {e}') from None
    if config.synthetic_min_side > config.synthetic_max_side or config.synthetic_min_side < 8:
        raise ConfigError('--synthetic_min_side must be >= 8 and <= --synthetic_max_side')
    if not 0.0 < config.landmark_teacher_iou <= 1.0:
        raise ConfigError(f'--landmark_teacher_iou={config.landmark_teacher_iou} must be in (0, 1]')
    if not 0.0 <= config.landmark_teacher_ignore_score <= 1.0:
        raise ConfigError(f'--landmark_teacher_ignore_score={config.landmark_teacher_ignore_score} '
                          'must be in [0, 1]')


def _teacher(config: Config, detect: Optional[Callable] = None):
    """The landmark teacher of ``config`` (None without --landmark_teacher); ``detect``
    replaces the YuNet model (tests). Raises ConfigError when it cannot run."""
    if not config.landmark_teacher:
        return None
    from preprocess import landmark_teacher
    if detect is None:
        try:
            detect = landmark_teacher.load_yunet(config.landmark_teacher)
        except landmark_teacher.TeacherError as e:
            raise ConfigError(str(e)) from None
    return landmark_teacher.Teacher(
        detect, name=os.path.basename(config.landmark_teacher), match_iou=config.landmark_teacher_iou,
        ignore_score=config.landmark_teacher_ignore_score)


def _module(name: str):
    spec = _REGISTRY[name]
    try:
        return importlib.import_module(f'preprocess.{spec.module}')
    except ModuleNotFoundError as e:
        if e.name != f'preprocess.{spec.module}':
            raise ConfigError(f'--source={name} needs the Python package {e.name!r}: pip install it') from None
        raise ConfigError(f'--source={name} needs preprocess/{spec.module}.py, which this checkout '
                          f'does not have yet; use another source') from None


def _positives(config: Config, splits) -> Iterator:
    """All sources' items (RawItem, lazy items and SkipItems), in a fixed order."""
    for name in config.sources:
        yield from _REGISTRY[name].read(_module(name), config, splits)


def _scan(config: Config) -> Tuple[Dict[str, int], int]:
    """One pass over the annotations: positives per split; fails on train/eval id overlap."""
    counts: Dict[str, int] = {}
    seen: Dict[int, str] = {}  # hash of source id -> split (ids only: small per item)
    reader_skips = 0
    for item in _positives(config, config.splits):
        if isinstance(item, SkipItem):
            reader_skips += 1
            continue
        counts[item.split] = counts.get(item.split, 0) + 1
        key = hash(item.source_id)
        other = seen.setdefault(key, item.split)
        if other != item.split and 'train' in (other, item.split):
            raise ConfigError(f'{item.source_id} is in both {other} and {item.split}: an evaluation '
                              'image must never be trained on; fix the reader\'s split rule')
    return counts, reader_skips


def _num_negatives(config: Config, split: str, num_positives: int) -> int:
    """Negatives to add so that they make ``negative_fraction`` of the split's output."""
    if config.negative_fraction <= 0 or split not in _NEGATIVE_SPLITS:
        return 0
    f = config.negative_fraction
    return int(round(num_positives * f / (1.0 - f)))


def _negatives(config: Config, split: str, num_positives: int) -> Iterable:
    """The face-free items of one split: ``negative_fraction`` of its output."""
    total = _num_negatives(config, split, num_positives)
    if not total:
        return ()
    kinds = list(config.negatives)
    quota = {k: total // len(kinds) + (i < total % len(kinds)) for i, k in enumerate(kinds)}
    streams = []
    for kind in kinds:
        q = quota[kind]
        if not q:
            continue
        if kind == 'generated':
            streams.append(negatives_lib.generated_negative_specs(
                q, config.seed, split, config.synthetic_min_side, config.synthetic_max_side))
        elif kind == 'crops':
            positives = (i for i in _positives(config, (split,))
                         if not isinstance(i, SkipItem) and i.split == split)
            per_image = q / max(num_positives, 1)
            streams.append(itertools.islice(
                negatives_lib.crops_away_from_faces(positives, per_image, config.seed), q))
        else:
            rule = negatives_lib.hash_split(config.val_fraction)
            # The folder's own bad lines are reported with train only (val reads them again).
            folder = (i for i in negatives_lib.folder_negatives(config.negatives_dir, rule)
                      if (split == 'train' if isinstance(i, SkipItem) else i.split == split))
            streams.append(itertools.islice(folder, q))
    return itertools.chain(*streams)


def make_records(config: Config, flag_values: Optional[dict] = None,
                 teacher_detect: Optional[Callable] = None) -> dict:
    """Writes the shards of every requested split and ``manifest.json``; returns the manifest.

    ``teacher_detect`` stands in for the --landmark_teacher model (a detector callable, see
    preprocess/landmark_teacher.py); tests inject a fake.

    Raises:
      ConfigError: bad input, before anything is written.
      shards.StrictError: in strict mode, at the first skipped item.
    """
    start = time.time()
    _check(config)
    for name in config.sources:
        _module(name)  # fail early if a reader is missing
    beam_writer = _beam_writer(config.beam_options) if config.runner == 'beam' else None
    teacher = _teacher(config, teacher_detect)
    settings = _check_same_settings(config)
    try:
        counts, _ = _scan(config)
    except (FileNotFoundError, LayoutError) as e:  # a layout the reader cannot read
        raise ConfigError(' '.join(str(e).split())) from None
    if not any(counts.get(s, 0) for s in config.splits):
        raise ConfigError(f'nothing to write: sources {",".join(config.sources)} have no item in '
                          f'splits {",".join(config.splits)} (check the paths and --splits)')
    _save_settings(config, settings)
    jobs = _split_jobs(config, counts)
    if beam_writer:
        split_stats = beam_writer.write_splits(
            jobs, config.output_dir, config.beam_options, max_side=config.max_side,
            jpeg_quality=config.jpeg_quality, strict=config.strict, progress=config.progress,
            teacher=teacher)
    else:
        split_stats = {split: shards.write_shards(
            make_items, config.output_dir, split, num_shards, num_workers=config.num_workers,
            max_side=config.max_side, jpeg_quality=config.jpeg_quality, strict=config.strict,
            progress=config.progress, expected_items=expected, teacher=teacher)
            for split, (make_items, num_shards, expected) in jobs.items()}
    manifest = _manifest(config, split_stats, time.time() - start, flag_values)
    files.write_json(os.path.join(config.output_dir, 'manifest.json'), manifest, indent=1, default=str)
    return manifest


def _beam_writer(options: Tuple[str, ...]):
    """preprocess.beam_writer, imported (with Apache Beam) only for ``runner='beam'``."""
    try:
        from preprocess import beam_writer
    except ModuleNotFoundError as e:
        if e.name != 'apache_beam':
            raise
        raise ConfigError('--runner=beam needs Apache Beam: pip install -r requirements-beam.txt') from None
    try:
        beam_writer.check_options(options)
    except ValueError as e:
        raise ConfigError(f'--beam_pipeline_options: {e}') from None
    return beam_writer


def _split_jobs(config: Config, counts: Dict[str, int]) -> Dict[str, Tuple[Callable, int, int]]:
    """The one description of the work both runners do: split -> (make_items, shards, items).

    ``make_items()`` yields the split's items in a fixed order on every call: its
    positives (each source's reader), then its negatives.
    """
    jobs = {}
    for n, split in enumerate(config.splits):
        def make_items(split=split, first=(n == 0)):
            # Reader SkipItems have no split: they are counted with the first split only.
            positives = (i for i in _positives(config, (split,))
                         if (first if isinstance(i, SkipItem) else i.split == split))
            return itertools.chain(positives, _negatives(config, split, counts.get(split, 0)))

        positives = counts.get(split, 0)
        jobs[split] = (make_items, config.num_shards[split],
                       positives + _num_negatives(config, split, positives))
    return jobs


# Config fields that do not change what the shards hold.
_NOT_CONTENT = ('output_dir', 'splits', 'num_workers', 'strict', 'progress', 'runner', 'beam_options')
SETTINGS_FILE = 'settings.json'


def _check_same_settings(config: Config):
    """A rerun reuses finished shards (that is how a killed run resumes), so it must not
    mix in shards written with other settings: raises ConfigError when output_dir's saved
    settings (see _save_settings) differ. Output folders from before this check have no
    saved settings and are taken as they are. Returns the settings to save.
    """
    current = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_CONTENT}
    current = json.loads(json.dumps(current, default=str))
    path = os.path.join(config.output_dir, shards.STATS_DIR, SETTINGS_FILE)
    if files.exists(path):
        # A field added after the folder was written counts as its default there.
        defaults = {f.name: f.default for f in dataclasses.fields(Config)
                    if f.default is not dataclasses.MISSING and f.name not in _NOT_CONTENT}
        saved = {**json.loads(json.dumps(defaults, default=str)), **json.loads(files.read_text(path))}
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            details = '; '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in changed)
            raise ConfigError(f'{config.output_dir} holds shards written with other settings '
                              f'({details}); a rerun would reuse them. Use a new --output_dir, '
                              'or delete that folder')
    return current


def _save_settings(config: Config, settings: dict):
    """Saves the settings before the first shard is written (after every input check, so a
    run that fails on bad flags leaves nothing that would refuse the corrected rerun)."""
    files.write_json(os.path.join(config.output_dir, shards.STATS_DIR, SETTINGS_FILE), settings, indent=1)


def _manifest(config: Config, split_stats: Dict[str, shards.WriteStats], seconds: float,
              flag_values: Optional[dict]) -> dict:
    total = shards.WriteStats()
    for stats in split_stats.values():
        total.merge(dataclasses.replace(stats, problems=list(stats.problems)))
    return {
        'output_dir': config.output_dir,
        'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'seconds': round(seconds, 2),
        'images': total.images,
        'faces': total.faces,
        'ignored_faces': total.ignored_faces,
        'by_source': total.by_source,
        'skipped': total.skipped,
        'dropped_boxes': total.dropped,
        'problems': total.problems,
        'landmark_teacher': _teacher_summary(config, total),
        'splits': {split: {
            'images': s.images, 'faces': s.faces, 'ignored_faces': s.ignored_faces,
            'by_source': s.by_source, 'skipped': s.skipped, 'dropped_boxes': s.dropped,
            'teacher': s.teacher,
            'shards': [os.path.basename(p) for p in s.shards],
            'reused_shards': [os.path.basename(p) for p in s.reused_shards],
        } for split, s in split_stats.items()},
        'config': dataclasses.asdict(config),
        'flags': flag_values or {},
    }


def _teacher_summary(config: Config, total: shards.WriteStats) -> Optional[dict]:
    """The manifest's record of the landmark teacher: which model, its thresholds, its counts."""
    if not config.landmark_teacher:
        return None
    from preprocess import landmark_teacher
    return {'model': os.path.basename(config.landmark_teacher),
            'match_iou': config.landmark_teacher_iou,
            'ignore_score': config.landmark_teacher_ignore_score,
            'detect_score': landmark_teacher.DETECT_SCORE,
            'unlabelled_iou': landmark_teacher.UNLABELLED_IOU,
            'images': total.teacher.get('images', 0),
            'landmarks_added': total.teacher.get('landmarks_added', 0),
            'ignore_added': total.teacher.get('ignore_added', 0)}
