"""The PyNET graph: variable layout of the published checkpoint, output shapes, weight sharing."""
import csv
import os

import numpy as np
import tensorflow.compat.v1 as tf

import model
from conftest import DATA


def published_layout():
    with open(os.path.join(DATA, 'pynet_checkpoint_layout.tsv')) as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    return [(r['name'], [int(s) for s in r['shape'].split(',')]) for r in rows]


def test_variables_match_published_checkpoint_layout():
    with tf.Graph().as_default():
        model.PyNET(tf.placeholder(tf.float32, [None, None, None, 4]))
        got = [(v.op.name, v.shape.as_list()) for v in tf.global_variables()]
    expected = published_layout()
    assert len(expected) == 437
    assert got == expected
    assert sum(int(np.prod(s)) for _, s in got) == 47548170


def test_six_outputs_level_0_first():
    with tf.Graph().as_default():
        outputs = model.PyNET(tf.placeholder(tf.float32, [2, 48, 64, 4]))
        shapes = [o.shape.as_list() for o in outputs]
    assert shapes == [[2, 96, 128, 3], [2, 48, 64, 3], [2, 24, 32, 3],
                      [2, 12, 16, 3], [2, 6, 8, 3], [2, 3, 4, 3]]


def test_sub_graphs_share_weights_and_match_whole_graph():
    # model.build from a given feature map computes the same as the whole graph, with the same variables.
    rng = np.random.default_rng(0)
    x = rng.random((1, 32, 48, 4)).astype(np.float32)
    norms = {'instance_norm': True, 'instance_norm_level_1': False}
    with tf.Graph().as_default():
        weights = model.PyNETWeights()
        inp = tf.placeholder(tf.float32, [1, None, None, 4])
        whole = model.PyNET(inp, weights=weights)
        e2 = model.build(weights, {model.INPUT: inp}, ['e2'], norms)['e2']
        given = tf.placeholder(tf.float32, [1, None, None, 64])
        rest = model.build(weights, {model.INPUT: inp, 'e2': given}, ['level0/out', 'level3/out'], norms)
        assert 'e2_pool' in rest and 'e1_pool' not in rest          # only what the targets need
        assert len(tf.global_variables()) == 437
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            a, a3, e2_value = sess.run([whole[0], whole[3], e2], {inp: x})
            b, b3 = sess.run([rest['level0/out'], rest['level3/out']], {inp: x, given: e2_value})
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a3, b3, atol=1e-5)
    assert a.min() >= -0.08 - 1e-6 and a.max() <= 1.08 + 1e-6


def test_layout_sizes_and_channels_follow_the_published_graph():
    scales, channels = model.scales(), model.channels()
    assert [scales[name] for name in model.OUTPUTS] == [-1, 0, 1, 2, 3, 4]
    assert (scales['e1'], scales['e2'], scales['e4'], scales['level5/d']) == (0, 1, 3, 4)
    # the channel counts the published graph writes down
    assert channels['level2/a'] == 192 and channels['level2/f'] == 256 and channels['level2/g'] == 192
    assert channels['level3/d'] == 512 and channels['level1/i'] == 128 and channels['level0/up'] == 8
    assert [l.name for l in model.needed_layers(['e2'])] == ['e1', 'e1_pool', 'e2']


def test_instance_norm_level_1_adds_its_variables():
    with tf.Graph().as_default():
        model.PyNET(tf.placeholder(tf.float32, [1, 32, 32, 4]), instance_norm_level_1=True)
        count = len(tf.global_variables())
    # 4 blocks of 4 branches x 2 convs, each conv with shift and scale
    assert count == 437 + 4 * 4 * 2 * 2


def test_row_strip_convolutions_equal_same_convolution():
    rng = np.random.default_rng(0)
    # (kernel, height, width, channels, patch budget, strips): 4 rows a strip, the last one shorter; a budget
    # under one row (strips of 1 row); a budget above the whole matrix (one op, no strips).
    cases = [(9, 37, 20, 5, 9 * 9 * 5 * 20 * 4, 10), (3, 16, 16, 3, 1, 16), (7, 8, 8, 4, 10 ** 9, 1)]
    for size, height, width, channels, budget, expected_strips in cases:
        with tf.Graph().as_default():
            x = tf.constant(rng.standard_normal((2, height, width, channels)).astype(np.float32))
            kernel = tf.constant(rng.standard_normal((size, size, channels, 6)).astype(np.float32))
            whole = model.conv2d_same(x, kernel)
            strips = model.conv2d_same(x, kernel, max_patch_values=budget)
            ops = [op.type for op in tf.get_default_graph().get_operations()].count('Conv2D')
            with tf.Session() as sess:
                a, b = sess.run([whole, strips])
        assert ops == 1 + expected_strips
        assert b.shape == a.shape
        np.testing.assert_allclose(b, a, atol=1e-4)


def test_row_strip_limit_travels_with_the_weights():
    with tf.Graph().as_default():
        model.PyNET(tf.placeholder(tf.float32, [1, 64, 64, 4]), weights=model.PyNETWeights(max_patch_values=10 ** 5))
        split = [op.type for op in tf.get_default_graph().get_operations()].count('Conv2D')
    with tf.Graph().as_default():
        model.PyNET(tf.placeholder(tf.float32, [1, 64, 64, 4]))
        whole = [op.type for op in tf.get_default_graph().get_operations()].count('Conv2D')
    assert split > whole


def test_unpadded_rows_convolution_is_a_band_of_the_same_convolution():
    # pad_rows=False (what render.py's bands use) gives the rows of the SAME convolution that its input fully covers.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 20, 11, 3)).astype(np.float32)
    kernel = rng.standard_normal((7, 7, 3, 4)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        whole = sess.run(model.conv2d_same(tf.constant(x), tf.constant(kernel)))
        band = sess.run(model.conv2d_same(tf.constant(x[:, 5:17]), tf.constant(kernel), pad_rows=False))
    assert band.shape == (1, 6, 11, 4)
    np.testing.assert_allclose(band, whole[:, 8:14], atol=1e-4)
