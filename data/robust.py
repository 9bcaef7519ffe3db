"""Robustness augmentation: what makes a detector hold on photos unlike its training set.

Batched, inside the train step (training/loop.py), except the JPEG re-encoding, which is a
per-image CPU op and runs in the input pipeline (data/pipeline.crops).

| augmentation | images | what | where |
|---|---|---|---|
| copy-paste (Ghiasi et al. 2021) | face-free, 1 in 2 | the largest face of another image in the batch, at 12 px to half the crop, soft elliptical edge; it becomes a labelled face | `geometric` |
| rotation | 1 in 3 | up to 10 degrees either way; boxes are the box of the rotated face's inscribed ellipse, landmarks rotate exactly | `geometric` |
| blur | 3 in 20 | Gaussian, sigma 1-3 px at the training size | `degrade` |
| noise | 1 in 5 | Gaussian, sigma 2-12 grey levels | `degrade` |
| faded scan | 3 in 20 | contrast 0.3-0.6 and gamma 0.7-1.5 | `degrade` |
| JPEG artefacts | 3 in 20 | re-encoded at quality 10-40 | `jpeg` |
| large faces | 1 in 10 crops | a window 1.2-3 times its largest face's side around it | `data.augment.face_windows` |

Greyscale (1 in 10) and low saturation come from data.augment.photometric.
Faces that rotation pushes across the border follow data/augment.py's cut rule: a face whose
centre leaves the crop becomes ignore.
"""

import math

import tensorflow as tf

from data import augment

PASTE_PROB = 0.5
ROTATE_PROB = 1.0 / 3.0
MAX_DEGREES = 10.0
BLUR_PROB, BLUR_SIGMA = 0.15, (1.0, 3.0)
NOISE_PROB, NOISE_SIGMA = 0.2, (2.0, 12.0)
FADE_PROB, FADE_CONTRAST, FADE_GAMMA = 0.15, (0.3, 0.6), (0.7, 1.5)
JPEG_PROB, JPEG_QUALITY = 0.15, (10, 40)
LARGE_FACE_PROB = 0.1
MIN_PASTE_PX = 12.0
_FACE_KEYS = ('boxes', 'landmarks', 'landmarks_valid', 'ignore', 'face_mask')


def geometric(batch, min_face_px=augment.MIN_FACE_PX, seed=None):
    """Copy-paste onto face-free images, then small rotations, on a padded training batch.

    Args:
      batch: data/pipeline.build_dataset's dict (``image`` [B, S, S, 3] uint8 and the
        padded faces).

    Returns:
      the same keys, ``image`` as float32 0..255.
    """
    batch = dict(batch, image=tf.cast(batch['image'], tf.float32))
    batch = copy_paste(batch, min_face_px, seed)
    return rotate(batch, seed)


def _uniform(shape, lo=0.0, hi=1.0, seed=None):
    return tf.random.uniform(shape, lo, hi, seed=seed)


def copy_paste(batch, min_face_px=augment.MIN_FACE_PX, seed=None):
    """Pastes the largest face of another image onto face-free images (PASTE_PROB of them).

    The donor is the image a random shift further along the batch; a recipient whose donor
    has no face of at least MIN_PASTE_PX gets nothing. The face goes into the recipient's
    first face slot, which a face-free image leaves empty.
    """
    images, boxes = batch['image'], batch['boxes']
    b, size = tf.shape(images)[0], tf.cast(tf.shape(images)[1], tf.float32)
    wanted = batch['face_mask'] & ~batch['ignore']
    sides = tf.reduce_min(boxes[..., 2:] - boxes[..., :2], axis=-1) * size
    sides = tf.where(wanted, sides, 0.0)
    donor = tf.roll(tf.range(b), -tf.random.uniform([], 1, tf.maximum(b, 2), tf.int32, seed=seed), 0)
    face = tf.gather(tf.argmax(sides, axis=1, output_type=tf.int32), donor)
    has_face = tf.gather(tf.reduce_max(sides, axis=1), donor) >= MIN_PASTE_PX
    empty = ~tf.reduce_any(batch['face_mask'], axis=1)
    paste = empty & has_face & (_uniform([b], seed=seed) < PASTE_PROB)

    source = tf.gather_nd(boxes, tf.stack([donor, face], -1))             # [B, 4] donor frame
    source = tf.where(has_face[:, None], source, [0.0, 0.0, 1.0, 1.0])    # keeps the maths finite
    src_hw = source[:, 2:] - source[:, :2]
    side = tf.exp(_uniform([b], math.log(MIN_PASTE_PX), tf.math.log(size / 2.0), seed)) / size
    hw = src_hw * (side / tf.reduce_max(src_hw, axis=-1))[:, None]
    top_left = _uniform([b, 2], seed=seed) * (1.0 - hw)
    target = tf.concat([top_left, top_left + hw], axis=-1)
    # The output square, seen from the donor: crop_and_resize then puts source on target.
    zoom = src_hw / hw
    start = source[:, :2] - top_left * zoom
    warped = tf.image.crop_and_resize(images, tf.concat([start, start + zoom], -1), donor,
                                      tf.shape(images)[1:3], extrapolation_value=augment.PAD_VALUE)
    mask = _ellipse_mask(target, tf.shape(images)[1]) * tf.cast(paste, tf.float32)[:, None, None, None]
    out = dict(batch, image=images * (1.0 - mask) + warped * mask)
    new = {
        'boxes': target,
        'landmarks': _move_points(tf.gather_nd(batch['landmarks'], tf.stack([donor, face], -1)),
                                  source[:, :2], top_left, zoom),
        # gather_nd has no GPU kernel for bool: gathered as int8, or every step would copy
        # the batch to the CPU and back.
        'landmarks_valid': tf.cast(tf.gather_nd(tf.cast(batch['landmarks_valid'], tf.int8),
                                                tf.stack([donor, face], -1)), tf.bool),
        'ignore': tf.reduce_min(hw, axis=-1) * size < min_face_px,
        'face_mask': tf.ones([b], tf.bool),
    }
    first = tf.one_hot(tf.zeros([b], tf.int32), tf.shape(boxes)[1], on_value=True, off_value=False)
    first = first & paste[:, None]
    for key in _FACE_KEYS:
        value = batch[key]
        new_value = tf.reshape(new[key], tf.concat([[b, 1], tf.shape(value)[2:]], 0))
        out[key] = tf.where(augment.expand_like(first, value), tf.cast(new_value, value.dtype), value)
    return out


def _move_points(landmarks, source_start, target_start, zoom):
    """Normalized (y, x) pairs [B, 10] from the donor's frame to the recipient's."""
    start, target_start, zoom = (tf.tile(t, [1, 5]) for t in (source_start, target_start, zoom))
    return target_start + (landmarks - start) / zoom


def _ellipse_mask(target, size):
    """[B, S, S, 1] float: 1 inside the ellipse through a box 1.2x the target's, fading to 0
    over its outer 15% (a soft seam instead of a pasted rectangle)."""
    centres = (target[:, :2] + target[:, 2:]) / 2.0
    radii = 0.6 * (target[:, 2:] - target[:, :2])
    coords = (tf.range(size, dtype=tf.float32) + 0.5) / tf.cast(size, tf.float32)
    dy = (coords[None, :, None] - centres[:, 0, None, None]) / radii[:, 0, None, None]
    dx = (coords[None, None, :] - centres[:, 1, None, None]) / radii[:, 1, None, None]
    r = tf.sqrt(dy * dy + dx * dx)
    return tf.clip_by_value((1.0 - r) / 0.15, 0.0, 1.0)[..., None]


def rotate(batch, seed=None):
    """Rotates ROTATE_PROB of the images by up to MAX_DEGREES about their centre."""
    images = batch['image']
    b, size = tf.shape(images)[0], tf.shape(images)[1]
    angle = _uniform([b], -1.0, 1.0, seed) * (MAX_DEGREES * math.pi / 180.0)
    angle = tf.where(_uniform([b], seed=seed) < ROTATE_PROB, angle, 0.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    c = (tf.cast(size, tf.float32) - 1.0) / 2.0  # pixel indices: centres at i + 0.5
    # Output pixel (x, y) reads input R(-angle) ((x, y) - c) + c.
    transforms = tf.stack([cos, sin, c - cos * c - sin * c,
                           -sin, cos, c + sin * c - cos * c,
                           tf.zeros_like(cos), tf.zeros_like(cos)], axis=-1)
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=float(augment.PAD_VALUE), interpolation='BILINEAR', fill_mode='CONSTANT')
    boxes, landmarks = _rotate_faces(batch['boxes'], batch['landmarks'], cos, sin)
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0
    outside = ~tf.reduce_all((centres >= 0.0) & (centres <= 1.0), axis=-1)
    lm_inside = tf.reduce_all((landmarks >= 0.0) & (landmarks <= 1.0), axis=-1)
    mask = batch['face_mask']
    return dict(batch, image=rotated,
                boxes=tf.where(mask[..., None], tf.clip_by_value(boxes, 0.0, 1.0), 0.0),
                landmarks=tf.where(mask[..., None], landmarks, 0.0),
                landmarks_valid=batch['landmarks_valid'] & lm_inside & mask,
                ignore=(batch['ignore'] | outside) & mask)


def _rotate_faces(boxes, landmarks, cos, sin):
    """Boxes [B, N, 4] and landmarks [B, N, 10] (normalized) rotated about (0.5, 0.5).

    A box becomes the box of its inscribed ellipse rotated, which follows a face's outline
    more closely than the box of its rotated corners."""
    cos, sin = cos[:, None], sin[:, None]
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2.0 - 0.5
    half = (boxes[..., 2:] - boxes[..., :2]) / 2.0
    cy = sin * centre[..., 1] + cos * centre[..., 0] + 0.5
    cx = cos * centre[..., 1] - sin * centre[..., 0] + 0.5
    hy = tf.sqrt(tf.square(half[..., 1] * sin) + tf.square(half[..., 0] * cos))
    hx = tf.sqrt(tf.square(half[..., 1] * cos) + tf.square(half[..., 0] * sin))
    boxes = tf.stack([cy - hy, cx - hx, cy + hy, cx + hx], axis=-1)
    points = tf.reshape(landmarks, tf.concat([tf.shape(landmarks)[:-1], [5, 2]], 0)) - 0.5
    cos, sin = cos[..., None], sin[..., None]
    py = sin * points[..., 1] + cos * points[..., 0] + 0.5
    px = cos * points[..., 1] - sin * points[..., 0] + 0.5
    return boxes, tf.reshape(tf.stack([py, px], -1), tf.shape(landmarks))


def degrade(images, seed=None):
    """Blur, noise and faded-scan contrast on some images of a float 0..255 batch."""
    b = tf.shape(images)[0]
    pick = lambda p: _uniform([b, 1, 1, 1], seed=seed) < p  # noqa: E731
    images = tf.where(pick(BLUR_PROB), _blur(images, seed), images)
    noise = tf.random.normal(tf.shape(images), seed=seed) * _uniform([b, 1, 1, 1], *NOISE_SIGMA, seed)
    images = tf.where(pick(NOISE_PROB), images + noise, images)
    contrast = _uniform([b, 1, 1, 1], *FADE_CONTRAST, seed)
    gamma = _uniform([b, 1, 1, 1], *FADE_GAMMA, seed)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    faded = 255.0 * tf.pow(tf.clip_by_value((images - mean) * contrast + mean, 0.0, 255.0) / 255.0, gamma)
    images = tf.where(pick(FADE_PROB), faded, images)
    return tf.clip_by_value(images, 0.0, 255.0)


def _blur(images, seed=None):
    """Each image blurred by a Gaussian of its own sigma (BLUR_SIGMA): the batch is blurred
    at the two ends of the range and each image blends them."""
    lo, hi = (_gaussian(images, sigma) for sigma in BLUR_SIGMA)
    t = _uniform([tf.shape(images)[0], 1, 1, 1], seed=seed)
    return lo + t * (hi - lo)


def _gaussian(images, sigma):
    radius = int(math.ceil(2.5 * sigma))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-x * x / (2.0 * sigma * sigma))
    kernel /= tf.reduce_sum(kernel)
    channels = images.shape[-1] or 3
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode='SYMMETRIC')
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], 'VALID')
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], 'VALID')


def jpeg(image, seed=None):
    """One uint8 crop re-encoded at a low JPEG quality, JPEG_PROB of the time (input
    pipeline: the op runs on the CPU, image by image)."""
    quality = tf.random.uniform([], JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, tf.int32, seed=seed)
    return tf.cond(tf.random.uniform([], seed=seed) < JPEG_PROB,
                   lambda: tf.image.adjust_jpeg_quality(image, quality), lambda: image)
