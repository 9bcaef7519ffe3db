r"""Scores detections against ground truth with the WIDER FACE protocol.

Usage (from the repository root):

  python evaluate.py --detections=out/detections.jsonl \
      --labels=../shared/data/face_mask/labels.jsonl,../shared/data/no_faces/labels.jsonl \
      --iou_threshold=0.5,0.4 --min_face=10 --score_threshold=0.5 \
      --pr_curve=out/pr_curve.png --output_json=out/metrics.json

--labels takes one or more (comma separated) sources: a JSONL labels file (.jsonl), the
official WIDER FACE gt txt (.txt), or a TFRecord glob written with data/features.py.
Detections are paired with labelled images by path (see evaluation/labels.py); labelled
images without detections count as all missed, detections without labels are reported and
not counted. Matching, ignored faces and AP are defined in evaluation/wider.py.

Prints a table (images, faces, ignored faces, detections, AP per IoU threshold, recall and
precision at --score_threshold, false positives per face-free image), then AP at the first
IoU threshold by face height (--size_bands; each band ignores the faces and the unmatched
detections of other heights, as COCO's small/medium/large do), then the landmark NME (mean,
median and count of the faces matched at IoU 0.5 by detections at --score_threshold, by
inter-ocular distance; evaluation/landmarks.py) when the labels have landmarks and the
detections have them too; nothing about landmarks otherwise. Bad input ends with
one error line naming the file and line, and exit status 1.
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TF is imported only for box helpers
from common import quiet  # noqa: E402  # pylint: disable=g-import-not-at-top
quiet.import_tensorflow()  # first: without its start-up notices (common/quiet.py)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from evaluation import labels as label_lib  # pylint: disable=g-import-not-at-top
from evaluation import landmarks as landmark_lib
from evaluation import wider

_DETECTIONS = flags.DEFINE_string('detections', None, 'detections.jsonl to score.')
_LABELS = flags.DEFINE_list(
    'labels', None, 'Ground truth: JSONL labels, WIDER gt .txt or TFRecord glob; '
    'several may be given, comma separated.')
_IOU_THRESHOLD = flags.DEFINE_list(
    'iou_threshold', ['0.5'], 'IoU for a match; a comma list reports each.')
_MIN_FACE = flags.DEFINE_float('min_face', 0.0, 'Faces shorter than this (px) are ignored.')
_SCORE_THRESHOLD = flags.DEFINE_float(
    'score_threshold', 0.5, 'Score for recall, precision and FP per face-free image.')
_SIZE_BANDS = flags.DEFINE_list(
    'size_bands', ['16', '24', '40', '80'],
    'Face heights (px) that split the AP-by-height table: [min_face, 16), [16, 24), ... '
    'Empty for no table.')
_PR_CURVE = flags.DEFINE_string('pr_curve', '', 'If set, write the PR curves to this PNG.')
_OUTPUT_JSON = flags.DEFINE_string('output_json', '', 'If set, write the metrics here.')
flags.mark_flags_as_required(['detections', 'labels'])


def _fmt(value) -> str:
    if isinstance(value, float):
        return 'n/a' if math.isnan(value) else f'{value:.4f}'
    return str(value)


def _load(label_specs, detections_path, iou_thresholds, min_face, bands=(),
          score_threshold=0.5):
    """Reads the inputs and runs one Accumulator per IoU threshold, then one per size band
    (at the first threshold), and the landmark NME (None when the labels or the detections
    have no landmarks)."""
    gt, skipped = {}, []
    for spec in label_specs:
        for key, value in label_lib.load_labels(spec, skipped).items():
            if key in gt:
                raise label_lib.InputError(f'{spec}: image {key} is also labelled elsewhere')
            gt[key] = value
    detections = label_lib.load_detections(detections_path)
    pairing = label_lib.pair(list(gt), detections)
    accs = [wider.Accumulator(t, min_face) for t in iou_thresholds]
    accs += [wider.Accumulator(iou_thresholds[0], low, high, band_detections=True)
             for low, high in bands]
    nme = landmark_lib.NmeAccumulator(score_threshold, min_face)
    has_points = [False, False]  # any labelled face has landmarks; any detection entry has
    for key, faces in gt.items():
        det = pairing.matched.get(key)
        det_boxes = det.boxes if det else np.zeros([0, 4])
        det_scores = det.scores if det else np.zeros([0])
        for acc in accs:
            acc.add_image(faces.boxes, det_boxes, det_scores, faces.ignore)
        has_points[0] |= bool(np.isfinite(faces.landmarks).any())
        if det is not None and det.landmarks is not None:
            has_points[1] = True
            nme.add_image(faces.boxes, faces.landmarks, det.boxes, det.scores, det.landmarks,
                          faces.ignore)
    results = [acc.result() for acc in accs]
    nme_result = nme.result() if all(has_points) else None
    return (results[:len(iou_thresholds)], results[len(iou_thresholds):], pairing, skipped,
            nme_result)


def _report(pairing, skipped):
    """Warns about inputs that were not paired."""
    for msg in skipped:
        print(f'warning: skipped malformed label entry: {msg}', file=sys.stderr)
    unread = [d for d in pairing.matched.values() if d.error]
    for det in unread[:5]:
        print(f'warning: {det.where}: detect.py could not read {det.image} ({det.error}); '
              'its faces count as missed', file=sys.stderr)
    if len(unread) > 5:
        print(f'warning: ... and {len(unread) - 5} more unreadable images', file=sys.stderr)
    for name, entries in (('has no label', pairing.unlabelled),
                          ('matches several labelled images', pairing.ambiguous),
                          ('repeats an image already seen', pairing.duplicate)):
        for det in entries[:5]:
            print(f'warning: {det.where}: {det.image} {name}; not counted', file=sys.stderr)
        if len(entries) > 5:
            print(f'warning: ... and {len(entries) - 5} more such entries ({name})',
                  file=sys.stderr)


def main(argv):
    del argv
    try:
        iou_thresholds = [float(t) for t in _IOU_THRESHOLD.value]
    except ValueError:
        sys.exit(f'error: --iou_threshold={",".join(_IOU_THRESHOLD.value)}: not a number list')
    try:
        edges = [float(e) for e in _SIZE_BANDS.value]
    except ValueError:
        sys.exit(f'error: --size_bands={",".join(_SIZE_BANDS.value)}: not a number list')
    bands = wider.size_bands(edges, _MIN_FACE.value) if edges else []
    threshold = _SCORE_THRESHOLD.value
    try:
        results, band_results, pairing, skipped, nme = _load(
            _LABELS.value, _DETECTIONS.value, iou_thresholds, _MIN_FACE.value, bands, threshold)
    except (label_lib.InputError, OSError, ImportError) as e:
        sys.exit(f'error: {e}')
    _report(pairing, skipped)
    first = results[0]
    rows = [
        ('images (labelled)', first.num_images),
        ('  without detections (all missed)', len(pairing.missing)),
        ('  unreadable by detect.py (all missed)',
         sum(1 for d in pairing.matched.values() if d.error)),
        ('detection entries not counted',
         len(pairing.unlabelled) + len(pairing.ambiguous) + len(pairing.duplicate)),
        ('faces', first.num_faces),
        (f'ignored faces (min_face={_MIN_FACE.value:g})', first.num_ignored_faces),
        ('face-free images', first.num_face_free_images),
        ('detections', first.num_detections),
    ]
    for r in results:
        iou = f'IoU {r.iou_threshold:g}'
        rows += [(f'AP @ {iou}', r.ap),
                 (f'recall @ score>={threshold:g}, {iou}', r.recall_at(threshold)),
                 (f'precision @ score>={threshold:g}, {iou}', r.precision_at(threshold))]
    rows.append((f'FP per face-free image @ score>={threshold:g}',
                 first.false_positives_per_face_free_image(threshold)))
    band_rows = [(f'  faces {wider.band_name(r.min_face, r.max_face)} ({r.num_faces})', r.ap)
                 for r in band_results]
    if band_rows:
        rows.append((f'AP @ IoU {iou_thresholds[0]:g} by face height', ''))
        rows += band_rows
    if nme is not None:
        rows += [(f'landmark NME @ score>={threshold:g}, IoU {landmark_lib.IOU_THRESHOLD:g} '
                  f'({nme.num_faces} faces)', ''), ('  mean', nme.mean), ('  median', nme.median)]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f'{name:<{width}}  {_fmt(value)}')

    if _PR_CURVE.value:
        from evaluation import plots  # pylint: disable=g-import-not-at-top
        curves = {f'IoU {r.iou_threshold:g}': (r.recall, r.precision) for r in results}
        plots.write_pr_curve_png(_PR_CURVE.value, curves,
                                 title=f'{os.path.basename(_DETECTIONS.value)}: precision-recall')
        print(f'wrote {_PR_CURVE.value}')
    if _OUTPUT_JSON.value:
        metrics = {
            'detections': _DETECTIONS.value, 'labels': _LABELS.value,
            'images_without_detections': len(pairing.missing),
            'unlabelled_detection_entries': [d.image for d in pairing.unlabelled],
            'ambiguous_detection_entries': [d.image for d in pairing.ambiguous],
            'duplicate_detection_entries': [d.image for d in pairing.duplicate],
            'results': [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in r.summary(threshold).items()} for r in results],
            'ap_by_face_height': [r.band_summary() for r in band_results],
        }
        if nme is not None:
            metrics['landmark_nme'] = {'score_threshold': threshold, **nme.summary()}
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT_JSON.value)), exist_ok=True)
        with open(_OUTPUT_JSON.value, 'w', encoding='utf-8') as f:
            json.dump(metrics, f, indent=2)
        print(f'wrote {_OUTPUT_JSON.value}')


if __name__ == '__main__':
    app.run(main)
