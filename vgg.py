"""VGG-19 features for the content loss, from MatConvNet's `imagenet-vgg-verydeep-19.mat`.

The file is read with scipy by the field names of its layer records, so both published
layouts load (the older "beta16" one and the newer one with `meta`). Only the layers up to
`relu5_4` are used; their weights become graph constants (never trained).

write_random_vgg() writes a file of the same structure with random weights and few channels:
the demo trains with it when the real file is absent, and the tests use it.
"""

import os

import numpy as np
import scipy.io
import tensorflow.compat.v1 as tf

from utils import UserError

LAYERS = (
    'conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1',
    'conv2_1', 'relu2_1', 'conv2_2', 'relu2_2', 'pool2',
    'conv3_1', 'relu3_1', 'conv3_2', 'relu3_2', 'conv3_3', 'relu3_3', 'conv3_4', 'relu3_4', 'pool3',
    'conv4_1', 'relu4_1', 'conv4_2', 'relu4_2', 'conv4_3', 'relu4_3', 'conv4_4', 'relu4_4', 'pool4',
    'conv5_1', 'relu5_1', 'conv5_2', 'relu5_2', 'conv5_3', 'relu5_3', 'conv5_4', 'relu5_4',
)
CONTENT_LAYER = 'relu5_4'
MEAN_RGB = (123.68, 116.779, 103.939)      # ImageNet mean of the VGG training images, 0..255
GET_IT = ('download imagenet-vgg-verydeep-19.mat (MatConvNet VGG-19, 510 MB) from '
          'https://www.vlfeat.org/matconvnet/pretrained/ or the mirrors on the PyNET project page '
          'into vgg_pretrained/ (or pass vgg_dir=)')


def _kind(name):
    return name[:4]      # conv, relu or pool


def _unwrap(value):
    """Strips MATLAB's 1x1 cell and struct wrappers that scipy keeps."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    return value


def _text(value):
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind != 'U' or value.size != 1:
            raise ValueError('not a text field')
        value = value.flat[0]
    return str(value)


def _field(record, name, path, layer):
    names = record.dtype.names or ()
    if name not in names:
        raise UserError('%s: layer %s has no field %r (fields: %s): not a MatConvNet VGG-19 file; %s'
                        % (path, layer, name, ', '.join(names), GET_IT))
    return record[name].flat[0]


def load_weights(path):
    """[(name, kernel [h, w, in, out] float32 or None, bias [out] or None)] up to relu5_4, checked."""
    if not os.path.isfile(path):
        raise UserError('VGG-19 weights %s not found: %s' % (path, GET_IT))
    try:
        data = scipy.io.loadmat(path, variable_names=['layers'])
    except Exception as error:
        raise UserError('%s is not a readable MATLAB .mat file (%s): %s'
                        % (path, str(error).splitlines()[0][:80] if str(error) else type(error).__name__, GET_IT))
    layers = data.get('layers')
    if not isinstance(layers, np.ndarray) or layers.dtype != object or layers.size < len(LAYERS):
        raise UserError('%s has no MatConvNet layer list of VGG-19 (a "layers" cell of 43): %s' % (path, GET_IT))
    found, channels = [], 3
    for position, expected in enumerate(LAYERS):
        record = _unwrap(layers.flat[position])
        if not isinstance(record, np.ndarray) or not record.dtype.names:
            raise UserError('%s: layer %d is not a MatConvNet layer record: %s' % (path, position + 1, GET_IT))
        try:
            name = _text(_field(record, 'name', path, position + 1))
            kind = _text(_field(record, 'type', path, expected))
        except ValueError:
            raise UserError('%s: layer %d has an unreadable name or type: %s' % (path, position + 1, GET_IT))
        if name != expected or kind != _kind(expected):
            raise UserError('%s: layer %d is %r of type %r where VGG-19 has %r of type %r: '
                            'not the verydeep-19 model; %s' % (path, position + 1, name, kind, expected,
                                                                _kind(expected), GET_IT))
        if kind != 'conv':
            found.append((name, None, None))
            continue
        weights = _unwrap(_field(record, 'weights', path, name))
        try:
            kernel, bias = (np.asarray(_unwrap(w), np.float32) for w in weights.flat[:2])
        except (AttributeError, TypeError, ValueError):
            raise UserError('%s: %s has no {kernel, bias} weights: %s' % (path, name, GET_IT))
        if kernel.ndim != 4 or kernel.shape[:3] != (3, 3, channels) or bias.size != kernel.shape[3]:
            raise UserError('%s: %s has kernel %s and %d biases, expected 3x3x%dxN and N: %s'
                            % (path, name, 'x'.join(map(str, kernel.shape)), bias.size, channels, GET_IT))
        # MatConvNet stores kernels as (width, height, in, out); TensorFlow wants (height, width, in, out).
        found.append((name, np.ascontiguousarray(kernel.transpose(1, 0, 2, 3)), bias.reshape(-1)))
        channels = kernel.shape[3]
    return found


class VGG19:
    """The VGG-19 feature extractor up to relu5_4, its weights held once as graph constants."""

    def __init__(self, path):
        self.path = path
        self.weights = load_weights(path)
        self._constants = None

    def features(self, images01):
        """relu5_4 features of RGB images [B, H, W, 3] in [0, 1] (any H, W)."""
        if self._constants is None:      # built on first use, shared by every later call
            with tf.name_scope('vgg19_weights'):
                self._constants = [(n, k if k is None else tf.constant(k, name=n + '_kernel'),
                                    b if b is None else tf.constant(b, name=n + '_bias'))
                                   for n, k, b in self.weights]
        x = images01 * 255.0 - tf.constant(MEAN_RGB, tf.float32)
        for name, kernel, bias in self._constants:
            kind = _kind(name)
            if kind == 'conv':
                x = tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides=[1, 1, 1, 1], padding='SAME'), bias)
            elif kind == 'relu':
                x = tf.nn.relu(x)
            else:
                x = tf.nn.max_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding='SAME')
        return x


# ----------------------------------------------------------------------------------------
# a VGG-19 file with random weights

# The layers of the file after relu5_4 (VGG-19's classifier), as MatConvNet stores them.
HEAD = (('pool5', 'pool'), ('fc6', 'conv'), ('relu6', 'relu'), ('fc7', 'conv'), ('relu7', 'relu'),
        ('fc8', 'conv'), ('prob', 'softmax'))


def _cell(*items):
    """A MATLAB 1xN cell array."""
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def _record(layout, name, kind, kernel=None, bias=None):
    """One layer record (a dict scipy writes as a MATLAB struct) in the given layout; kernels (w, h, in, out)."""
    beta16 = layout == 'beta16'
    record = {'name': name, 'type': kind}
    if kind == 'conv':
        record['weights'] = _cell(kernel.astype(np.float32), bias.astype(np.float32))
        record['pad'] = np.ones((1, 4)) if kernel.shape[0] == 3 else np.zeros((1, 4))
        record['stride'] = np.ones((1, 2))
        if not beta16:
            record.update(size=np.array([kernel.shape], float), dilate=1.0, opts=_cell())
    elif kind == 'relu' and not beta16:
        record['leak'] = 0.0
    elif kind == 'pool':
        record.update(method='max', pool=np.full((1, 2), 2.0), stride=np.full((1, 2), 2.0), pad=np.zeros((1, 4)))
        if not beta16:
            record['opts'] = _cell()
    if not beta16:
        record['precious'] = False
    return record


def random_layer_records(layout='beta16', widths=(4, 4, 6, 6, 8), seed=0):
    """The 43 layer records of a VGG-19 with random weights and `widths` channels in blocks 1-5.

    layout: 'beta16' (the older published file) or 'new' (the newer one, with `meta`).
    """
    assert layout in ('beta16', 'new'), layout
    rng = np.random.default_rng(seed)
    records, channels = [], 3
    for name in LAYERS:
        kind = _kind(name)
        if kind != 'conv':
            records.append(_record(layout, name, kind))
            continue
        width = widths[int(name[4]) - 1]
        # He-like scale keeps activations alive through 16 layers of a tiny network.
        kernel = rng.normal(0, np.sqrt(2.0 / (9 * channels)), (3, 3, channels, width))
        records.append(_record(layout, name, kind, kernel, rng.normal(0, 0.1, (width, 1))))
        channels = width
    for name, kind in HEAD:
        if kind == 'conv':
            out, size = (5 if name == 'fc8' else 7), (7 if name == 'fc6' else 1)
            records.append(_record(layout, name, kind, rng.normal(0, 0.1, (size, size, channels, out)),
                                   np.zeros((1, out))))
            channels = out
        else:
            records.append(_record(layout, name, kind))
    assert len(records) == 43
    return records


def write_vgg_mat(path, records, layout='beta16'):
    """Writes layer records as a MatConvNet VGG file in the given layout; returns path."""
    content = {'layers': _cell(*records)}
    average = np.array(MEAN_RGB)
    if layout == 'beta16':
        content['classes'] = {'name': _cell('a', 'b'), 'description': _cell('a', 'b')}
        content['normalization'] = {'averageImage': average, 'imageSize': np.array([224.0, 224.0, 3.0])}
    else:
        content['meta'] = {'inputs': {'name': 'data', 'size': np.array([224.0, 224.0, 3.0, 10.0])},
                           'normalization': {'averageImage': average}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    scipy.io.savemat(path, content)
    return path


def write_random_vgg(path, layout='beta16', widths=(4, 4, 6, 6, 8), seed=0):
    """Writes a small imagenet-vgg-verydeep-19.mat with random weights (all 43 layers, VGG-19's names,
    types and fields, `widths` channels); returns path."""
    return write_vgg_mat(path, random_layer_records(layout, widths, seed), layout)
