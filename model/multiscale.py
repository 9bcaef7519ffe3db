"""Multi-scale testing on an exported model: run the detect_image signature at several
image scales and merge the passes with NMS (used by detect.py --scales and the benchmarks).

A pass may keep only the faces of some sizes (``Pass.min_size``/``max_size``, the longer side
of the box in the photo's pixels), as SNIP's valid ranges do: an upscaled pass finds small
faces best and a downscaled one large faces, each of the sizes the network was trained on
(faces up to about 300 px in its 320-px training crops). An export's default passes are in
its facedet.json (``default_passes``).
"""

import dataclasses
import functools
import math

import numpy as np

from model.lite_network import MULTIPLE as _MULTIPLE


@dataclasses.dataclass(frozen=True)
class Pass:
    scale: float
    min_size: float = 0.0     # keep boxes whose longer side (photo pixels) is >= min_size
    max_size: float = math.inf  # ... and < max_size

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f'a pass needs a positive scale, got {self.scale!r}')
        if not 0 <= self.min_size < self.max_size:
            raise ValueError(f'a pass needs 0 <= min_size < max_size, got {self.min_size!r} '
                             f'and {self.max_size!r}')

    def to_json(self):
        out = {'scale': self.scale}
        if self.min_size:
            out['min_size'] = self.min_size
        if self.max_size != math.inf:
            out['max_size'] = self.max_size
        return out

    def describe(self):
        sizes = ''
        if self.min_size and self.max_size != math.inf:
            sizes = f' (faces {self.min_size:g}-{self.max_size:g} px)'
        elif self.min_size:
            sizes = f' (faces >= {self.min_size:g} px)'
        elif self.max_size != math.inf:
            sizes = f' (faces < {self.max_size:g} px)'
        return f'{self.scale:g}x{sizes}'


def as_passes(scales):
    """Numbers (a pass keeping faces of every size) or Pass objects -> [Pass]."""
    return [p if isinstance(p, Pass) else Pass(float(p)) for p in scales]


def describe(scales):
    """'1.5x (faces < 200 px) + 0.5x (faces >= 100 px) merged by NMS', for logs and notes."""
    passes = as_passes(scales)
    return ' + '.join(p.describe() for p in passes) + (' merged by NMS' if len(passes) > 1 else '')


def parse_passes(values, source='passes'):
    """A list of {'scale', 'min_size', 'max_size'} dicts (facedet.json) -> [Pass]; raises
    ValueError naming `source` on anything else."""
    try:
        passes = [Pass(float(v['scale']), float(v.get('min_size', 0.0)),
                       float(v.get('max_size', math.inf))) for v in values]
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f'{source}: expected a list of {{"scale", "min_size", "max_size"}} '
                         f'objects, got {values!r} ({e})') from None
    if not passes:
        raise ValueError(f'{source}: no pass')
    return passes


def parse_scales(values):
    """--scales strings -> positive floats; raises ValueError naming a bad one."""
    scales = []
    for v in values:
        try:
            scale = float(v)
        except ValueError:
            scale = 0.0
        if not scale > 0:
            raise ValueError(f'--scales: {v!r} is not a positive number')
        scales.append(scale)
    if not scales:
        raise ValueError('--scales: give at least one scale, e.g. 1')
    return scales


# The network takes sides that are multiples of 32 (_MULTIPLE); a scaled side is rounded to
# one when that stretches the photo by at most MAX_STRETCH, so the input needs no padding and
# no padded border holds points.
MAX_STRETCH = 0.05


def scaled_size(height, width, scale, max_side=None):
    """The (height, width) a pass at `scale` resizes a photo to: each side times scale,
    rounded to a multiple of 32 when that changes it by at most MAX_STRETCH, else to a pixel;
    the photo itself at 1x, and at most max_side on the long side (see run_scales). TensorFlow
    ops, so that run_scales (eager, Python ints in) and model/serving.py's passes inside the
    exported graph (tensors in) compute the same size: int32 tensors out."""
    import tensorflow as tf
    hw = tf.cast(tf.stack([height, width]), tf.float64)
    scale = tf.cast(scale, tf.float64)
    if max_side:
        scale = tf.minimum(scale, tf.cast(max_side, tf.float64) / tf.reduce_max(hw))
    exact = tf.maximum(hw * scale, 1.0)
    snapped = tf.maximum(tf.floor(exact / _MULTIPLE + 0.5) * _MULTIPLE, float(_MULTIPLE))
    size = tf.where(tf.abs(snapped / exact - 1) <= MAX_STRETCH, snapped,
                    tf.maximum(tf.round(exact), 1.0))
    size = tf.cast(tf.where(tf.equal(scale, 1.0), hw, size), tf.int32)
    return size[0], size[1]


def merge(per_pass, passes, merge_iou):
    """The detections of each pass -> one list, best first: each pass's boxes scaled to the
    photo and kept where their size is in the pass's range, then (several passes) NMS at
    merge_iou over all of them. per_pass: for each pass (boxes [N, 4] xywh, scores [N],
    landmarks [N, 10], to_photo [2] x, y factors from the pass's pixels to the photo's).
    TensorFlow ops: run_scales calls it eagerly, model/serving.py inside the exported graph;
    returns tensors (boxes, scores, landmarks)."""
    import tensorflow as tf
    boxes, scores, landmarks = [], [], []
    for (b, s, l, to_photo), p in zip(per_pass, as_passes(passes)):
        to_photo = tf.cast(to_photo, tf.float32)
        b = tf.cast(b, tf.float32) * tf.tile(to_photo, [2])
        s, l = tf.cast(s, tf.float32), tf.cast(l, tf.float32) * tf.tile(to_photo, [5])
        if p.min_size or p.max_size != math.inf:
            side = tf.maximum(b[:, 2], b[:, 3])
            keep = (side >= p.min_size) & (side < p.max_size)
            b, s, l = tf.boolean_mask(b, keep), tf.boolean_mask(s, keep), tf.boolean_mask(l, keep)
        boxes.append(b)
        scores.append(s)
        landmarks.append(l)
    boxes, scores, landmarks = (tf.concat(x, 0) for x in (boxes, scores, landmarks))
    if len(per_pass) > 1:
        # The kernel itself: tf.image.non_max_suppression's wrapper costs more than it.
        keep = tf.raw_ops.NonMaxSuppressionV3(
            boxes=tf.stack([boxes[:, 1], boxes[:, 0], boxes[:, 1] + boxes[:, 3],
                            boxes[:, 0] + boxes[:, 2]], 1),
            scores=scores, max_output_size=tf.size(scores), iou_threshold=merge_iou,
            score_threshold=-math.inf)
    else:
        keep = tf.argsort(-scores, stable=True)
    return tf.gather(boxes, keep), tf.gather(scores, keep), tf.gather(landmarks, keep)


@functools.lru_cache(maxsize=64)
def _pass_size(height, width, scale, max_side):
    """scaled_size as Python ints, cached: eager TensorFlow ops cost about 1 ms a call."""
    return tuple(int(v) for v in scaled_size(height, width, scale, max_side))


@functools.lru_cache(maxsize=8)
def _merge_fn(passes, merge_iou):
    """merge as one traced graph for these passes: eagerly, op by op, it took about 16 ms a
    photo (boolean masks), traced well under one."""
    import tensorflow as tf
    spec = tuple((tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.float32),
                  tf.TensorSpec([None, 10], tf.float32), tf.TensorSpec([2], tf.float32))
                 for _ in passes)
    return tf.function(lambda per_pass: merge(per_pass, passes, merge_iou),
                       input_signature=[spec])


def _resize(image, height, width):
    """Bilinear resize of [H, W, 3] (TensorFlow's kernel called directly: the
    tf.image.resize wrapper's own cost is about a millisecond per call). TensorFlow casts
    uint8 pixels itself: handed a float copy made by NumPy for each call, the same resize
    took 4-5 ms instead of 0.6 on a 640x480 photo, in a process that runs TFLite too."""
    import tensorflow as tf
    images = tf.cast(np.asarray(image)[None], tf.float32)
    return tf.raw_ops.ResizeBilinear(images=images, size=[height, width],
                                     half_pixel_centers=True).numpy()[0]


def run_scales(signature, pixels, scales=(1.0,), merge_iou=0.4, max_side=None):
    """Runs the detect_image signature at each scale; returns boxes [K, 4] xywh, scores [K]
    and landmarks [K, 10] in the pixels of ``pixels``, best first.

    ``scales`` holds numbers or Pass objects (a number keeps faces of every size). A TFLite
    signature (model/runtime.py) resizes inside its network where it can, else TensorFlow
    resizes the photo before it. With several passes the detections of all passes are
    merged by NMS at merge_iou (the export's own NMS threshold by default), as multi-scale
    testing does in RetinaFace and SCRFD's evaluations.

    ``max_side`` (default: the signature's ``max_side``, which model/runtime.load sets) is
    the longest side the network takes: a pass that would scale the photo beyond it runs at
    the scale that reaches it, as the export would have downscaled its input anyway (a
    12-megapixel photo is not first upscaled 1.5x, 330 MB of floats, to be shrunk again), and
    passes that come to the same size share one call.
    """
    passes = as_passes(scales)
    height, width = pixels.shape[:2]
    can_resize = getattr(signature, 'can_resize', None)  # model/runtime.LiteSignature's
    # LiteSignature takes the pixels as they are (uint8 photos are cast in its input buffer).
    photo = pixels if can_resize else np.asarray(pixels, np.float32)
    max_side = getattr(signature, 'max_side', None) if max_side is None else max_side
    outputs = {}  # (height, width) the photo was scaled to -> the signature's outputs
    per_pass = []
    for p in passes:
        new_h, new_w = _pass_size(height, width, p.scale, max_side)
        if (new_h, new_w) in outputs:
            out = outputs[(new_h, new_w)]
        elif (new_h, new_w) == (height, width):
            out = signature(images=photo[None])
        elif can_resize and can_resize(height, width, new_h, new_w):  # inside the network
            out = signature(images=photo[None], resize_to=(new_h, new_w))
        else:
            out = signature(images=_resize(photo, new_h, new_w)[None])
        outputs[(new_h, new_w)] = out
        n = int(np.asarray(out['num_detections'])[0])
        per_pass.append((np.asarray(out['boxes'], np.float32)[0, :n],
                         np.asarray(out['scores'], np.float32)[0, :n],
                         np.asarray(out['landmarks'], np.float32)[0, :n],
                         np.array([width / new_w, height / new_h], np.float32)))
    merged = _merge_fn(tuple(passes), float(merge_iou))(tuple(per_pass))
    return tuple(np.asarray(x) for x in merged)
