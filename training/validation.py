"""Validation during training: loss and AP@0.5 (WIDER protocol) of the weight average.

The AP that picks the best checkpoint is measured on letterboxes of the validation photos or,
with ``val_max_side``, on each photo at its own size through the export's preprocessing,
decoding and NMS (model/serving.py), as detect.py and benchmarks/peers.py run it. With
``val_variants`` (evaluation/variants.py: grey, blurred, JPEG-degraded, large-face crops...)
each variant's AP is reported as ``ap50/<variant>`` and ``ap50_mean``, the mean of the plain
AP and those, picks it instead.
"""

import numpy as np
import tensorflow as tf

from data import boxes as box_lib
from data import features
from data import pipeline
from evaluation import variants
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
        return _with_variants(letterboxed, model, s)
    own_size_step = _detect_step(model, s, s.val_max_side)

    def validate():
        metrics = letterboxed()
        metrics['ap50_letterbox'] = metrics.pop('ap50')
        metrics['ap50'] = own_size_ap(own_size_step, s.val_records, s.val_min_face)
        return metrics

    return _with_variants(validate, model, s, own_size_step)


def _detect_step(model, s, max_side):
    """The export's detect_images (its 0.05 score floor; --max_detections=1000 for crowds) on
    one photo at its own size, long side at most max_side, as a tf.function."""
    detector = serving.Detector(model, s.config.strides, max_side=max_side, max_detections=1000)
    return tf.function(detector.detect_images,
                       input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])


def _with_variants(validate, model, s, own_size_step=None):
    """validate() plus ``ap50/<variant>`` for each of s.val_variants (evaluation/variants.py)
    and ``ap50_mean``, the mean of ap50 and those, which then picks the best checkpoint.

    Variants run through the export's path: with val_max_side as ap50 does; without it at
    long side val_image_size, min_face counted at that letterbox size as ap50 counts it. A
    variant that leaves no face to count (``large`` on photos of small faces) is left out.
    """
    if not s.val_variants:
        return validate
    side = s.val_image_size or s.config.image_size
    step = own_size_step or _detect_step(model, s, side)
    count_side = 0 if s.val_max_side else side

    def with_variants():
        metrics = validate()
        aps = [metrics['ap50']]
        for name in s.val_variants:
            ap = own_size_ap(step, s.val_records, s.val_min_face, name, count_side)
            if not np.isfinite(ap):
                print(f'validation variant {name}: no face to count, left out', flush=True)
                continue
            metrics[f'ap50/{name}'] = ap
            aps.append(ap)
        metrics['ap50_mean'] = float(np.mean(aps))
        return metrics

    return with_variants


def own_size_ap(detect, val_records, min_face, variant=None, count_side=0):
    """AP@0.5 (WIDER protocol) of detect on each photo of val_records at its own size.

    Args:
      detect: [1, H, W, 3] float32 image -> dict with ``boxes`` [1, K, 4] pixel xywh,
        ``scores`` [1, K] and ``num_detections`` [1] (the export's signature).
      val_records: glob(s) of TFRecord shards.
      min_face: faces shorter than this many pixels of the photo are ignored.
      variant: an evaluation.variants name: each photo is degraded (or left out) first.
      count_side: > 0: min_face counts pixels of the photo letterboxed to this side (as
        the letterboxed AP counts them), not of the photo.
    """
    ds = tf.data.TFRecordDataset(pipeline.list_shards(val_records))
    ds = ds.map(features.parse_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    accumulator = wider.Accumulator(iou_threshold=0.5, min_face=min_face)
    for example in ds:
        photo = _photo(example, variant)
        if photo is None:
            continue
        h, w = photo.rgb.shape[:2]
        dets = detect(tf.cast(photo.rgb, tf.float32)[None])
        n = int(dets['num_detections'][0])
        scale = count_side / max(h, w) if count_side else 1.0
        accumulator.add_image(gt_boxes=box_lib.normalized_to_xywh(photo.boxes, h, w) * scale,
                              det_boxes=np.asarray(dets['boxes'][0, :n]) * scale,
                              det_scores=np.asarray(dets['scores'][0, :n]),
                              gt_ignore=photo.ignore)
    return accumulator.result().ap


def _photo(example, variant):
    """The parsed example as a variants.Variant, degraded by variant (None: left out)."""
    rgb, boxes, ignore = (example['image'].numpy(), example['boxes'].numpy(),
                          example['ignore'].numpy())
    if not variant:
        return variants.Variant(rgb, boxes, ignore)
    return variants.apply(variant, rgb, boxes, ignore, example['source_id'].numpy())


def _xywh(boxes, size):
    return box_lib.normalized_to_xywh(boxes, size, size)
