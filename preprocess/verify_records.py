r"""Checks a make_records.py output folder against its manifest.json.

Usage:
  python preprocess/verify_records.py --records_dir=out/records/synthetic

Every record of every shard the manifest names is read with its checksums checked
(data/shard_damage.py). Printed, one line each:

| problem | line |
|---|---|
| damaged shard (bad checksum, truncation) | `BAD NAME: <problem> at offset N: R records readable, manifest counts W` |
| shard with fewer or more records than counted | `BAD NAME: R records readable, manifest counts W` |
| shard named in the manifest but absent | `MISSING NAME` |
| shard in the folder the manifest does not name | `EXTRA NAME` |
| split total other than the manifest's | `BAD split S: R records readable, manifest counts W` |
| manifest.json absent or not JSON | `BAD manifest.json: ...` |

Then a summary line. Exit status 0 when everything matches, 1 otherwise.
"""

import glob
import json
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_RECORDS_DIR = flags.DEFINE_string('records_dir', None, 'make_records.py --output_dir to check.')
flags.mark_flag_as_required('records_dir')


def load_manifest(records_dir):
    """The manifest as a dict; raises ValueError naming the file and the problem."""
    path = os.path.join(records_dir, 'manifest.json')
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ValueError(f'{path} does not exist: is {records_dir} a make_records.py '
                         '--output_dir, and did the run finish?') from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f'{path} is not JSON ({e})') from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get('splits'), dict):
        raise ValueError(f'{path} has no "splits" table')
    return manifest


def check_shard(path, expected):
    """(records readable, problem line or None) of one shard; expected: its saved count."""
    import tensorflow as tf

    from data import shard_damage
    name = os.path.basename(path)
    try:
        readable, damage = shard_damage.count_records(path), None
    except tf.errors.DataLossError:
        damage = shard_damage.scan_shard(path)
        readable = damage.readable
    counted = 'unknown' if expected is None else expected
    if damage is not None:
        at = f' at offset {damage.offset}' if damage.offset is not None else ''
        return readable, (f'BAD {name}: {damage.problem}{at}: {readable} records readable, '
                          f'manifest counts {counted}')
    if expected is not None and readable != expected:
        return readable, f'BAD {name}: {readable} records readable, manifest counts {expected}'
    return readable, None


def check_split(records_dir, split, info):
    """(problem lines, shard paths named, records readable) of one split of the manifest."""
    from preprocess import shards
    problems, named, readable = [], [], 0
    for name in info.get('shards', []):
        path = os.path.join(records_dir, name)
        named.append(path)
        if not os.path.exists(path):
            problems.append(f'MISSING {name}')
            continue
        stats = shards.load_stats(records_dir, path)
        count, problem = check_shard(path, None if stats is None else stats.images)
        readable += count
        if problem:
            problems.append(problem)
    if readable != info.get('images') and not problems:  # a shard line says why already
        problems.append(f'BAD split {split}: {readable} records readable, manifest counts '
                        f'{info.get("images")}')
    return problems, named, readable


def verify(records_dir):
    """(problem lines, summary line) of a records folder."""
    try:
        manifest = load_manifest(records_dir)
    except ValueError as e:
        return [f'BAD manifest.json: {e}'], 'not checked: the manifest cannot be read'
    problems, named, readable = [], set(), 0
    expected = 0
    for split, info in manifest['splits'].items():
        lines, paths, count = check_split(records_dir, split, info)
        problems += lines
        named |= set(paths)
        readable += count
        expected += info.get('images', 0)
    for path in sorted(set(glob.glob(os.path.join(records_dir, '*.tfrecord'))) - named):
        problems.append(f'EXTRA {os.path.basename(path)}: a shard the manifest does not name')
    summary = (f'{len(named)} shards, {readable} of {expected} records readable, '
               f'{len(problems)} problems')
    return problems, summary


def main(argv):
    if len(argv) > 1:
        sys.exit(f'verify_records.py: error: unexpected arguments {argv[1:]}')
    problems, summary = verify(_RECORDS_DIR.value)
    for line in problems:
        print(line)
    print(('FAILED: ' if problems else 'OK: ') + summary)
    sys.exit(1 if problems else 0)


if __name__ == '__main__':
    app.run(main)
