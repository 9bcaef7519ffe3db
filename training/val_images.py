"""Validation photos in TensorBoard: the first few validation images, the same ones each
time, with the true faces and the weight average's detections drawn on them.

| What | Look |
|---|---|
| summary | ``val/photos`` in the val writer, at each validation's step (``tf.summary.image``) |
| photos | the first ``NUM_PHOTOS`` of the validation records, letterboxed to the validation size |
| true faces | green boxes (``TRUE_COLOUR``) |
| detections | red boxes with their scores (``PREDICTED_COLOUR``), those scoring >= ``MIN_SCORE`` |

As TF Model Garden's detection tasks show boxes on validation images; drawn by
common/drawing.py, as detect.py draws its PNGs.
"""

import numpy as np
import tensorflow as tf

from common import drawing
from data import boxes as box_lib
from data import pipeline
from model import postprocess

NUM_PHOTOS = 4
MIN_SCORE = 0.3
TRUE_COLOUR = (0, 255, 0)
PREDICTED_COLOUR = (255, 0, 0)


def make_photo_summary(model, val_records, size, strides):
    """Returns write(): draws the photos with model's detections and writes them as an image
    summary to the default writer (a no-op without one). The photos are read once, here.

    Args:
      model: the network (raw outputs), as validation runs it.
      val_records: glob(s) of validation TFRecord shards.
      size: the side the photos are letterboxed to.
      strides: the model's strides (DetectorConfig.strides).
    """
    batch = next(iter(pipeline.build_dataset(val_records, NUM_PHOTOS, size, False)), None)
    if batch is None:
        return lambda: None
    pixels = batch['image'].numpy()
    true = [box_lib.normalized_to_xywh(b[m], size, size)
            for b, m in zip(batch['boxes'].numpy(), batch['face_mask'].numpy())]

    @tf.function
    def predict(images):
        return postprocess.detect(model(images, training=False), size, size, strides,
                                  score_threshold=MIN_SCORE, max_detections=50)

    def write():
        dets = predict(tf.cast(pixels, tf.float32))
        photos = []
        for i, image in enumerate(pixels):
            n = int(dets['num_detections'][i])
            photo = drawing.draw_faces(drawing.to_image(image), true[i], TRUE_COLOUR)
            drawing.draw_faces(photo, box_lib.normalized_to_xywh(dets['boxes'][i, :n], size, size),
                               PREDICTED_COLOUR, dets['scores'][i, :n].numpy())
            photos.append(np.asarray(photo))
        tf.summary.image('val/photos', np.stack(photos), max_outputs=NUM_PHOTOS)

    return write
