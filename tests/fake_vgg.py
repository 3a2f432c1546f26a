"""Writes a small `imagenet-vgg-verydeep-19.mat` with MatConvNet's structure (either published
layout, all 43 layers, same names, types and fields) but few channels, for tests and the demo.

    import fake_vgg; fake_vgg.write_fake_vgg('vgg_pretrained/imagenet-vgg-verydeep-19.mat')
"""
import os

import numpy as np
import scipy.io

BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))   # (block, convs) of VGG-19
HEAD = (('fc6', 'conv'), ('relu6', 'relu'), ('fc7', 'conv'), ('relu7', 'relu'), ('fc8', 'conv'),
        ('prob', 'softmax'))


def _cell(*items):
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def _conv(layout, name, kernel, bias):
    weights = _cell(kernel.astype(np.float32), bias.astype(np.float32))
    pad = np.ones((1, 4)) if kernel.shape[0] == 3 else np.zeros((1, 4))
    if layout == 'beta16':
        return {'weights': weights, 'pad': pad, 'type': 'conv', 'name': name, 'stride': np.ones((1, 2))}
    return {'name': name, 'type': 'conv', 'weights': weights, 'size': np.array([kernel.shape], float),
            'pad': pad, 'stride': np.ones((1, 2)), 'precious': False, 'dilate': 1.0, 'opts': _cell()}


def _relu(layout, name):
    if layout == 'beta16':
        return {'type': 'relu', 'name': name}
    return {'name': name, 'type': 'relu', 'leak': 0.0, 'precious': False}


def _pool(layout, name):
    if layout == 'beta16':
        return {'name': name, 'stride': np.full((1, 2), 2.0), 'pad': np.zeros((1, 4)), 'type': 'pool',
                'method': 'max', 'pool': np.full((1, 2), 2.0)}
    return {'name': name, 'type': 'pool', 'method': 'max', 'pool': np.full((1, 2), 2.0),
            'stride': np.full((1, 2), 2.0), 'pad': np.zeros((1, 4)), 'precious': False, 'opts': _cell()}


def layer_records(layout='beta16', widths=(4, 4, 6, 6, 8), seed=0):
    """The 43 layer records (dicts) of a small VGG-19; kernels stored (width, height, in, out)."""
    assert layout in ('beta16', 'new'), layout
    rng = np.random.default_rng(seed)
    records, channels = [], 3
    for (block, convs), width in zip(BLOCKS, widths):
        for c in range(1, convs + 1):
            # He-like scale keeps activations alive through 16 layers of a tiny network.
            kernel = rng.normal(0, np.sqrt(2.0 / (9 * channels)), (3, 3, channels, width))
            records.append(_conv(layout, 'conv%d_%d' % (block, c), kernel, rng.normal(0, 0.1, (width, 1))))
            records.append(_relu(layout, 'relu%d_%d' % (block, c)))
            channels = width
        records.append(_pool(layout, 'pool%d' % block))
    for name, kind in HEAD:
        if kind == 'conv':
            out = 5 if name == 'fc8' else 7
            size = 7 if name == 'fc6' else 1
            records.append(_conv(layout, name, rng.normal(0, 0.1, (size, size, channels, out)),
                                 np.zeros((1, out))))
            channels = out
        elif kind == 'relu':
            records.append(_relu(layout, name))
        else:
            records.append({'type': 'softmax', 'name': name} if layout == 'beta16' else
                           {'name': name, 'type': 'softmax', 'precious': False})
    assert len(records) == 43
    return records


def write_fake_vgg(path, layout='beta16', widths=(4, 4, 6, 6, 8), seed=0, records=None):
    """Writes the .mat file; `records` overrides the layer list (to make broken files)."""
    records = layer_records(layout, widths, seed) if records is None else records
    content = {'layers': _cell(*records)}
    if layout == 'beta16':
        content['classes'] = {'name': _cell('a', 'b'), 'description': _cell('a', 'b')}
        content['normalization'] = {'averageImage': np.array([123.68, 116.779, 103.939]), 'imageSize':
                                    np.array([224.0, 224.0, 3.0])}
    else:
        content['meta'] = {'inputs': {'name': 'data', 'size': np.array([224.0, 224.0, 3.0, 10.0])},
                           'normalization': {'averageImage': np.array([123.68, 116.779, 103.939])}}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    scipy.io.savemat(path, content)
    return path
