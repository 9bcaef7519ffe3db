"""The network: a depthwise-separable backbone, a small FPN and one shared head.

``build_detector`` returns a Keras model from an image batch (float, 0..255, any size that
is a multiple of 32) to raw head outputs ``[B, P, 15]`` in float32, one row per anchor point
(see model/anchors.py for their order): column 0 is the face logit, 1:5 the box distances
(top, left, bottom, right) before the softplus, 5:15 the landmark offsets; with
``quality_head`` a 16th column is the IoU logit. Turning them into boxes and scores is
model/postprocess.py's job; the network knows no box math.
"""

import dataclasses
import json
import math
import re

import keras
import numpy as np
from keras import layers

from model.anchors import DEFAULT_STRIDES

# The feature levels a network may have: strides 8/16/32, or those plus a stride-4 level (P2)
# on the stem's features for faces of 8-16 px (as tiny-face detectors add one).
FINE_STRIDES = (4,) + DEFAULT_STRIDES
SUPPORTED_STRIDES = (DEFAULT_STRIDES, FINE_STRIDES)

NUM_OUTPUTS = 15  # 1 logit + 4 distances + 10 landmark offsets (+ 1 IoU logit: quality_head)
CLS, BOX, LMK, QUALITY = slice(0, 1), slice(1, 5), slice(5, 15), slice(15, 16)
PRIOR_PROBABILITY = 0.01


@dataclasses.dataclass
class DetectorConfig:
    """Everything needed to rebuild the same network (saved as model_config.json)."""
    width: float = 1.0           # channel multiplier
    neck_channels: int = 48
    # Backbone channels and units at strides 8, 16 and 32 (before width). Configs written
    # before these fields existed load with the defaults, which is the network they describe.
    stage_channels: tuple = (48, 64, 96)
    stage_units: tuple = (3, 4, 3)
    strides: tuple = DEFAULT_STRIDES
    anchor_scale: float = 4.0    # anchor box side = anchor_scale * stride (for assignment)
    image_size: int = 256        # training crop side; inference runs at any multiple of 32
    # Channels of the stride-4 stem (before width); configs from before this field had 24.
    stem_channels: int = 24
    # Depthwise + pointwise units in the shared head; units after the first are residual
    # and start as the identity (zero pointwise), so --init_from can add them to a trained
    # network. Configs from before this field had one.
    head_units: int = 1
    # A 16th output predicts the IoU of the point's box with its face (learned on positives
    # only) while the face logit learns face or not (1 on every positive); the score is
    # their product (postprocess.scores), as YuNet combines cls and obj. Without it the face
    # logit learns the IoU itself (quality focal loss), so a face boxed at IoU 0.6 is taught
    # to score 0.6. Configs from before this field had none.
    quality_head: bool = False

    def __post_init__(self):
        stages = tuple(self.stage_channels) + tuple(self.stage_units)
        if self.stem_channels < 1:
            raise ValueError(f'stem_channels must be positive, got {self.stem_channels}')
        if self.head_units < 1:
            raise ValueError(f'head_units must be at least 1, got {self.head_units}')
        if tuple(self.strides) not in SUPPORTED_STRIDES:
            raise ValueError(f'strides must be one of {SUPPORTED_STRIDES}, got {self.strides}')
        if len(self.stage_channels) != 3 or len(self.stage_units) != 3 or min(stages) < 1:
            raise ValueError('stage_channels and stage_units need 3 positive integers each '
                             f'(strides 8, 16, 32), got {self.stage_channels} and '
                             f'{self.stage_units}')

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        for key in ('strides', 'stage_channels', 'stage_units'):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def _channels(c, width):
    return max(8, int(round(c * width / 8)) * 8)


def _bn(x, name, folded):
    """Batch norm, or nothing when building the folded (inference) network, whose convs
    carry the norm in their kernels and bias (see fold_batch_norms)."""
    return x if folded else layers.BatchNormalization(name=name)(x)


def _conv(filters, kernel, stride, name, folded):
    return layers.Conv2D(filters, kernel, stride, padding='same', use_bias=folded, name=name)


def _dwconv(stride, name, folded):
    return layers.DepthwiseConv2D(3, stride, padding='same', use_bias=folded, name=name)


def _conv_bn(x, filters, kernel, stride, name, folded=False):
    x = _conv(filters, kernel, stride, name, folded)(x)
    x = _bn(x, name + '_bn', folded)
    return layers.ReLU(name=name + '_relu')(x)


def _dw_block(x, filters, stride, name, folded=False):
    """Depthwise 3x3 + pointwise 1x1, with a residual when the shape allows (neck)."""
    inputs = x
    x = _bn(_dwconv(stride, name + '_dw', folded)(x), name + '_dw_bn', folded)
    x = layers.ReLU(name=name + '_dw_relu')(x)
    x = _bn(_conv(filters, 1, 1, name + '_pw', folded)(x), name + '_pw_bn', folded)
    if stride == 1 and inputs.shape[-1] == filters:
        x = layers.Add(name=name + '_add')([inputs, x])
    return layers.ReLU(name=name + '_relu')(x)


def _unit(x, filters, stride, name, folded=False):
    """One backbone unit with a single batch norm: pointwise 1x1 and depthwise 3x3, as in
    YuNet's ConvDPUnit. A downsampling unit runs the depthwise (stride 2) first, so the
    pointwise works at the lower resolution. Residual when the shape allows.

    On CPUs these layers are memory-bound: every op reads and writes the whole feature map,
    so fewer ops per unit (one BN, one ReLU) trains about twice as fast as a MobileNet
    block with two of each (measured: 53 vs 23 images/s at 320 px, batch 32, 2 cores).
    """
    inputs = x
    if stride == 2:
        x = _dwconv(2, name + '_dw', False)(x)
        x = _conv(filters, 1, 1, name + '_pw', folded)(x)
    else:
        x = _conv(filters, 1, 1, name + '_pw', False)(x)
        x = _dwconv(1, name + '_dw', folded)(x)
    x = _bn(x, name + '_bn', folded)
    if stride == 1 and inputs.shape[-1] == filters:
        x = layers.Add(name=name + '_add')([inputs, x])
    return layers.ReLU(name=name + '_relu')(x)


# Pixels 0..255 -> -1..1 before the stem (the folded network does it inside the stem).
INPUT_SCALE, INPUT_OFFSET = 1 / 127.5, -1.0


def level_tag(stride):
    """The suffix of a feature level's layer names: '0', '1', '2' for strides 8, 16, 32 (the
    names networks had before the stride-4 level) and 's4' for stride 4, so a network with
    the stride-4 level holds every layer of one without it under the same name."""
    return 's4' if stride == 4 else str(DEFAULT_STRIDES.index(stride))


def _backbone(x, config, folded=False):
    """Returns the feature maps at config.strides: the stem's (stride 4) when the network
    has that level, then the stages' at strides 8, 16 and 32.

    The stem is a 4x4 convolution with stride 4 (a patch embedding): nothing runs at
    stride 2, where each op would touch a feature map as large as the image itself.
    """
    c = lambda n: _channels(n, config.width)  # noqa: E731
    x = _conv_bn(x, c(config.stem_channels), 4, 4, 'stem', folded)       # /4
    outputs = [x] if 4 in config.strides else []
    for level, (channels, units) in enumerate(zip(config.stage_channels, config.stage_units)):
        x = _unit(x, c(channels), 2, f's{level}_0', folded)        # /8, /16, /32
        for i in range(1, units):
            x = _unit(x, c(channels), 1, f's{level}_{i}', folded)
        outputs.append(x)
    return outputs


def _fpn(features, strides, channels, folded=False):
    """Top-down FPN: 1x1 laterals, upsample-and-add, then a depthwise 3x3 smoothing."""
    tags = [level_tag(s) for s in strides]
    laterals = [_conv_bn(f, channels, 1, 1, f'fpn_lat{t}', folded)
                for t, f in zip(tags, features)]
    outputs = [laterals[-1]]
    for i in range(len(laterals) - 2, -1, -1):
        up = layers.UpSampling2D(2, name=f'fpn_up{tags[i]}')(outputs[0])
        outputs.insert(0, layers.Add(name=f'fpn_add{tags[i]}')([laterals[i], up]))
    return [_dw_block(f, channels, 1, f'fpn_out{t}', folded) for t, f in zip(tags, outputs)]


def num_outputs(config):
    """Columns of the raw output: NUM_OUTPUTS, plus the IoU logit with quality_head."""
    return NUM_OUTPUTS + int(config.quality_head)


def _head_prefix(unit):
    """Name prefix of head unit `unit`'s layers: 'head_' for the first (the names networks
    had before head_units), then 'head1_', 'head2_', ... (fold_batch_norms and widen_weights
    find the units by these names)."""
    return 'head_' if unit == 0 else f'head{unit}_'


def build_detector(config: DetectorConfig = DetectorConfig(), folded=False) -> keras.Model:
    """Builds the detector. Input: [B, H, W, 3] float 0..255, H and W multiples of 32.

    folded=True builds the inference twin without batch-norm layers and without the input
    normalization, for fold_batch_norms.
    """
    images = keras.Input([None, None, 3], name='images')
    x = images if folded else layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET,
                                               name='normalize')(images)
    channels = _channels(config.neck_channels, config.width)
    features = _fpn(_backbone(x, config, folded), config.strides, channels, folded)

    # One head shared by all levels: distances are in units of the level's stride, so the
    # same weights serve every scale (as in FCOS, GFL and SCRFD). Batch norm stays per level
    # because each level's statistics differ (folded, each level gets its own depthwise).
    head_dw = _dwconv(1, 'head_dw', False)
    head_pw = layers.Conv2D(channels, 1, activation='relu', name='head_pw')
    # Further units: x + pointwise(relu(bn(depthwise(x)))), the pointwise starting at zero.
    extra = [(_head_prefix(k), _dwconv(1, _head_prefix(k) + 'dw', False),
              layers.Conv2D(channels, 1, name=_head_prefix(k) + 'pw', kernel_initializer='zeros'))
             for k in range(1, config.head_units)]
    bias = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    outputs_per_point = num_outputs(config)
    head_out = layers.Conv2D(
        outputs_per_point, 1, name='head_out',
        bias_initializer=keras.initializers.Constant([bias] + [0.0] * (outputs_per_point - 1)))

    def depthwise(prefix, shared, x, level):
        if folded:
            return _dwconv(1, f'{prefix}dw{level}', True)(x)
        return layers.BatchNormalization(name=f'{prefix}bn{level}')(shared(x))

    outputs = []
    for i, f in zip(map(level_tag, config.strides), features):
        y = head_pw(layers.ReLU(name=f'head_relu{i}')(depthwise(_head_prefix(0), head_dw, f, i)))
        for prefix, dw, pw in extra:
            z = pw(layers.ReLU(name=f'{prefix}relu{i}')(depthwise(prefix, dw, y, i)))
            y = layers.ReLU(name=f'{prefix}out{i}')(layers.Add(name=f'{prefix}add{i}')([y, z]))
        y = head_out(y)
        outputs.append(layers.Reshape([-1, outputs_per_point], name=f'flatten{i}')(y))
    raw = layers.Concatenate(axis=1, name='concat')(outputs)
    # Heads emit float32 whatever the compute policy, so losses and NMS run in float32.
    raw = layers.Activation('linear', dtype='float32', name='raw')(raw)
    return keras.Model(images, raw, name='facedet')


def fold_batch_norms(model, config):
    """Returns the inference twin of a trained detector with every batch norm folded into
    the convolution before it (kernel * s, bias = beta - mean * s, s = gamma / sqrt(var +
    eps)): the same outputs with one op less per norm. On a 2-core CPU the norms were about
    a fifth of the forward time at 640x480.

    The input normalization goes into the stem too (kernel * INPUT_SCALE, bias + kernel sums
    * INPUT_OFFSET), sparing two passes over the image. That is exact because the stem's 4x4
    stride-4 convolution pads nothing on inputs whose sides are multiples of 4, and the
    network takes multiples of 32.
    """
    folded = build_detector(config, folded=True)
    norms = _norms_by_source(model)
    for target in folded.layers:
        if not target.weights:
            continue
        name = target.name
        per_level = re.fullmatch(r'(head\d*_)dw(\d+|s4)', name)
        if per_level:  # a level's copy of a shared head depthwise, with that level's norm
            prefix, level = per_level.groups()
            source, bn = model.get_layer(prefix + 'dw'), model.get_layer(f'{prefix}bn{level}')
        elif name in norms:
            source, bn = model.get_layer(name), norms[name][0]
        else:
            target.set_weights(model.get_layer(name).get_weights())
            continue
        gamma, beta, mean, var = (w.numpy() for w in
                                  (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
        scale = gamma / np.sqrt(var + bn.epsilon)
        kernel = source.get_weights()[0]
        if isinstance(source, layers.DepthwiseConv2D):
            kernel = kernel * scale.reshape(1, 1, -1, 1)
        else:
            kernel = kernel * scale.reshape(1, 1, 1, -1)
        bias = beta - mean * scale
        if name == 'stem':
            bias = bias + kernel.sum(axis=(0, 1, 2)) * INPUT_OFFSET
            kernel = kernel * INPUT_SCALE
        target.set_weights([kernel, bias])
    return folded


def _norms_by_source(model):
    """conv layer name -> the batch norms that read its output (fold_batch_norms' pairing)."""
    norms = {}
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            source = layer.input._keras_history.operation  # pylint: disable=protected-access
            norms.setdefault(source.name, []).append(layer)
    return norms


def unfold_batch_norms(folded, model, image_batches=()):
    """The inverse of fold_batch_norms, so that training can go on from an export: sets the
    weights of `model` (build_detector(config), with batch norms) so that in inference it
    computes what `folded` (build_detector(config, folded=True)) computes, and gives its
    norms the statistics of what they read on `image_batches` ([B, H, W, 3] float 0..255,
    such as training crops), which training-mode batch norm will see again.

    Each folded convolution (kernel K, bias c) becomes K without a bias, followed by a norm
    that maps its output x to g * x + c: with mean m and variance s^2 measured on the batches,
    moving mean m, moving variance s^2 - eps, gamma g * s and beta c + g * m (g = 1, except
    for the head's depthwise, which one kernel serves at every level: it takes the first
    level's folded kernel, and g is each level's per-channel ratio to it). The stem's
    kernel undoes the input normalization that the folded stem holds. Without batches the
    norms are the identity (mean 0, variance 1 - eps), exact in inference but not in
    training mode.
    """
    norms = _norms_by_source(model)
    shared_kernels = {}  # head prefix -> the folded kernel its shared depthwise took
    for target in folded.layers:
        if not target.weights:
            continue
        name = target.name
        weights = target.get_weights()
        per_level = re.fullmatch(r'(head\d*_)dw(\d+|s4)', name)
        if per_level:
            prefix, level = per_level.groups()
            kernel, bias = weights
            if prefix not in shared_kernels:
                shared_kernels[prefix] = kernel
                model.get_layer(prefix + 'dw').set_weights([kernel])
            ref = shared_kernels[prefix]
            dot, norm = (kernel * ref).sum(axis=(0, 1, 3)), (ref * ref).sum(axis=(0, 1, 3))
            gain = np.where(norm > 0, dot / np.maximum(norm, 1e-30), 0.0)
            bn = model.get_layer(f'{prefix}bn{level}')
        elif name in norms:
            kernel, bias = weights
            gain = np.ones_like(bias)
            if name == 'stem':
                bias = bias - kernel.sum(axis=(0, 1, 2)) * INPUT_OFFSET / INPUT_SCALE
                kernel = kernel / INPUT_SCALE
            model.get_layer(name).set_weights([kernel])
            bn = norms[name][0]
        else:
            model.get_layer(name).set_weights(weights)
            continue
        bn.set_weights([np.float32(gain), np.float32(bias), np.zeros_like(bias, np.float32),
                        np.full_like(bias, 1 - bn.epsilon, np.float32)])

    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    probe = keras.Model(model.input, [bn.input for bn in bns])
    sums = [np.zeros(bn.gamma.shape, np.float64) for bn in bns]
    squares = [np.zeros(bn.gamma.shape, np.float64) for bn in bns]
    count = [0] * len(bns)
    for images in image_batches:
        for i, x in enumerate(probe(images, training=False)):
            x = keras.ops.convert_to_numpy(keras.ops.cast(x, 'float32'))
            x = x.astype(np.float64).reshape(-1, x.shape[-1])
            sums[i] += x.sum(axis=0)
            squares[i] += (x * x).sum(axis=0)
            count[i] += x.shape[0]
    for i, bn in enumerate(bns):
        if not count[i]:
            continue
        mean = sums[i] / count[i]
        var = np.maximum(squares[i] / count[i] - mean * mean - bn.epsilon, 0.0)
        gamma, beta = bn.gamma.numpy(), bn.beta.numpy()  # g * x + c so far
        bn.set_weights([np.float32(w) for w in
                        (gamma * np.sqrt(var + bn.epsilon), beta + gamma * mean, mean, var)])
    return model


def _channel_counts(config):
    """Every channel count the config sets, after width (stem, stages, neck)."""
    counts = [config.stem_channels, *config.stage_channels, config.neck_channels]
    return [_channels(n, config.width) for n in counts]


def is_widening(source: DetectorConfig, target: DetectorConfig) -> bool:
    """Whether target builds source's network (same layers, units and strides) with at least
    as many channels everywhere, so that widen_weights can carry source's weights over.
    Target may also have more head units (they start as the identity), a quality head
    source lacks (its column starts at zero) and the stride-4 level source lacks (it starts
    fresh; the other levels compute what they did). The crop size does not count. A network
    is a widening of itself."""
    same_layout = (tuple(source.stage_units) == tuple(target.stage_units) and
                   set(source.strides) <= set(target.strides) and
                   source.anchor_scale == target.anchor_scale and
                   source.head_units <= target.head_units and
                   source.quality_head <= target.quality_head)
    return same_layout and all(a <= b for a, b in zip(_channel_counts(source),
                                                      _channel_counts(target)))


def widen_weights(source: keras.Model, target: keras.Model):
    """Copies a trained network into a twin with as many or more channels (is_widening) so
    that the twin computes the same outputs (Net2Net's function-preserving widening, Chen et
    al. 2016, with zeros instead of copies):

      * each weight of source goes into the leading slice of the same weight in target;
      * the channels target adds keep their fresh initialization where they are produced
        (kernels' new output filters, depthwise filters, batch-norm entries);
      * the layers that mix channels (1x1 and full convolutions) read the new channels with
        zero weights, so at step 0 nothing downstream sees them.

    Training then grows the zero weights from the new channels' (random, non-zero)
    activations. Equal shapes are a plain copy, so widening a network into itself copies it.
    Head units that source lacks keep their initialization, which is the identity. A
    quality column that source lacks (head_out's extra output filter) starts at zero, so
    every point's IoU probability is 0.5 and the scores keep source's order. A stride-4
    level that source lacks keeps its initialization: its outputs are new points, and the
    other levels' points are computed as in source.
    """
    source_names = {layer.name for layer in source.layers}
    for layer in target.layers:
        if not layer.weights:
            continue
        new_part = re.match(r'head[1-9]\d*_|(fpn_lat|fpn_out|head\d*_bn)s4(_|$)', layer.name)
        if layer.name not in source_names and new_part:
            continue
        source_layer = source.get_layer(layer.name)
        mixes_channels = isinstance(layer, layers.Conv2D)  # DepthwiseConv2D is not one
        values = []
        for src, dst in zip(source_layer.weights, layer.weights):
            src, dst = src.numpy(), dst.numpy().copy()
            if src.ndim != dst.ndim or any(a > b for a, b in zip(src.shape, dst.shape)):
                raise ValueError(f'{layer.name}: weight {src.shape} does not fit in {dst.shape}')
            if mixes_channels and dst.ndim == 4:
                dst[:, :, src.shape[2]:, :] = 0.0
            if layer.name == 'head_out':
                dst[..., src.shape[-1]:] = 0.0  # the quality column, if source had none
            dst[tuple(slice(0, n) for n in src.shape)] = src
            values.append(dst)
        layer.set_weights(values)
