r"""Peak memory of detect.py over 1 photo and over N: it must not grow with N. Not a test.

Writes --num_photos 12-megapixel JPEGs (4000x3000, random content: smooth random colour
fields plus noise, about the size of a phone photo's file) to a temp dir, then runs
detect.py in a fresh process over the first photo alone and over all of them, with
detect.py's default flags (annotated PNGs included), and reads each run's peak RSS from
the kernel (os.wait4's ru_maxrss for that child). detect.py holds one image at a time, so
the N-photo run should peak within a few percent of the 1-photo run.

  python benchmarks/detect_memory.py                          # 8 photos, models/facedet_default
  python benchmarks/detect_memory.py --num_photos=16 --sizes=4000x3000,3000x4000
"""

import os
import subprocess
import sys
import tempfile
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_NUM_PHOTOS = flags.DEFINE_integer('num_photos', 8, 'Photos of the big run.', lower_bound=2)
_SIZES = flags.DEFINE_list('sizes', ['4000x3000'], 'WxH of the photos, taken in turn '
                           '(4000x3000,3000x4000: landscape and portrait, as a phone folder).')
_MODEL = flags.DEFINE_string('model', os.path.join(_REPO_ROOT, 'models', 'facedet_default'),
                             'export.py --export_dir to run.')
_WORK_DIR = flags.DEFINE_string('work_dir', None, 'Scratch folder (default: a temp dir).')


def write_photos(folder, count, sizes):
    """count JPEGs of the given (width, height) sizes in turn; returns their paths."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        field = Image.fromarray(rng.integers(0, 256, [height // 100, width // 100, 3], np.uint8))
        pixels = np.asarray(field.resize((width, height), Image.BICUBIC), np.int16)
        pixels = pixels + rng.integers(-12, 13, pixels.shape, np.int16)
        path = os.path.join(folder, f'photo{i:03d}.jpg')
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def peak_rss_mb(args):
    """Runs `python detect.py args` in a fresh process; (peak RSS MB, seconds)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    start = time.time()
    proc = subprocess.Popen([sys.executable, os.path.join(_REPO_ROOT, 'detect.py'), *args],
                            cwd=_REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f'detect.py {" ".join(args)} failed ({proc.returncode}):\n{output[-3000:]}')
    return usage.ru_maxrss / 1024, time.time() - start  # Linux: kilobytes


def main(argv):
    del argv
    sizes = [tuple(int(v) for v in s.split('x')) for s in _SIZES.value]
    work = _WORK_DIR.value or tempfile.mkdtemp(prefix='detect_memory_')
    photos = write_photos(os.path.join(work, 'photos'), _NUM_PHOTOS.value, sizes)
    megabytes = sum(os.path.getsize(p) for p in photos) / len(photos) / 1e6
    print(f'{len(photos)} photos of {", ".join(_SIZES.value)} ({megabytes:.1f} MB JPEGs) '
          f'in {work}; model {_MODEL.value}')
    one_dir = os.path.join(work, 'one')
    os.makedirs(one_dir, exist_ok=True)
    os.link(photos[0], os.path.join(one_dir, os.path.basename(photos[0])))
    small_dir = os.path.join(work, 'small')
    write_photos(small_dir, 1, [(640, 480)])
    rows = []
    for label, folder in (('1 at 640x480 (start-up and model)', small_dir), ('1', one_dir),
                          (str(len(photos)), os.path.dirname(photos[0]))):
        rss, seconds = peak_rss_mb([f'--model={_MODEL.value}', f'--input={folder}',
                                    f'--output={os.path.join(work, "out_" + label.split()[0])}'])
        rows.append((label, rss, seconds))
    print('\n| photos | peak RSS MB | seconds |')
    print('|---|---|---|')
    for label, rss, seconds in rows:
        print(f'| {label} | {rss:.0f} | {seconds:.1f} |')
    base, one, many = (r[1] for r in rows)
    pixels = sizes[0][0] * sizes[0][1]
    print(f'\npeak RSS, {rows[2][0]} photos vs 1: {many / one:.2f}x; one photo adds '
          f'{one - base:.0f} MB to start-up ({(one - base) * 2**20 / pixels:.0f} bytes per pixel)')


if __name__ == '__main__':
    app.run(main)
