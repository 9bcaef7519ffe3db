"""The functions behind the exported signatures: images in, faces out, NMS in the graph.

Both signatures return, per image, ``boxes`` [B, K, 4] as [x, y, width, height] in pixels of
that image, ``scores`` [B, K], ``landmarks`` [B, K, 10] as (x, y) pixel pairs, and
``num_detections`` [B]; rows past num_detections are zero. Images whose long side exceeds
``max_side`` are downscaled for the network and the boxes scaled back.

With ``passes`` (the export's default passes, model/multiscale.Pass) ``detect_passes`` and
``detect_encoded`` run each image at every pass's scale and merge them as detect.py does
(model/multiscale.scaled_size and merge, the same functions inside the graph), so the
SavedModel's signatures return detect.py's detections; ``detect_images`` stays one pass.
"""

import tensorflow as tf

from data.augment import PAD_VALUE
from model import postprocess
from model.lite_network import MULTIPLE as _MULTIPLE  # the network's largest stride



class Detector:
    """Wraps a trained Keras detector with preprocessing, decoding and NMS.

    A plain class on purpose: keras.export.ExportArchive tracks the Keras model itself (a
    Keras model held in a plain tf.Module is known to convert to a TFLite file that outputs
    NaN), and these methods become its endpoints.
    """

    def __init__(self, model, strides, max_side=640, score_threshold=0.05, iou_threshold=0.4,
                 max_detections=300, passes=None):
        self._model = model
        self._passes = passes  # None: one pass at 1x (detect_encoded as before)
        self._strides = tuple(strides)
        self._max_side = max_side
        self._nms = dict(score_threshold=score_threshold, iou_threshold=iou_threshold,
                         max_detections=max_detections)

    @property
    def model(self):
        """The Keras network it wraps."""
        return self._model

    def _fit_size(self, height, width):
        """Size the network sees: downscaled so the long side is at most max_side."""
        h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        scale = tf.minimum(1.0, self._max_side / tf.maximum(h, w))
        new_h = tf.maximum(1, tf.cast(tf.round(h * scale), tf.int32))
        new_w = tf.maximum(1, tf.cast(tf.round(w * scale), tf.int32))
        return new_h, new_w

    def detect_images(self, images):
        """images: [B, H, W, 3] float32 0..255, one size for the batch."""
        padded, sizes, fitted = self.prepare(images)
        return self.finish(self._model(padded, training=False), tf.shape(padded)[1:3], sizes,
                           fitted)

    def prepare(self, images):
        """[B, H, W, 3] images -> the network's input (downscaled to max_side, padded to a
        multiple of 32), the images' sizes [B, 2] and their fitted sizes [B, 2]."""
        shape = tf.shape(images)
        new_h, new_w = self._fit_size(shape[1], shape[2])
        images = tf.cast(images, tf.float32)
        # Most photos need no resize; skipping it saves a pass over the image.
        resized = tf.cond((new_h == shape[1]) & (new_w == shape[2]), lambda: images,
                          lambda: tf.image.resize(images, [new_h, new_w]))
        batch = shape[0]
        sizes = tf.tile([[shape[1], shape[2]]], [batch, 1])
        fitted = tf.tile([[new_h, new_w]], [batch, 1])
        return _pad(resized), sizes, fitted

    def detect_passes(self, images):
        """images: [B, H, W, 3] float32 0..255, one size for the batch: each image in the
        passes, merged (detect.py's run_scales on detect_images), rows padded to
        max_detections."""
        return tf.map_fn(self._passes_one, images,
                         fn_output_signature=self._one_signature())

    def _one_signature(self):
        k = self._nms['max_detections']
        return {'boxes': tf.TensorSpec([k, 4], tf.float32),
                'scores': tf.TensorSpec([k], tf.float32),
                'landmarks': tf.TensorSpec([k, 10], tf.float32),
                'num_detections': tf.TensorSpec([], tf.int32)}

    def _passes_one(self, image):
        """[H, W, 3] float32 -> one image's merged outputs, without the batch dimension."""
        from model import multiscale
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        per_pass = []
        for p in self._passes:
            new_h, new_w = multiscale.scaled_size(height, width, p.scale, self._max_side)
            # run_scales' _resize (an image resized to its own size comes back as it was).
            resized = tf.raw_ops.ResizeBilinear(images=image[None], size=tf.stack([new_h, new_w]),
                                                half_pixel_centers=True)
            out = self.detect_images(resized)
            n = out['num_detections'][0]
            to_photo = tf.cast(tf.stack([width, height]), tf.float32) / tf.cast(
                tf.stack([new_w, new_h]), tf.float32)
            per_pass.append((out['boxes'][0, :n], out['scores'][0, :n],
                             out['landmarks'][0, :n], to_photo))
        boxes, scores, landmarks = multiscale.merge(per_pass, self._passes,
                                                    self._nms['iou_threshold'])
        k = self._nms['max_detections']
        n = tf.minimum(tf.shape(scores)[0], k)
        pad = k - n
        return {'boxes': tf.pad(boxes[:n], [[0, pad], [0, 0]]),
                'scores': tf.pad(scores[:n], [[0, pad]]),
                'landmarks': tf.pad(landmarks[:n], [[0, pad], [0, 0]]),
                'num_detections': n}

    def detect_encoded(self, encoded):
        """encoded: [B] tf.string JPEG/PNG/BMP/GIF bytes; images may differ in size. With
        passes: each image decoded and run in the passes (detect_passes)."""
        if self._passes is not None:
            def decoded(data):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                image.set_shape([None, None, 3])
                return self._passes_one(tf.cast(image, tf.float32))
            return tf.map_fn(decoded, encoded, fn_output_signature=self._one_signature())

        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            h, w = tf.shape(image)[0], tf.shape(image)[1]
            new_h, new_w = self._fit_size(h, w)
            resized = tf.image.resize(tf.cast(image, tf.float32), [new_h, new_w])
            canvas = tf.image.pad_to_bounding_box(resized - PAD_VALUE, 0, 0, self._max_side,
                                                  self._max_side) + PAD_VALUE
            return canvas, tf.stack([h, w]), tf.stack([new_h, new_w])

        canvas, sizes, fitted = tf.map_fn(
            one, encoded, fn_output_signature=(tf.TensorSpec([None, None, 3], tf.float32),
                                               tf.TensorSpec([2], tf.int32),
                                               tf.TensorSpec([2], tf.int32)))
        # Crop the shared canvas to the largest image of the batch (a single 640x480 photo
        # runs at 640x480, not at max_side squared).
        max_hw = tf.reduce_max(fitted, axis=0)
        canvas = _pad(canvas[:, :max_hw[0], :max_hw[1], :])
        return self.finish(self._model(canvas, training=False), tf.shape(canvas)[1:3], sizes,
                           fitted)

    def finish(self, raw, padded_size, sizes, fitted):
        """The network's raw outputs [B, P, C] on an input of padded_size (h, w) holding each
        image's fitted content at the top-left -> the signatures' outputs (decoding, NMS,
        boxes in the pixels of each original image of sizes [B, 2])."""
        pad_h, pad_w = padded_size[0], padded_size[1]
        dets = postprocess.detect(raw, pad_h, pad_w, self._strides, **self._nms)

        # Normalized (of the padded canvas) -> pixels of each original image.
        sizes_f = tf.cast(sizes, tf.float32)
        scale = tf.cast(fitted, tf.float32) / sizes_f                       # [B, 2] (y, x)
        canvas_hw = tf.cast(tf.stack([pad_h, pad_w]), tf.float32)
        to_px = canvas_hw[None, :] / scale                                    # [B, 2]
        yxyx = dets['boxes'] * tf.tile(to_px, [1, 2])[:, None, :]
        ymin = tf.clip_by_value(yxyx[..., 0], 0.0, sizes_f[:, 0:1])
        xmin = tf.clip_by_value(yxyx[..., 1], 0.0, sizes_f[:, 1:2])
        ymax = tf.clip_by_value(yxyx[..., 2], 0.0, sizes_f[:, 0:1])
        xmax = tf.clip_by_value(yxyx[..., 3], 0.0, sizes_f[:, 1:2])
        boxes = tf.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=-1)
        points = tf.reshape(dets['landmarks'], [tf.shape(yxyx)[0], -1, 5, 2]) * to_px[:, None, None]
        landmarks = tf.reshape(tf.reverse(points, axis=[-1]), [tf.shape(yxyx)[0], -1, 10])
        valid = tf.cast(tf.range(tf.shape(boxes)[1])[None, :] < dets['num_detections'][:, None],
                        tf.float32)
        return {'boxes': boxes * valid[..., None], 'scores': dets['scores'],
                'landmarks': landmarks * valid[..., None],
                'num_detections': dets['num_detections']}


def _pad(images):
    """Pads [B, h, w, 3] at the bottom and right to multiples of 32 with the training pad
    value; one pad op, and none for sizes already a multiple of 32 (640x480 is)."""
    shape = tf.shape(images)
    pad_h = (shape[1] + _MULTIPLE - 1) // _MULTIPLE * _MULTIPLE
    pad_w = (shape[2] + _MULTIPLE - 1) // _MULTIPLE * _MULTIPLE
    return tf.cond(
        (pad_h == shape[1]) & (pad_w == shape[2]), lambda: images,
        lambda: tf.pad(images, [[0, 0], [0, pad_h - shape[1]], [0, pad_w - shape[2]], [0, 0]],
                       constant_values=PAD_VALUE))
