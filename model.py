"""PyNET (Ignatov, Van Gool, Timofte, 2020) as a pure tf.compat.v1 graph.

Nothing here reads files or runs a session: these functions only add ops and
variables to the default graph.

Variables are plain `tf.Variable`s named `generator/Variable`,
`generator/Variable_1`, ... in the published creation order, so the published
checkpoint restores with a plain `tf.compat.v1.train.Saver()`. They live in a
`PyNETWeights` store keyed by their place in the network, which lets one set of
weights drive several sub-graphs (tiled rendering, several replicas).
"""

import contextlib

import tensorflow.compat.v1 as tf

SCOPE = 'generator'
NUM_LEVELS = 6          # outputs: level 0 (2x the packed input) .. level 5 (1/16)
SIZE_MULTIPLE = 16      # packed input height and width must be divisible by this
INSTANCE_NORM_EPSILON = 1e-3
LEAKY_RELU_SLOPE = 0.2
# Set by row_strip_convolutions(): the largest im2col patch matrix one convolution op may need, or None.
_max_patch_values = None


class PyNETWeights:
    """Creates PyNET's variables on first use, in call order, and hands them out again by key."""

    def __init__(self, trainable=True):
        self.variables = {}
        self.trainable = trainable

    def get(self, key, shape, initial_value):
        """The variable for `key`, created from `initial_value()` if it does not exist yet."""
        var = self.variables.get(key)
        if var is None:
            # Absolute name scope: the names do not depend on where PyNET is called from.
            with tf.name_scope(SCOPE + '/'):
                var = tf.Variable(initial_value(), name='Variable', trainable=self.trainable)
            self.variables[key] = var
        if var.shape.as_list() != list(shape):
            raise ValueError('variable %s has shape %s, the network needs %s'
                             % (key, var.shape.as_list(), list(shape)))
        return var

    def in_creation_order(self):
        """All variables, first created first."""
        return list(self.variables.values())


def leaky_relu(x):
    """max(0.2x, x)."""
    return tf.maximum(LEAKY_RELU_SLOPE * x, x)


def instance_norm(weights, key, x):
    """Per-sample, per-channel normalisation over height and width with learned shift and scale."""
    channels = x.shape[-1]
    shift = weights.get(key + '/shift', [channels], lambda: tf.zeros([channels]))
    scale = weights.get(key + '/scale', [channels], lambda: tf.ones([channels]))
    mean, variance = tf.nn.moments(x, [1, 2], keepdims=True)
    return normalize(x, mean, variance, scale, shift)


def normalize(x, mean, variance, scale, shift):
    """(x - mean) / sqrt(variance + eps) * scale + shift: instance norm with given statistics."""
    return (x - mean) / tf.sqrt(variance + INSTANCE_NORM_EPSILON) * scale + shift


@contextlib.contextmanager
def row_strip_convolutions(max_patch_values):
    """Builds each convolution made inside this block whose im2col patch matrix (output pixels x kernel
    area x input channels) exceeds max_patch_values as row strips, each under it: the same sums."""
    global _max_patch_values
    outer, _max_patch_values = _max_patch_values, max_patch_values
    try:
        yield
    finally:
        _max_patch_values = outer


def conv2d_same(x, kernel):
    """Stride-1 SAME convolution; in row strips (padded by hand, VALID) inside row_strip_convolutions()."""
    size, channels = int(kernel.shape[0]), int(kernel.shape[2])
    height, width = x.shape.as_list()[1:3]
    limit = _max_patch_values
    if limit is None or None in (height, width) or height * width * size * size * channels <= limit:
        return tf.nn.conv2d(x, kernel, strides=[1, 1, 1, 1], padding='SAME')
    # Why: LiteRT's int8 and hybrid kernels allocate this matrix whole (30 GB for level 1's 9x9 at 12 MP).
    rows = max(1, limit // (width * size * size * channels))
    halo = size // 2
    strips = []
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first, last = max(0, top - halo), min(height, bottom + halo)
        strip = tf.pad(x[:, first:last], [[0, 0], [halo - (top - first), halo - (last - bottom)],
                                          [halo, halo], [0, 0]])
        strips.append(tf.nn.conv2d(strip, kernel, strides=[1, 1, 1, 1], padding='VALID'))
    return tf.concat(strips, axis=1)


def conv(weights, key, x, filters, size, norm=False, activation=True):
    """size x size convolution with bias, stride 1, SAME; optional instance norm and leaky ReLU."""
    shape = [size, size, int(x.shape[-1]), filters]
    kernel = weights.get(key + '/kernel', shape,
                         lambda: tf.truncated_normal(shape, stddev=0.01, seed=1))
    bias = weights.get(key + '/bias', [filters], lambda: tf.constant(0.01, shape=[filters]))
    y = conv2d_same(x, kernel) + bias
    if norm:
        y = instance_norm(weights, key, y)
    return leaky_relu(y) if activation else y


def multi_conv_block(weights, key, x, max_size, filters, norm):
    """Parallel two-conv branches with kernels 3, 5, 7, 9 up to max_size, concatenated in that order."""
    branches = []
    for size in range(3, max_size + 1, 2):
        branch_key = '%s/%dx%d' % (key, size, size)
        y = conv(weights, branch_key + '/conv1', x, filters, size, norm)
        y = conv(weights, branch_key + '/conv2', y, filters, size, norm)
        branches.append(y)
    return branches[0] if len(branches) == 1 else tf.concat(branches, axis=3)


def upsample(weights, key, x, filters):
    """3x3 transposed convolution, stride 2, no bias, then leaky ReLU: doubles height and width."""
    shape = [3, 3, filters, int(x.shape[-1])]
    kernel = weights.get(key + '/kernel', shape,
                         lambda: tf.truncated_normal(shape, stddev=0.01, seed=1))
    in_shape = tf.shape(x)
    out_shape = tf.stack([in_shape[0], in_shape[1] * 2, in_shape[2] * 2, filters])
    y = tf.nn.conv2d_transpose(x, kernel, out_shape, strides=[1, 2, 2, 1], padding='SAME')
    static = x.shape.as_list()
    y.set_shape([static[0], static[1] and static[1] * 2, static[2] and static[2] * 2, filters])
    return leaky_relu(y)


def output_image(weights, key, x):
    """3x3 convolution to RGB, squashed into [-0.08, 1.08] as published: tanh(x) * 0.58 + 0.5."""
    return tf.nn.tanh(conv(weights, key, x, 3, 3, activation=False)) * 0.58 + 0.5


def max_pool(x):
    """2x2 max pool, stride 2."""
    return tf.nn.max_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding='VALID')


def encoder_level_1(weights, packed_raw):
    """Full-resolution encoder features e1 [B, S, S, 32]: local (two 3x3 convs), never normalised."""
    return multi_conv_block(weights, 'encoder/e1', packed_raw, 3, 32, norm=False)


def lower_levels(weights, e1, instance_norm=True):
    """Encoder levels 2-4 and decoder levels 5-2 from e1.

    Returns (u1a, u1b, [out2, out3, out4, out5]): the two upsampled level-2 feature maps
    that level 1 consumes ([B, S, S, 32] each) and the low-resolution outputs. Instance
    norm here spans the whole image, so this part must see the whole image at once.
    """
    n = instance_norm
    e2 = multi_conv_block(weights, 'encoder/e2', max_pool(e1), 3, 64, n)
    e3 = multi_conv_block(weights, 'encoder/e3', max_pool(e2), 3, 128, n)
    e4 = multi_conv_block(weights, 'encoder/e4', max_pool(e3), 3, 256, n)

    k = 'level5/'
    a = multi_conv_block(weights, k + 'a', max_pool(e4), 3, 512, n)
    b = multi_conv_block(weights, k + 'b', a, 3, 512, n) + a
    c = multi_conv_block(weights, k + 'c', b, 3, 512, n) + b
    d = multi_conv_block(weights, k + 'd', c, 3, 512, n)
    u4a = upsample(weights, k + 'up_a', d, 256)
    u4b = upsample(weights, k + 'up_b', d, 256)
    out5 = output_image(weights, k + 'out', d)

    k = 'level4/'
    x = tf.concat([e4, u4a], 3)
    a = multi_conv_block(weights, k + 'a', x, 3, 256, n)
    b = multi_conv_block(weights, k + 'b', a, 3, 256, n) + a
    c = multi_conv_block(weights, k + 'c', b, 3, 256, n) + b
    d = tf.concat([multi_conv_block(weights, k + 'd', c, 3, 256, n), u4b], 3)
    e = multi_conv_block(weights, k + 'e', d, 3, 256, n)
    u3a = upsample(weights, k + 'up_a', e, 128)
    u3b = upsample(weights, k + 'up_b', e, 128)
    out4 = output_image(weights, k + 'out', e)

    k = 'level3/'
    x = tf.concat([e3, u3a], 3)
    a = multi_conv_block(weights, k + 'a', x, 5, 128, n) + x
    b = multi_conv_block(weights, k + 'b', a, 5, 128, n) + a
    c = multi_conv_block(weights, k + 'c', b, 5, 128, n) + b
    d = tf.concat([multi_conv_block(weights, k + 'd', c, 5, 128, n), e3, u3b], 3)
    e = multi_conv_block(weights, k + 'e', d, 3, 128, n)
    u2a = upsample(weights, k + 'up_a', e, 64)
    u2b = upsample(weights, k + 'up_b', e, 64)
    out3 = output_image(weights, k + 'out', e)

    k = 'level2/'
    x = tf.concat([e2, u2a], 3)
    a = tf.concat([multi_conv_block(weights, k + 'a', x, 5, 64, n), e2], 3)
    b = multi_conv_block(weights, k + 'b', a, 7, 64, n) + a
    c = multi_conv_block(weights, k + 'c', b, 7, 64, n) + b
    d = multi_conv_block(weights, k + 'd', c, 7, 64, n) + c
    f = tf.concat([multi_conv_block(weights, k + 'f', d, 7, 64, n), e2], 3)
    g = tf.concat([multi_conv_block(weights, k + 'g', f, 5, 64, n), u2b], 3)
    h = multi_conv_block(weights, k + 'h', g, 3, 64, n)
    u1a = upsample(weights, k + 'up_a', h, 32)
    u1b = upsample(weights, k + 'up_b', h, 32)
    out2 = output_image(weights, k + 'out', h)

    return u1a, u1b, [out2, out3, out4, out5]


def upper_levels(weights, e1, u1a, u1b, instance_norm_level_1=False):
    """Levels 1 and 0 from e1 and the two level-2 upsamplings: returns (out0 [2S], out1 [S]).

    With the published setting (no instance norm on level 1) every op here is local,
    so this part can run tile by tile.
    """
    n1 = instance_norm_level_1
    k = 'level1/'
    x = tf.concat([e1, u1a], 3)
    a = tf.concat([multi_conv_block(weights, k + 'a', x, 5, 32, False), e1], 3)
    b = multi_conv_block(weights, k + 'b', a, 7, 32, False)
    c = multi_conv_block(weights, k + 'c', b, 9, 32, n1)
    d = multi_conv_block(weights, k + 'd', c, 9, 32, n1) + c
    f = multi_conv_block(weights, k + 'f', d, 9, 32, n1) + d
    g = multi_conv_block(weights, k + 'g', f, 9, 32, n1) + f
    h = tf.concat([multi_conv_block(weights, k + 'h', g, 7, 32, False), e1], 3)
    i = tf.concat([multi_conv_block(weights, k + 'i', h, 5, 32, False), u1b, e1], 3)
    j = multi_conv_block(weights, k + 'j', i, 3, 32, False)
    out1 = output_image(weights, k + 'out', j)

    up = upsample(weights, 'level0/up', j, 8)
    out0 = output_image(weights, 'level0/out', up)
    return out0, out1


def PyNET(packed_raw, instance_norm=True, instance_norm_level_1=False, weights=None):
    """The six PyNET outputs [out0 (2S), out1 (S), out2, out3, out4, out5 (S/16)] for packed RAW [B, S, S, 4]."""
    packed_raw.shape.assert_has_rank(4)
    if packed_raw.shape[-1] != 4:
        raise ValueError('PyNET takes a packed 4-channel RAW, got %s channels' % packed_raw.shape[-1])
    weights = weights if weights is not None else PyNETWeights()
    e1 = encoder_level_1(weights, packed_raw)
    u1a, u1b, low = lower_levels(weights, e1, instance_norm)
    out0, out1 = upper_levels(weights, e1, u1a, u1b, instance_norm_level_1)
    return [out0, out1] + low


def create_weights(trainable=True):
    """A store holding all 437 PyNET variables in the published order (builds an unused symbolic pass)."""
    weights = PyNETWeights(trainable)
    PyNET(tf.placeholder(tf.float32, [1, None, None, 4]), weights=weights)
    return weights


def generator_variables():
    """The PyNET variables of the default graph (what is trained and saved)."""
    return [v for v in tf.global_variables() if v.op.name.startswith(SCOPE + '/')]
