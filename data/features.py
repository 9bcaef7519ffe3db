"""The data contract: one TFRecord schema shared by the writer, the reader and the tests.

Box convention (the one place it is written down): inside the project a box is
``[ymin, xmin, ymax, xmax]`` as float32, normalized to [0, 1] of the image it belongs to.
Landmarks are 5 points (left eye, right eye, nose, left mouth corner, right mouth corner),
stored as 10 floats ``y0, x0, y1, x1, ...`` in the same normalized frame. "Left" is the
subject's left as seen in the picture's left half, i.e. the point with the smaller x in a
frontal face; a horizontal flip swaps the pairs (see ``data.boxes.LANDMARK_FLIP_ORDER``).

At the project's edges (JSONL manifests, detections.jsonl, exported signatures) boxes are
``[x, y, width, height]`` in pixels of the original image; ``data.boxes`` converts.

Per face the record also carries:
  * ``landmarks_valid`` (0/1): whether the 5 points are labelled for that face;
  * ``ignore`` (0/1): a face that exists but should neither be learned as positive nor as
    background (tiny, invalid, or an unlabelled region). Such faces are kept and marked,
    never deleted.
An image with no face is a valid record with empty per-face lists.
"""

import dataclasses
import io
from typing import Dict

import numpy as np
import tensorflow as tf
from PIL import Image

IMAGE_ENCODED = 'image/encoded'
IMAGE_HEIGHT = 'image/height'
IMAGE_WIDTH = 'image/width'
IMAGE_SOURCE_ID = 'image/source_id'
BBOX_YMIN = 'image/object/bbox/ymin'
BBOX_XMIN = 'image/object/bbox/xmin'
BBOX_YMAX = 'image/object/bbox/ymax'
BBOX_XMAX = 'image/object/bbox/xmax'
LANDMARKS = 'image/object/landmarks'
LANDMARKS_VALID = 'image/object/landmarks_valid'
IGNORE = 'image/object/ignore'

NUM_LANDMARKS = 5
_BOX_KEYS = (BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)

FEATURE_SPEC = {
    IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=''),
    BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
    BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
    LANDMARKS: tf.io.VarLenFeature(tf.float32),
    LANDMARKS_VALID: tf.io.VarLenFeature(tf.int64),
    IGNORE: tf.io.VarLenFeature(tf.int64),
}


@dataclasses.dataclass
class FaceRecord:
    """One image and its faces, ready to be written.

    Attributes:
      source_id: a stable name for the image (dataset and relative path).
      encoded: JPEG bytes of the image.
      height, width: size of the encoded image in pixels.
      boxes: [N, 4] float32, normalized yxyx.
      landmarks: [N, 10] float32, normalized (y, x) pairs; zeros where not valid.
      landmarks_valid: [N] int64, 1 where the 5 points are labelled.
      ignore: [N] int64, 1 for faces to be ignored by training and evaluation.
    """
    source_id: str
    encoded: bytes
    height: int
    width: int
    boxes: np.ndarray
    landmarks: np.ndarray = None
    landmarks_valid: np.ndarray = None
    ignore: np.ndarray = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        if self.landmarks is None:
            self.landmarks = np.zeros([n, 2 * NUM_LANDMARKS], np.float32)
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(n, 2 * NUM_LANDMARKS)
        if self.landmarks_valid is None:
            self.landmarks_valid = np.zeros([n], np.int64)
        self.landmarks_valid = np.asarray(self.landmarks_valid, np.int64).reshape(n)
        if self.ignore is None:
            self.ignore = np.zeros([n], np.int64)
        self.ignore = np.asarray(self.ignore, np.int64).reshape(n)

    @property
    def num_faces(self) -> int:
        return len(self.boxes)


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values).ravel()))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values).ravel()))


def _bytes(value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def to_example(record: FaceRecord) -> tf.train.Example:
    """Serializes a FaceRecord into a tf.train.Example following FEATURE_SPEC."""
    feature = {
        IMAGE_ENCODED: _bytes(record.encoded),
        IMAGE_HEIGHT: _ints([record.height]),
        IMAGE_WIDTH: _ints([record.width]),
        IMAGE_SOURCE_ID: _bytes(record.source_id.encode('utf-8')),
        LANDMARKS: _floats(record.landmarks),
        LANDMARKS_VALID: _ints(record.landmarks_valid),
        IGNORE: _ints(record.ignore),
    }
    for i, key in enumerate(_BOX_KEYS):
        feature[key] = _floats(record.boxes[:, i])
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_example(serialized: tf.Tensor, decode_image: bool = True) -> Dict[str, tf.Tensor]:
    """Parses one serialized example.

    Args:
      serialized: scalar tf.string.
      decode_image: decode the JPEG into ``image`` (uint8 [H, W, 3]); otherwise the bytes
        are returned under ``encoded``.

    Returns:
      A dict with ``image`` or ``encoded``, ``height``, ``width`` (int32 scalars),
      ``source_id``, ``boxes`` [N, 4] float32 normalized yxyx, ``landmarks`` [N, 10],
      ``landmarks_valid`` [N] bool and ``ignore`` [N] bool. N may be 0.
    """
    parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    dense = {k: tf.sparse.to_dense(v) for k, v in parsed.items() if isinstance(v, tf.SparseTensor)}
    boxes = tf.stack([dense[k] for k in _BOX_KEYS], axis=-1)
    boxes = tf.reshape(boxes, [-1, 4])
    out = {
        'height': tf.cast(parsed[IMAGE_HEIGHT], tf.int32),
        'width': tf.cast(parsed[IMAGE_WIDTH], tf.int32),
        'source_id': parsed[IMAGE_SOURCE_ID],
        'boxes': boxes,
        'landmarks': tf.reshape(dense[LANDMARKS], [-1, 2 * NUM_LANDMARKS]),
        'landmarks_valid': tf.cast(dense[LANDMARKS_VALID], tf.bool),
        'ignore': tf.cast(dense[IGNORE], tf.bool),
    }
    if decode_image:
        image = tf.io.decode_jpeg(parsed[IMAGE_ENCODED], channels=3)
        out['image'] = tf.ensure_shape(image, [None, None, 3])
    else:
        out['encoded'] = parsed[IMAGE_ENCODED]
    return out


def parse_batch(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Parses a batch of serialized examples in one op (cheaper than one parse per image),
    leaving the JPEGs encoded.

    Args:
      serialized: [K] tf.string.

    Returns:
      A dict with ``encoded``, ``source_id`` [K], ``height``, ``width`` [K] int32, and
      ragged [K, None, ...] ``boxes`` (4), ``landmarks`` (10), ``landmarks_valid`` and
      ``ignore`` (bool); unbatching gives each image the shapes of parse_example.
    """
    parsed = tf.io.parse_example(serialized, FEATURE_SPEC)
    ragged = {k: tf.RaggedTensor.from_sparse(v) for k, v in parsed.items()
              if isinstance(v, tf.SparseTensor)}
    splits = ragged[BBOX_YMIN].row_splits
    landmarks = ragged[LANDMARKS].values
    return {
        'encoded': parsed[IMAGE_ENCODED],
        'height': tf.cast(parsed[IMAGE_HEIGHT], tf.int32),
        'width': tf.cast(parsed[IMAGE_WIDTH], tf.int32),
        'source_id': parsed[IMAGE_SOURCE_ID],
        'boxes': tf.RaggedTensor.from_row_splits(
            tf.stack([ragged[k].values for k in _BOX_KEYS], axis=-1), splits),
        'landmarks': tf.RaggedTensor.from_row_splits(
            tf.reshape(landmarks, [-1, 2 * NUM_LANDMARKS]), splits),
        'landmarks_valid': tf.cast(ragged[LANDMARKS_VALID], tf.bool),
        'ignore': tf.cast(ragged[IGNORE], tf.bool),
    }


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encodes an RGB uint8 [H, W, 3] array as JPEG bytes (PIL, no TF session needed)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='JPEG', quality=quality)
    return buf.getvalue()
