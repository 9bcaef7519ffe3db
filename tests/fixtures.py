"""Test fixtures made in code: FaceRecords and tiny TFRecord shards (no downloads)."""

import os

import numpy as np
import tensorflow as tf

from data import features


def make_face_record(boxes=(), height=96, width=128, landmarks=None, landmarks_valid=None,
                     ignore=None, source_id='fixture', seed=0):
    """A FaceRecord whose image has a bright ellipse where each face box is.

    Args:
      boxes: normalized yxyx boxes, any number (0 included).
      landmarks: optional [N, 10]; defaults to points placed inside each box.
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=[height, width, 3]).astype(np.uint8)
    texture = rng.integers(0, 40, size=[height, width, 3]).astype(np.uint8)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    yy, xx = np.mgrid[0:height, 0:width]
    for ymin, xmin, ymax, xmax in boxes:
        cy, cx = (ymin + ymax) / 2 * height, (xmin + xmax) / 2 * width
        ry, rx = max((ymax - ymin) / 2 * height, 1), max((xmax - xmin) / 2 * width, 1)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image[inside] = np.array([200, 160, 130], np.uint8) + texture[inside]
    if landmarks is None:
        fractions = np.array([[0.35, 0.3], [0.35, 0.7], [0.55, 0.5], [0.75, 0.35], [0.75, 0.65]])
        landmarks = np.stack([
            np.stack([b[0] + fractions[:, 0] * (b[2] - b[0]),
                      b[1] + fractions[:, 1] * (b[3] - b[1])], -1).ravel() for b in boxes
        ]) if len(boxes) else np.zeros([0, 10])
        if landmarks_valid is None:
            landmarks_valid = np.ones(len(boxes), np.int64)
    return features.FaceRecord(
        source_id=source_id, encoded=features.encode_jpeg(image, quality=95),
        height=height, width=width, boxes=boxes, landmarks=landmarks,
        landmarks_valid=landmarks_valid, ignore=ignore)


def random_records(num, seed=0, max_faces=4, height=96, width=128):
    """num records with 0..max_faces random faces each (the first one has none)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num):
        n = 0 if i == 0 else int(rng.integers(0, max_faces + 1))
        sizes = rng.uniform(0.15, 0.5, size=[n, 1])
        tops = rng.uniform(0, 1 - sizes, size=[n, 2])
        boxes = np.concatenate([tops, tops + sizes], axis=1)
        records.append(make_face_record(boxes, height, width, source_id=f'fixture/{i}',
                                        seed=seed + i))
    return records


def write_tiny_shards(directory, records, prefix='train', num_shards=2):
    """Writes records round-robin into {prefix}-{i:05d}-of-{n:05d}.tfrecord; returns the glob."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f'{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord')
             for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for k, record in enumerate(records):
        writers[k % num_shards].write(features.to_example(record).SerializeToString())
    for w in writers:
        w.close()
    return os.path.join(directory, f'{prefix}-*-of-{num_shards:05d}.tfrecord')
