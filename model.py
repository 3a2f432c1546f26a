"""PyNET (Ignatov, Van Gool, Timofte, 2020) as a pure tf.compat.v1 graph.

Nothing here reads files or runs a session: these functions only add ops and
variables to the default graph.

The network is written down once, as data: LAYOUT lists its layers in the
published creation order, each naming the feature maps it reads. `build` turns
(part of) that table into a graph on whole images; render.py reads the same
table to evaluate PyNET in row bands.

Variables are plain `tf.Variable`s named `generator/Variable`,
`generator/Variable_1`, ... in the published creation order, so the published
checkpoint restores with a plain `tf.compat.v1.train.Saver()`. They live in a
`PyNETWeights` store keyed by their place in the network, which lets one set of
weights drive several sub-graphs (tiled rendering, several replicas).
"""

import collections

import tensorflow.compat.v1 as tf

SCOPE = 'generator'
SIZE_MULTIPLE = 16      # packed input height and width must be divisible by this (four 2x2 poolings)
INSTANCE_NORM_EPSILON = 1e-3
LEAKY_RELU_SLOPE = 0.2
INPUT = 'raw'           # the packed RAW [B, S, S, 4], as LAYOUT's layers name it
INPUT_CHANNELS = 4

# ----------------------------------------------------------------------------------------
# The network as data

# out = cat(multi_conv_block(cat(inputs)) [+ cat(inputs) if residual], *append). `norm` names the PyNET()
# argument that switches instance norm on for the block's convolutions; None: never normalised.
Block = collections.namedtuple('Block', 'name inputs kernel filters norm residual append')
Pool = collections.namedtuple('Pool', 'name input')                 # 2x2 max pool: half the size
Upsample = collections.namedtuple('Upsample', 'name input filters')  # 3x3 transposed conv, stride 2: twice
Output = collections.namedtuple('Output', 'name input')             # 3x3 conv to RGB, tanh(x) * 0.58 + 0.5


def block(name, inputs, kernel, filters, norm='instance_norm', residual=False, append=()):
    return Block(name, tuple(inputs), kernel, filters, norm, residual, tuple(append))


def level_outputs(level, width, filters_below):
    """The two upsamplings a level hands to the next finer one, and its RGB output (from `width`)."""
    return (Upsample('level%d/up_a' % level, width, filters_below),
            Upsample('level%d/up_b' % level, width, filters_below),
            Output('level%d/out' % level, width))


# Every layer of PyNET in the published creation order (sizes in packed pixels, S = the input).
LAYOUT = (
    # encoder: S, S/2, S/4, S/8
    block('e1', [INPUT], 3, 32, norm=None),
    Pool('e1_pool', 'e1'),
    block('e2', ['e1_pool'], 3, 64),
    Pool('e2_pool', 'e2'),
    block('e3', ['e2_pool'], 3, 128),
    Pool('e3_pool', 'e3'),
    block('e4', ['e3_pool'], 3, 256),
    Pool('e4_pool', 'e4'),
    # level 5: S/16
    block('level5/a', ['e4_pool'], 3, 512),
    block('level5/b', ['level5/a'], 3, 512, residual=True),
    block('level5/c', ['level5/b'], 3, 512, residual=True),
    block('level5/d', ['level5/c'], 3, 512),
    *level_outputs(5, 'level5/d', 256),
    # level 4: S/8
    block('level4/a', ['e4', 'level5/up_a'], 3, 256),
    block('level4/b', ['level4/a'], 3, 256, residual=True),
    block('level4/c', ['level4/b'], 3, 256, residual=True),
    block('level4/d', ['level4/c'], 3, 256, append=['level5/up_b']),
    block('level4/e', ['level4/d'], 3, 256),
    *level_outputs(4, 'level4/e', 128),
    # level 3: S/4
    block('level3/a', ['e3', 'level4/up_a'], 5, 128, residual=True),
    block('level3/b', ['level3/a'], 5, 128, residual=True),
    block('level3/c', ['level3/b'], 5, 128, residual=True),
    block('level3/d', ['level3/c'], 5, 128, append=['e3', 'level4/up_b']),
    block('level3/e', ['level3/d'], 3, 128),
    *level_outputs(3, 'level3/e', 64),
    # level 2: S/2
    block('level2/a', ['e2', 'level3/up_a'], 5, 64, append=['e2']),
    block('level2/b', ['level2/a'], 7, 64, residual=True),
    block('level2/c', ['level2/b'], 7, 64, residual=True),
    block('level2/d', ['level2/c'], 7, 64, residual=True),
    block('level2/f', ['level2/d'], 7, 64, append=['e2']),
    block('level2/g', ['level2/f'], 5, 64, append=['level3/up_b']),
    block('level2/h', ['level2/g'], 3, 64),
    *level_outputs(2, 'level2/h', 32),
    # level 1: S (instance norm only with instance_norm_level_1, off in the published model)
    block('level1/a', ['e1', 'level2/up_a'], 5, 32, norm=None, append=['e1']),
    block('level1/b', ['level1/a'], 7, 32, norm=None),
    block('level1/c', ['level1/b'], 9, 32, norm='instance_norm_level_1'),
    block('level1/d', ['level1/c'], 9, 32, norm='instance_norm_level_1', residual=True),
    block('level1/f', ['level1/d'], 9, 32, norm='instance_norm_level_1', residual=True),
    block('level1/g', ['level1/f'], 9, 32, norm='instance_norm_level_1', residual=True),
    block('level1/h', ['level1/g'], 7, 32, norm=None, append=['e1']),
    block('level1/i', ['level1/h'], 5, 32, norm=None, append=['level2/up_b', 'e1']),
    block('level1/j', ['level1/i'], 3, 32, norm=None),
    Output('level1/out', 'level1/j'),
    # level 0: 2S
    Upsample('level0/up', 'level1/j', 8),
    Output('level0/out', 'level0/up'),
)
LAYERS = {layer.name: layer for layer in LAYOUT}
OUTPUTS = tuple('level%d/out' % level for level in range(6))    # PyNET's outputs, level 0 (2S) first


def layer_inputs(layer):
    """Names of the feature maps a layer reads."""
    if isinstance(layer, Block):
        return layer.inputs + layer.append
    return (layer.input,)


def branch_sizes(layer):
    """Kernel sizes of a block's parallel branches: 3, 5, ... up to its largest."""
    return list(range(3, layer.kernel + 1, 2))


def conv_key(layer, size, which):
    """Weights key of one convolution of a block: which = 1 (first of the branch) or 2."""
    return '%s/%dx%d/conv%d' % (layer.name, size, size, which)


def normalised(layer, norms):
    """Whether the block's convolutions are instance-normalised; norms: PyNET()'s norm arguments by name."""
    return isinstance(layer, Block) and layer.norm is not None and norms[layer.norm]


def scales():
    """Size of every feature map as a power of two below the packed input: 0 = S, 1 = S/2, -1 = 2S."""
    scale = {INPUT: 0}
    for layer in LAYOUT:
        below = scale[layer_inputs(layer)[0]]
        scale[layer.name] = below + 1 if isinstance(layer, Pool) else below - 1 if isinstance(layer, Upsample) \
            else below
        assert all(scale[name] == scale[layer.name] for name in layer_inputs(layer)[1:]), layer.name
    return scale


def channels():
    """Channels of every feature map."""
    count = {INPUT: INPUT_CHANNELS}
    for layer in LAYOUT:
        if isinstance(layer, Block):
            count[layer.name] = (layer.filters * len(branch_sizes(layer))
                                 + sum(count[name] for name in layer.append))
        elif isinstance(layer, Upsample):
            count[layer.name] = layer.filters
        elif isinstance(layer, Output):
            count[layer.name] = 3
        else:
            count[layer.name] = count[layer.input]
    return count


# A convolution of the network: its weights key, the scale of the map it reads, kernel size, channels in and
# out, and whether it is transposed (stride 2: its output is twice the size of what it reads).
Convolution = collections.namedtuple('Convolution', 'key scale size in_channels filters transposed')


def convolutions(targets):
    """Every convolution that computes `targets`, in LAYOUT order. Each costs
    2 x size^2 x in_channels x filters floating-point operations per pixel of the map it reads."""
    scale, count = scales(), channels()
    convs = []
    for layer in needed_layers(targets):
        if isinstance(layer, Block):
            cin = sum(count[name] for name in layer.inputs)
            for size in branch_sizes(layer):
                convs.append(Convolution(conv_key(layer, size, 1), scale[layer.name], size, cin, layer.filters, False))
                convs.append(Convolution(conv_key(layer, size, 2), scale[layer.name], size, layer.filters,
                                         layer.filters, False))
        elif isinstance(layer, Upsample):
            convs.append(Convolution(layer.name, scale[layer.input], 3, count[layer.input], layer.filters, True))
        elif isinstance(layer, Output):
            convs.append(Convolution(layer.name, scale[layer.input], 3, count[layer.input], 3, False))
    return convs


def needed_layers(targets, given=()):
    """The layers, in LAYOUT order, that compute `targets` from the feature maps named in `given`."""
    needed, todo = set(), [t for t in targets if t not in given]
    while todo:
        name = todo.pop()
        if name in needed or name in given or name == INPUT:
            continue
        needed.add(name)
        todo.extend(layer_inputs(LAYERS[name]))
    return [layer for layer in LAYOUT if layer.name in needed]


def added_layers(level):
    """The layers that `level` adds to level+1's network (every layer it needs at level 5): at level 0,
    its upsampling and output; at level 1, level 1's blocks, output and level 2's two upsamplings."""
    below = {l.name for l in needed_layers([OUTPUTS[level + 1]])} if level + 1 < len(OUTPUTS) else set()
    return [layer for layer in needed_layers([OUTPUTS[level]]) if layer.name not in below]


# ----------------------------------------------------------------------------------------
# Weights

class PyNETWeights:
    """Creates PyNET's variables on first use, in call order, and hands them out again by key.

    max_patch_values: a convolution whose im2col patch matrix (output pixels x kernel area x input
    channels) would be larger is built as row strips, each under it (conv2d_same); None: never.
    """

    def __init__(self, trainable=True, max_patch_values=None):
        self.variables = {}
        self.trainable = trainable
        self.max_patch_values = max_patch_values

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

    def of_layers(self, layers):
        """The variables of these LAYOUT layers, first created first."""
        prefixes = tuple(layer.name + '/' for layer in layers)
        return [var for key, var in self.variables.items() if key.startswith(prefixes)]


def create_weights(trainable=True, instance_norm_level_1=False):
    """A store holding all PyNET variables in the published order (builds an unused symbolic pass)."""
    weights = PyNETWeights(trainable)
    PyNET(tf.placeholder(tf.float32, [1, None, None, INPUT_CHANNELS]), weights=weights,
          instance_norm_level_1=instance_norm_level_1)
    return weights


def generator_variables():
    """The PyNET variables of the default graph (what is trained and saved)."""
    return [v for v in tf.global_variables() if v.op.name.startswith(SCOPE + '/')]


# ----------------------------------------------------------------------------------------
# Operations

def leaky_relu(x):
    """max(0.2x, x)."""
    return tf.maximum(LEAKY_RELU_SLOPE * x, x)


def normalize(x, mean, variance, scale, shift):
    """(x - mean) / sqrt(variance + eps) * scale + shift: instance norm with given statistics."""
    return (x - mean) / tf.sqrt(variance + INSTANCE_NORM_EPSILON) * scale + shift


def norm_params(weights, key, channels):
    """(scale, shift): the learned parameters of convolution `key`'s instance norm (created as shift, scale)."""
    shift = weights.get(key + '/shift', [channels], lambda: tf.zeros([channels]))
    scale = weights.get(key + '/scale', [channels], lambda: tf.ones([channels]))
    return scale, shift


def instance_norm(weights, key, x):
    """Per-sample, per-channel normalisation over height and width with learned shift and scale."""
    mean, variance = tf.nn.moments(x, [1, 2], keepdims=True)
    return normalize(x, mean, variance, *norm_params(weights, key, x.shape[-1]))


def conv2d_same(x, kernel, max_patch_values=None, pad_rows=True):
    """Stride-1 convolution, SAME in width; in height SAME, or (pad_rows=False) only the rows x has, so the
    output is a kernel's height shorter. With max_patch_values, as row strips each under that im2col size."""
    size, channels = int(kernel.shape[0]), int(kernel.shape[2])
    halo = size // 2
    if not pad_rows:
        return tf.nn.conv2d(x, kernel, strides=[1, 1, 1, 1], padding=[[0, 0], [0, 0], [halo, halo], [0, 0]])
    height, width = x.shape.as_list()[1:3]
    limit = max_patch_values
    if limit is None or None in (height, width) or height * width * size * size * channels <= limit:
        return tf.nn.conv2d(x, kernel, strides=[1, 1, 1, 1], padding='SAME')
    # Why: LiteRT's int8 and hybrid kernels allocate this matrix whole (30 GB for level 1's 9x9 at 12 MP).
    rows = max(1, limit // (width * size * size * channels))
    strips = []
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first, last = max(0, top - halo), min(height, bottom + halo)
        strip = tf.pad(x[:, first:last], [[0, 0], [halo - (top - first), halo - (last - bottom)],
                                          [halo, halo], [0, 0]])
        strips.append(tf.nn.conv2d(strip, kernel, strides=[1, 1, 1, 1], padding='VALID'))
    return tf.concat(strips, axis=1)


def conv_bias(weights, key, x, filters, size, pad_rows=True):
    """size x size convolution with bias, stride 1 (see conv2d_same for pad_rows)."""
    shape = [size, size, int(x.shape[-1]), filters]
    kernel = weights.get(key + '/kernel', shape,
                         lambda: tf.truncated_normal(shape, stddev=0.01, seed=1))
    bias = weights.get(key + '/bias', [filters], lambda: tf.constant(0.01, shape=[filters]))
    return conv2d_same(x, kernel, getattr(weights, 'max_patch_values', None), pad_rows) + bias


def conv(weights, key, x, filters, size, norm=False, activation=True):
    """size x size convolution with bias, stride 1, SAME; optional instance norm and leaky ReLU."""
    y = conv_bias(weights, key, x, filters, size)
    if norm:
        y = instance_norm(weights, key, y)
    return leaky_relu(y) if activation else y


def multi_conv_block(weights, layer, x, norm):
    """Parallel two-conv branches with kernels 3, 5, 7, 9 up to the layer's largest, concatenated in that order."""
    branches = []
    for size in branch_sizes(layer):
        y = conv(weights, conv_key(layer, size, 1), x, layer.filters, size, norm)
        y = conv(weights, conv_key(layer, size, 2), y, layer.filters, size, norm)
        branches.append(y)
    return concat(branches)


def upsample_kernel(weights, key, in_channels, filters):
    shape = [3, 3, filters, in_channels]
    return weights.get(key + '/kernel', shape, lambda: tf.truncated_normal(shape, stddev=0.01, seed=1))


def upsample(weights, key, x, filters):
    """3x3 transposed convolution, stride 2, no bias, then leaky ReLU: doubles height and width."""
    kernel = upsample_kernel(weights, key, int(x.shape[-1]), filters)
    in_shape = tf.shape(x)
    out_shape = tf.stack([in_shape[0], in_shape[1] * 2, in_shape[2] * 2, filters])
    y = tf.nn.conv2d_transpose(x, kernel, out_shape, strides=[1, 2, 2, 1], padding='SAME')
    static = x.shape.as_list()
    y.set_shape([static[0], static[1] and static[1] * 2, static[2] and static[2] * 2, filters])
    return leaky_relu(y)


def output_image(weights, key, x, pad_rows=True):
    """3x3 convolution to RGB, squashed into [-0.08, 1.08] as published: tanh(x) * 0.58 + 0.5."""
    return tf.nn.tanh(conv_bias(weights, key, x, 3, 3, pad_rows)) * 0.58 + 0.5


def max_pool(x):
    """2x2 max pool, stride 2."""
    return tf.nn.max_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding='VALID')


def concat(maps):
    """Concatenation on channels (a single map is returned as it is)."""
    return maps[0] if len(maps) == 1 else tf.concat(maps, axis=3)


# ----------------------------------------------------------------------------------------
# The graph

def apply_layer(weights, layer, maps, norms):
    """The feature map of one LAYOUT layer, from the feature maps it reads (maps: name -> tensor)."""
    if isinstance(layer, Pool):
        return max_pool(maps[layer.input])
    if isinstance(layer, Upsample):
        return upsample(weights, layer.name, maps[layer.input], layer.filters)
    if isinstance(layer, Output):
        return output_image(weights, layer.name, maps[layer.input])
    x = concat([maps[name] for name in layer.inputs])
    y = multi_conv_block(weights, layer, x, normalised(layer, norms))
    if layer.residual:
        y = y + x
    return concat([y] + [maps[name] for name in layer.append])


def build(weights, given, targets, norms):
    """Adds the layers that compute `targets` from the feature maps `given` (name -> tensor); returns all maps."""
    maps = dict(given)
    for layer in needed_layers(targets, given):
        maps[layer.name] = apply_layer(weights, layer, maps, norms)
    return maps


def PyNET(packed_raw, instance_norm=True, instance_norm_level_1=False, weights=None):
    """The six PyNET outputs [out0 (2S), out1 (S), out2, out3, out4, out5 (S/16)] for packed RAW [B, S, S, 4]."""
    packed_raw.shape.assert_has_rank(4)
    if packed_raw.shape[-1] != INPUT_CHANNELS:
        raise ValueError('PyNET takes a packed 4-channel RAW, got %s channels' % packed_raw.shape[-1])
    weights = weights if weights is not None else PyNETWeights()
    norms = {'instance_norm': instance_norm, 'instance_norm_level_1': instance_norm_level_1}
    # Every layer, in LAYOUT order (the published variable order), whether or not an output needs it.
    maps = build(weights, {INPUT: packed_raw}, [layer.name for layer in LAYOUT], norms)
    return [maps[name] for name in OUTPUTS]
