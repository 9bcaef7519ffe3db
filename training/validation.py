"""Validation during training: loss and AP@0.5 (WIDER protocol) of the weight average.

The AP that picks the best checkpoint is measured on letterboxes of the validation photos or,
with ``val_max_side``, on each photo at its own size through the export's preprocessing,
decoding and NMS (model/serving.py), as detect.py and benchmarks/peers.py run it.
"""

import numpy as np
import tensorflow as tf

from data import boxes as box_lib
from data import features
from data import pipeline
from evaluation import wider
from model import anchors as anchor_lib
from model import losses
from model import postprocess
from model import serving
from model import targets as target_lib
from training import val_images


def make_validator(model, s):
    """Returns validate() for a training.loop.TrainSettings s: validation loss and AP@0.5 on images letterboxed to
    s.val_image_size (the training size when 0); with s.val_max_side, ``ap50`` is instead
    measured on each photo at its own size and the letterboxed AP is ``ap50_letterbox``.

    Photos shrunk to a 320-px training size lose their small faces, so a larger validation
    size ranks checkpoints closer to how the exported model (run at the image's own size)
    will score; the photo's own size ranks them as the export is run (by detect.py and
    benchmarks/peers.py), through the same preprocessing, decoding and NMS
    (model/serving.py). The tf.functions are built once here, so validating every epoch does
    not retrace them. Each validation also writes a few photos with their true and detected
    faces to the default summary writer (training/val_images.py).
    """
    size = s.val_image_size or s.config.image_size
    points, point_strides, _ = anchor_lib.anchor_points(size, size, s.config.strides)
    write_photos = val_images.make_photo_summary(model, s.val_records, size, s.config.strides)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        raw = model(tf.cast(batch['image'], tf.float32), training=False)
        targets = target_lib.for_batch(batch, size, s.config.strides, s.config.anchor_scale)
        terms = losses.detection_loss(raw, targets, points, point_strides)
        dets = postprocess.detect(raw, size, size, s.config.strides, score_threshold=0.05,
                                  max_detections=300)
        return terms, dets

    def letterboxed():
        ds = pipeline.build_dataset(s.val_records, s.batch_size, size, False)
        batch_terms = []
        accumulator = wider.Accumulator(iou_threshold=0.5, min_face=s.val_min_face)
        for batch in ds:
            terms, dets = eval_step(batch)
            batch_terms.append({k: float(v) for k, v in terms.items()})
            for i in range(int(tf.shape(batch['image'])[0])):
                mask = batch['face_mask'][i].numpy()
                n = int(dets['num_detections'][i])
                accumulator.add_image(
                    gt_boxes=_xywh(batch['boxes'][i].numpy()[mask], size),
                    det_boxes=_xywh(dets['boxes'][i, :n].numpy(), size),
                    det_scores=dets['scores'][i, :n].numpy(),
                    gt_ignore=batch['ignore'][i].numpy()[mask])
        metrics = losses.pool_batch_losses(batch_terms)
        metrics['ap50'] = accumulator.result().ap
        write_photos()
        return metrics

    if not s.val_max_side:
        return letterboxed

    # The export's settings (its 0.05 score floor; --max_detections=1000 for crowds).
    detector = serving.Detector(model, s.config.strides, max_side=s.val_max_side,
                                max_detections=1000)
    own_size_step = tf.function(detector.detect_images,
                                input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])

    def validate():
        metrics = letterboxed()
        metrics['ap50_letterbox'] = metrics.pop('ap50')
        metrics['ap50'] = own_size_ap(own_size_step, s.val_records, s.val_min_face)
        return metrics

    return validate


def own_size_ap(detect, val_records, min_face):
    """AP@0.5 (WIDER protocol) of detect on each photo of val_records at its own size.

    Args:
      detect: [1, H, W, 3] float32 image -> dict with ``boxes`` [1, K, 4] pixel xywh,
        ``scores`` [1, K] and ``num_detections`` [1] (the export's signature).
      val_records: glob(s) of TFRecord shards.
      min_face: faces shorter than this many pixels of the photo are ignored.
    """
    ds = tf.data.TFRecordDataset(pipeline.list_shards(val_records))
    ds = ds.map(features.parse_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    accumulator = wider.Accumulator(iou_threshold=0.5, min_face=min_face)
    for example in ds:
        h, w = int(example['height']), int(example['width'])
        dets = detect(tf.cast(example['image'], tf.float32)[None])
        n = int(dets['num_detections'][0])
        accumulator.add_image(gt_boxes=box_lib.normalized_to_xywh(example['boxes'].numpy(), h, w),
                              det_boxes=np.asarray(dets['boxes'][0, :n]),
                              det_scores=np.asarray(dets['scores'][0, :n]),
                              gt_ignore=example['ignore'].numpy())
    return accumulator.result().ap


def _xywh(boxes, size):
    return box_lib.normalized_to_xywh(boxes, size, size)
