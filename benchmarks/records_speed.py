r"""Speed and memory of the shard writers (preprocess/shards.py, preprocess/beam_writer.py). Not a test.

Builds a dataset of real-looking JPEG files (synthetic faces written to disk with a
labels.jsonl, or WIDER FACE with --wider_dir), then writes it as TFRecords:
  * 1 worker vs --workers workers: records/s;
  * the same on Apache Beam's DirectRunner (make_records --runner=beam), 1 and 2 worker
    processes: records/s beside the local writer's (the same shards, byte for byte);
  * synthetic generation alone, images/s on one core at 256 px;
  * the dataset once vs --repeat times (same files, new ids): peak RSS of the writer
    process and of its largest worker. With a bounded number of items in flight the
    writer's memory must not grow with the dataset.
Each measurement runs in a fresh process so that its peak RSS is its own.

  python benchmarks/records_speed.py                       # 200 synthetic JPEGs
  python benchmarks/records_speed.py --wider_dir=/work/shared/data/wider_face --num_images=300
"""

import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_NUM_IMAGES = flags.DEFINE_integer('num_images', 200, 'Images in the base dataset.')
_SIDE = flags.DEFINE_integer('side', 320, 'Max side of the synthetic JPEGs (min is half).')
_WIDER_DIR = flags.DEFINE_string('wider_dir', None, 'Use the first --num_images WIDER FACE train images.')
_WORKERS = flags.DEFINE_integer('workers', None, 'Workers of the parallel runs (default: CPU count).')
_REPEAT = flags.DEFINE_integer('repeat', 10, 'The big run writes the dataset this many times.')
_MAX_SIDE = flags.DEFINE_integer('max_side', 1024, 'As make_records --max_side.')
_WORK_DIR = flags.DEFINE_string('work_dir', None, 'Scratch folder (default: a temp dir).')
_CHILD = flags.DEFINE_string('child', None, 'Internal: run one measurement (JSON args).')


def _build_synthetic(folder: str, num: int, side: int) -> str:
    """Writes ``num`` synthetic JPEGs and their labels.jsonl; returns the manifest path."""
    import numpy as np
    from PIL import Image
    from preprocess import synthetic
    os.makedirs(os.path.join(folder, 'images'), exist_ok=True)
    path = os.path.join(folder, 'labels.jsonl')
    with open(path, 'w') as f:
        for item in synthetic.generate_items(num, 0, 'train', min_side=side // 2, max_side=side):
            name = f'images/{item.source_id.rsplit("/", 1)[1]}.jpg'
            Image.fromarray(item.pixels).save(os.path.join(folder, name), quality=90)
            f.write(json.dumps({'image': name, 'boxes': np.round(item.boxes_xywh, 2).tolist(),
                                'split': 'train'}) + '\n')
    return path


def _generation_rate(num: int = 200, side: int = 256) -> float:
    """Synthetic images drawn per second of this process's CPU time (one core), at side x side."""
    from preprocess import synthetic
    start = time.process_time()
    for _ in synthetic.generate_items(num, 1, 'train', min_side=side, max_side=side):
        pass
    return num / (time.process_time() - start)


def _items(args: dict):
    """The base dataset's items, ``args['repeat']`` times over with distinct ids (streamed)."""
    if args.get('pixels'):  # heavy items: pixels drawn in the writer process itself
        from preprocess import synthetic
        yield from synthetic.generate_items(args['num'] * args['repeat'], 2, 'train')
        return
    if args['wider_dir']:
        from preprocess import widerface
        base = lambda: itertools.islice(widerface.read_items(args['wider_dir'], splits=('train',)), args['num'])  # noqa: E731
    else:
        from preprocess import jsonl_source
        base = lambda: jsonl_source.read_items(args['manifest'])  # noqa: E731
    for r in range(args['repeat']):
        for item in base():
            if hasattr(item, 'source_id'):
                item.source_id = f'{item.source_id}#{r}'
            yield item


def _write(args: dict):
    """Writes the items into 4 train shards with the local writer or on Beam; returns the counts."""
    from preprocess import shards  # imported by _child before its clock starts
    if args.get('beam'):
        from preprocess import beam_writer
        options = ('--runner=DirectRunner', '--direct_running_mode=multi_processing',
                   f'--direct_num_workers={args["workers"]}')
        job = {'train': (lambda: _items(args), 4, args['num'] * args['repeat'])}
        return beam_writer.write_splits(job, args['out'], options, max_side=args['max_side'],
                                        progress=False)['train']
    return shards.write_shards(lambda: _items(args), args['out'], 'train', 4, num_workers=args['workers'],
                               max_side=args['max_side'], progress=False)


def _child(args: dict):
    """One measurement in this process: prints a JSON line with time and peak RSS."""
    from preprocess import shards  # noqa: F401  (TensorFlow's import is not timed)
    if args.get('beam'):
        from preprocess import beam_writer  # noqa: F401  (nor Beam's)
    start = time.time()
    stats = _write(args)
    seconds = time.time() - start
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({'images': stats.images, 'seconds': seconds, 'writer_mb': self_kb / 1024,
                      'worker_mb': child_kb / 1024 if args['workers'] > 1 or args.get('beam') else 0.0}))


def _measure(args: dict) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, os.path.abspath(__file__), f'--child={json.dumps(args)}'],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if _CHILD.value:
        _child(json.loads(_CHILD.value))
        return
    workers = _WORKERS.value or os.cpu_count() or 1
    work = _WORK_DIR.value or tempfile.mkdtemp(prefix='records_speed_')
    args = {'wider_dir': _WIDER_DIR.value, 'num': _NUM_IMAGES.value, 'max_side': _MAX_SIDE.value,
            'manifest': None}
    print(f'synthetic generation: {_generation_rate():.0f} images/s of CPU time at 256x256 (one core)')
    if not _WIDER_DIR.value:
        t = time.time()
        args['manifest'] = _build_synthetic(os.path.join(work, 'dataset'), _NUM_IMAGES.value, _SIDE.value)
        print(f'dataset: {_NUM_IMAGES.value} synthetic JPEGs (side {_SIDE.value // 2}-{_SIDE.value}) '
              f'in {time.time() - t:.1f} s under {work}/dataset')
    else:
        print(f'dataset: first {_NUM_IMAGES.value} WIDER FACE train images of {_WIDER_DIR.value}')
    big = f'{_REPEAT.value}x'
    runs = [('1x', 1, 1, False), ('1x', workers, 1, False), (big, 1, _REPEAT.value, False),
            (big, workers, _REPEAT.value, False), (f'{big} beam', 1, _REPEAT.value, False),
            (f'{big} beam', 2, _REPEAT.value, False),
            # In-memory pixels made by the writer process: what an unbounded imap would pile up.
            ('1x pixels', workers, 1, True), (f'{big} pixels', workers, _REPEAT.value, True)]
    rows = []
    for n, (label, w, repeat, pixels) in enumerate(runs):
        out = os.path.join(work, f'out{n}')
        rows.append((label, w, _measure({**args, 'workers': w, 'repeat': repeat, 'out': out,
                                         'pixels': pixels, 'beam': 'beam' in label})))
        subprocess.run(['rm', '-rf', out], check=False)
    print(f'\n| dataset | workers | images | seconds | records/s | writer peak RSS MB | worker peak RSS MB |')
    print('|---|---|---|---|---|---|---|')
    for label, w, r in rows:
        print(f'| {label} | {w} | {r["images"]} | {r["seconds"]:.1f} | {r["images"] / r["seconds"]:.1f} | '
              f'{r["writer_mb"]:.0f} | {r["worker_mb"]:.0f} |')
    one, par, big_one, big_par, beam_one, beam_two, pix, big_pix = (r for _, _, r in rows)
    rate = lambda r: r['images'] / r['seconds']  # noqa: E731
    print(f'\nrecords/s, {workers} workers vs 1: {rate(par) / rate(one):.2f}x on 1x, '
          f'{rate(big_par) / rate(big_one):.2f}x on {big}')
    print(f'records/s on Beam (DirectRunner) vs the local writer, {big}: '
          f'{rate(beam_one) / rate(big_one):.2f}x with 1 worker, {rate(beam_two) / rate(big_par):.2f}x '
          f'with 2 (local: {workers}); Beam 2 workers vs 1: '
          f'{rate(beam_two) / rate(beam_one):.2f}x')
    print(f'writer peak RSS {big} vs 1x: {big_one["writer_mb"] / one["writer_mb"]:.2f}x (1 worker), '
          f'{big_par["writer_mb"] / par["writer_mb"]:.2f}x ({workers} workers); '
          f'worker peak RSS: {big_par["worker_mb"] / max(par["worker_mb"], 1e-9):.2f}x; '
          f'in-memory pixels: writer {big_pix["writer_mb"] / pix["writer_mb"]:.2f}x')


if __name__ == '__main__':
    app.run(main)
