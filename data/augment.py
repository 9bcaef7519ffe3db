"""Augmentations as pure functions: square crops decoded from the JPEG, and colour jitter.

A crop goes in three steps, so that the work done once per image is only decoding and
resizing, and everything else runs on whole batches (tf.data runs a function's small ops
one by one, and per image they cost as much as the resize):

1. ``plan_crops`` (a batch of photo sizes): draws each square window (random in training,
   the whole photo letterboxed otherwise) and a mirror flag, and works out which pixels to
   decode, how large to resize them, and where they land in the output square.
2. ``render`` (one image): decodes only the window's part of the JPEG
   (``tf.io.decode_and_crop_jpeg``), resizes it and pads it grey: uint8 [S, S, 3].
3. ``place_faces`` (a padded batch of faces): moves boxes and landmarks into the crops.

``photometric`` runs on whole batches inside the train step (on the accelerator). All of
them run eagerly and inside ``Dataset.map`` or ``tf.function`` alike (tests check both).

Faces cut by a crop border follow one rule: a face whose centre stays inside the crop is
kept, clipped to the crop; a face whose centre falls outside but which is still partly
visible is kept as *ignore* (neither face nor background, since part of a face is in the
picture); a face with nothing visible is removed. Faces smaller than ``min_face_px`` in the
output are marked ignore: too small to learn, too much a face to call background.
"""

import tensorflow as tf

from data import boxes as box_lib

PAD_VALUE = 114  # grey padding, the same for zoom-out crops and letterboxing
MIN_FACE_PX = 4.0  # default: faces under this many pixels in the output become ignore
PLAN_KEYS = ('window', 'resize', 'cut', 'keep', 'pad_before', 'flip', 'offset', 'scale')


def random_windows(height, width, scale_range, seed=None):
    """Random squares of side s * short_side (s uniform in scale_range) per photo.

    A side larger than the photo zooms out: the area outside is padded, which makes faces
    small, the regime that detectors find hardest.

    Args:
      height, width: [K] float32 photo sizes in pixels.

    Returns:
      (y0, x0, side) [K] float32 each, and flip [K] bool (half of them).
    """
    shape = tf.shape(height)
    side = tf.random.uniform(shape, scale_range[0], scale_range[1], seed=seed) * tf.minimum(height, width)
    y0 = _uniform_between(tf.minimum(0.0, height - side), tf.maximum(0.0, height - side), seed)
    x0 = _uniform_between(tf.minimum(0.0, width - side), tf.maximum(0.0, width - side), seed)
    return (y0, x0, side), tf.random.uniform(shape, seed=seed) < 0.5


def face_windows(height, width, windows, boxes, ignore, fraction, side_range=(1.2, 3.0),
                 seed=None):
    """Replaces a fraction of the windows by squares around each photo's largest face, of
    side_range times its longer side, so that faces fill the crop (data/robust.py).

    Args:
      height, width: [K] float32; windows: (y0, x0, side) [K] each (random_windows');
      boxes: ragged [K, None, 4] normalized yxyx; ignore: ragged [K, None] bool.
    """
    hw = tf.stack([height, width], axis=-1)
    px = tf.concat([boxes[..., :2] * hw[:, None], boxes[..., 2:] * hw[:, None]], axis=-1)
    longer = tf.where(ignore, 0.0, tf.reduce_max(px[..., 2:] - px[..., :2], axis=-1))
    # One zero column more, so that a batch of face-free photos has something to reduce.
    longer = tf.pad(longer.to_tensor(0.0), [[0, 0], [0, 1]])
    best = tf.argmax(longer, axis=1, output_type=tf.int32)
    face = tf.gather(tf.pad(px.to_tensor(0.0), [[0, 0], [0, 1], [0, 0]]), best, batch_dims=1)
    face_side = tf.reduce_max(longer, axis=1)                               # [K]
    shape = tf.shape(height)
    side = face_side * tf.random.uniform(shape, side_range[0], side_range[1], seed=seed)
    # The face lands anywhere inside the window.
    y0 = face[:, 0] - tf.random.uniform(shape, seed=seed) * (side - (face[:, 2] - face[:, 0]))
    x0 = face[:, 1] - tf.random.uniform(shape, seed=seed) * (side - (face[:, 3] - face[:, 1]))
    use = (tf.random.uniform(shape, seed=seed) < fraction) & (face_side >= 8.0)
    return tuple(tf.where(use, new, old) for new, old in zip((y0, x0, side), windows))


def letterbox_windows(height, width):
    """The whole photo, keeping its aspect, in the top-left of the square; never mirrored."""
    zero = tf.zeros_like(height)
    return (zero, zero, tf.maximum(height, width)), tf.zeros_like(height, dtype=tf.bool)


def plan_crops(height, width, windows, flip, output_size):
    """What render() and place_faces() do for each photo's window.

    The window's part of the photo, rounded out to whole pixels, is decoded alone, resized
    bilinearly to whole output pixels and placed at a whole-pixel offset of the output
    square (cut where it overhangs), so the mapping from photo to output differs from the
    window's by under a pixel; the plan carries the exact one for the boxes.

    Args:
      height, width: [K] float32 photo sizes; windows: (y0, x0, side) [K] float32 each;
      flip: [K] bool.

    Returns:
      dict of [K, ...] tensors (PLAN_KEYS): ``window`` int32 [K, 4] (top, left, rows,
      columns) to decode, ``resize`` [K, 2], ``cut`` [K, 2] (leading pixels dropped),
      ``keep`` [K, 2], ``pad_before`` [K, 2], ``flip`` [K], and ``offset``, ``scale``
      [K, 2] float32: normalized photo (y, x) lands at offset + (y, x) * scale in the
      (unmirrored) output's normalized frame.
    """
    y0, x0, side = windows
    size = tf.stack([height, width], axis=-1)                          # [K, 2]
    start = tf.stack([y0, x0], axis=-1)
    zoom = float(output_size) / side[:, None]
    lo = tf.clip_by_value(tf.floor(tf.maximum(start, 0.0)), 0.0, size - 1.0)
    hi = tf.clip_by_value(tf.math.ceil(tf.minimum(start + side[:, None], size)), lo + 1.0, size)
    resized = tf.maximum(tf.round((hi - lo) * zoom), 1.0)
    place = tf.round((lo - start) * zoom)                               # may be < 0 or past S
    cut = tf.maximum(-place, 0.0)
    before = tf.maximum(place, 0.0)
    keep = tf.maximum(tf.minimum(resized - cut, output_size - before), 0.0)
    pixel_scale = resized / (hi - lo)
    as_int = lambda t: tf.cast(t, tf.int32)  # noqa: E731
    return {
        'window': as_int(tf.concat([lo, hi - lo], axis=-1)), 'resize': as_int(resized),
        'cut': as_int(cut), 'keep': as_int(keep), 'pad_before': as_int(before), 'flip': flip,
        'scale': size * pixel_scale / float(output_size),
        'offset': (place - lo * pixel_scale) / float(output_size),
    }


def render(encoded, plan, output_size):
    """uint8 [S, S, 3]: one photo's crop, decoding only the pixels its window covers.

    plan: one image's row of plan_crops' dict.
    """
    part = tf.io.decode_and_crop_jpeg(encoded, plan['window'], channels=3)
    # Resizing float pixels is twice as fast as resizing the uint8 ones (measured at 320 px).
    part = tf.image.resize(tf.cast(part, tf.float32), plan['resize'])
    part = tf.cast(part + 0.5, tf.uint8)  # rounds: bilinear values stay in 0..255
    part = tf.slice(part, tf.concat([plan['cut'], [0]], 0), tf.concat([plan['keep'], [3]], 0))
    before, keep = plan['pad_before'], plan['keep']
    image = tf.pad(part, [[before[0], output_size - before[0] - keep[0]],
                          [before[1], output_size - before[1] - keep[1]], [0, 0]],
                   constant_values=PAD_VALUE)
    image = tf.cond(plan['flip'], lambda: tf.reverse(image, axis=[1]), lambda: image)
    return tf.ensure_shape(image, [output_size, output_size, 3])


def place_faces(faces, plan, output_size, min_face_px=MIN_FACE_PX):
    """Moves a padded batch of faces into their crops.

    Args:
      faces: dict of ``boxes`` [B, N, 4] normalized yxyx of the photo, ``landmarks``
        [B, N, 10], ``landmarks_valid``, ``ignore`` and ``face_mask`` [B, N] (False on
        padding).
      plan: plan_crops' dict for the same B images.

    Returns:
      the same keys in the crops' normalized frame: boxes clipped to the crop, faces with
      nothing visible masked off (``face_mask`` False, values zeroed), the cut rule and
      min_face_px applied to ``ignore``.
    """
    scale, offset = plan['scale'][:, None, :], plan['offset'][:, None, :]
    boxes = faces['boxes'] * tf.tile(scale, [1, 1, 2]) + tf.tile(offset, [1, 1, 2])
    landmarks = faces['landmarks'] * tf.tile(scale, [1, 1, 5]) + tf.tile(offset, [1, 1, 5])
    flipped_boxes, flipped_landmarks = box_lib.flip_left_right(boxes, landmarks)
    flip = plan['flip'][:, None, None]
    boxes = tf.where(flip, flipped_boxes, boxes)
    landmarks = tf.where(flip, flipped_landmarks, landmarks)

    centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0
    centre_inside = tf.reduce_all((centres >= 0.0) & (centres <= 1.0), axis=-1)
    clipped = tf.clip_by_value(boxes, 0.0, 1.0)
    size_px = (clipped[..., 2:] - clipped[..., :2]) * float(output_size)
    visible = faces['face_mask'] & tf.reduce_all(size_px > 0.0, axis=-1)
    too_small = tf.reduce_any(size_px < min_face_px, axis=-1)
    # Landmarks that leave the crop are no longer reliable targets.
    lm_inside = tf.reduce_all((landmarks >= 0.0) & (landmarks <= 1.0), axis=-1)
    out = {'boxes': clipped, 'landmarks': landmarks, 'face_mask': visible,
           'landmarks_valid': faces['landmarks_valid'] & lm_inside,
           'ignore': faces['ignore'] | ~centre_inside | too_small}
    return {k: tf.where(expand_like(visible, v), v, tf.zeros_like(v)) for k, v in out.items()}


def expand_like(mask, value):
    """mask [B, N] reshaped to broadcast against value [B, N, ...]."""
    return tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones([len(value.shape) - 2], tf.int32)], 0))


def _uniform_between(lo, hi, seed):
    return lo + tf.random.uniform(tf.shape(lo), seed=seed) * (hi - lo)


def photometric(images, seed=None):
    """Brightness, contrast and saturation jitter per image, sometimes grey.

    Args:
      images: [B, H, W, 3] uint8 or float 0..255.

    Returns:
      [B, H, W, 3] float32 0..255: contrast c around the mean of the image saturated by s,
      plus brightness b. Saturation is a blend with the grey image rather than
      tf.image.random_saturation (HSV and back), and the three are folded into one
      weighted sum of the image and its grey, so a batch is read about three times.
    """
    images = tf.cast(images, tf.float32)

    def uniform(lo=0.0, hi=1.0):
        return tf.random.uniform([tf.shape(images)[0], 1, 1, 1], lo, hi, seed=seed)

    saturation = tf.where(uniform() < 0.1, 0.0, uniform(0.6, 1.4))
    contrast = uniform(0.7, 1.3)
    brightness = uniform(-0.15, 0.15) * 255.0
    grey = tf.reduce_sum(images * [0.299, 0.587, 0.114], axis=-1, keepdims=True)
    mean_grey = tf.reduce_mean(grey, axis=[1, 2, 3], keepdims=True)
    mean = mean_grey + saturation * (tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True) -
                                     mean_grey)
    # contrast * (grey + saturation * (image - grey) - mean) + mean + brightness
    out = (contrast * saturation) * images + (contrast * (1.0 - saturation)) * grey
    return tf.clip_by_value(out + ((1.0 - contrast) * mean + brightness), 0.0, 255.0)
