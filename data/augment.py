"""Augmentations as pure functions on a parsed example dict (see data/features.parse_example).

Each function takes and returns a dict with ``image`` (float32 [H, W, 3], 0..255 after
``random_square_crop`` / ``letterbox``), ``boxes`` [N, 4] normalized yxyx, ``landmarks``
[N, 10], ``landmarks_valid`` [N] and ``ignore`` [N]. They run eagerly and inside
``Dataset.map`` alike (tests check both).

Faces cut by a crop border follow one rule: a face whose centre stays inside the crop is
kept, clipped to the crop; a face whose centre falls outside but which is still partly
visible is kept as *ignore* (neither face nor background, since part of a face is in the
picture); a face with nothing visible is removed. Faces smaller than ``min_face_px`` in the
output are marked ignore: too small to learn, too much a face to call background.
"""

import tensorflow as tf

from data import boxes as box_lib

PAD_VALUE = 114.0  # grey padding, the same for zoom-out crops and letterboxing
MIN_FACE_PX = 4.0  # default: faces under this many pixels in the output become ignore


def random_square_crop(example, output_size, scale_range=(0.3, 2.0), min_face_px=MIN_FACE_PX,
                       seed=None):
    """Crops a random square of side s * short_side (s in scale_range) and resizes it.

    A side larger than the image zooms out: the area outside the image is padded, which
    makes faces small, the regime that detectors find hardest.
    """
    image = example['image']
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.random.uniform([], scale_range[0], scale_range[1], seed=seed)
    side = scale * tf.minimum(height, width)
    y0 = tf.random.uniform([], tf.minimum(0.0, height - side), tf.maximum(0.0, height - side),
                           seed=seed)
    x0 = tf.random.uniform([], tf.minimum(0.0, width - side), tf.maximum(0.0, width - side),
                           seed=seed)
    return _crop(example, y0, x0, side, side, output_size, min_face_px)


def letterbox(example, output_size, min_face_px=MIN_FACE_PX):
    """Resizes the whole image (keeping its aspect) into the top-left of a square, padded."""
    shape = tf.shape(example['image'])
    side = tf.cast(tf.maximum(shape[0], shape[1]), tf.float32)
    return _crop(example, 0.0, 0.0, side, side, output_size, min_face_px)


def _crop(example, y0, x0, crop_h, crop_w, output_size, min_face_px):
    image = example['image']
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    crop_box = tf.stack([y0 / height, x0 / width, (y0 + crop_h) / height, (x0 + crop_w) / width])
    # crop_and_resize reads uint8 directly: casting the whole image first would cost more
    # than the crop itself on large photos.
    out = tf.image.crop_and_resize(
        image[None], crop_box[None], [0], [output_size, output_size],
        extrapolation_value=PAD_VALUE)[0]

    # Boxes into the crop's normalized frame.
    offset = tf.stack([y0 / height, x0 / width] * 2)
    frame = tf.stack([crop_h / height, crop_w / width] * 2)
    boxes = (example['boxes'] - offset) / frame
    lm_offset = tf.tile(offset[:2], [5])
    lm_frame = tf.tile(frame[:2], [5])
    landmarks = (example['landmarks'] - lm_offset) / lm_frame

    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    centre_inside = tf.reduce_all((centres >= 0.0) & (centres <= 1.0), axis=1)
    clipped = tf.clip_by_value(boxes, 0.0, 1.0)
    size_px = (clipped[:, 2:] - clipped[:, :2]) * float(output_size)
    visible = tf.reduce_all(size_px > 0.0, axis=1)
    too_small = tf.reduce_any(size_px < min_face_px, axis=1)
    ignore = example['ignore'] | ~centre_inside | too_small
    # Landmarks that leave the crop are no longer reliable targets.
    lm_inside = tf.reduce_all((landmarks >= 0.0) & (landmarks <= 1.0), axis=1)
    result = dict(example)
    result.update({
        'image': out,
        'boxes': tf.boolean_mask(clipped, visible),
        'landmarks': tf.boolean_mask(landmarks, visible),
        'landmarks_valid': tf.boolean_mask(example['landmarks_valid'] & lm_inside, visible),
        'ignore': tf.boolean_mask(ignore, visible),
    })
    return result


def random_flip(example, seed=None):
    """Mirrors image, boxes and landmarks (with the left/right point swap) half the time."""
    def flip():
        boxes, landmarks = box_lib.flip_left_right(example['boxes'], example['landmarks'])
        return tf.image.flip_left_right(example['image']), boxes, landmarks

    def keep():
        return example['image'], example['boxes'], example['landmarks']

    image, boxes, landmarks = tf.cond(tf.random.uniform([], seed=seed) < 0.5, flip, keep)
    result = dict(example)
    result.update({'image': image, 'boxes': boxes, 'landmarks': landmarks})
    return result


def photometric(example, seed=None):
    """Brightness, contrast and saturation jitter, sometimes grey; image stays 0..255.

    Saturation is a blend with the grey image rather than tf.image.random_saturation, which
    converts to HSV and back and costs more than all other augmentations together.
    """
    image = example['image']
    grey = tf.reduce_sum(image * [0.299, 0.587, 0.114], axis=-1, keepdims=True)
    saturation = tf.where(tf.random.uniform([], seed=seed) < 0.1, 0.0,
                          tf.random.uniform([], 0.6, 1.4, seed=seed))
    image = grey + saturation * (image - grey)
    contrast = tf.random.uniform([], 0.7, 1.3, seed=seed)
    mean = tf.reduce_mean(image)
    image = mean + contrast * (image - mean)
    image = image + tf.random.uniform([], -0.15, 0.15, seed=seed) * 255.0
    result = dict(example)
    result['image'] = tf.clip_by_value(image, 0.0, 255.0)
    return result
