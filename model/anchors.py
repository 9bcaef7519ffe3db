"""Anchor points: one point per cell of each stride-8/16/32 feature map.

Points are ordered level by level (stride 8 first), row-major inside a level, matching the
order in which ``model.detector`` concatenates its head outputs. Coordinates are (y, x)
pixels of the network input; a point sits at the centre of its cell, ``(i + 0.5) * stride``.
"""

import tensorflow as tf

DEFAULT_STRIDES = (8, 16, 32)


def feature_sizes(height, width, strides=DEFAULT_STRIDES):
    """Sizes of each level's map for an input of height x width (ceil, like 'same' convs)."""
    sizes = []
    h, w = height, width
    for _ in range(max(strides).bit_length() - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return [sizes[s.bit_length() - 2] for s in strides]


def anchor_points(height, width, strides=DEFAULT_STRIDES):
    """Anchor points for an input of the given size.

    Args:
      height, width: python ints or scalar int tensors (the padded network input size).
      strides: the feature strides, powers of two.

    Returns:
      points: [P, 2] float32 (y, x) pixel centres.
      point_strides: [P] float32 stride of each point.
      level_sizes: list of per-level point counts (python ints when the size is static).
    """
    points, point_strides, level_sizes = [], [], []
    for stride, (fh, fw) in zip(strides, feature_sizes(height, width, strides)):
        ys = (tf.cast(tf.range(fh), tf.float32) + 0.5) * stride
        xs = (tf.cast(tf.range(fw), tf.float32) + 0.5) * stride
        yy, xx = tf.meshgrid(ys, xs, indexing='ij')
        level = tf.reshape(tf.stack([yy, xx], axis=-1), [-1, 2])
        points.append(level)
        point_strides.append(tf.fill([tf.shape(level)[0]], float(stride)))
        level_sizes.append(fh * fw)
    return tf.concat(points, 0), tf.concat(point_strides, 0), level_sizes
