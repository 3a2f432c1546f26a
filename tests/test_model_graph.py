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
    rng = np.random.default_rng(0)
    x = rng.random((1, 32, 48, 4)).astype(np.float32)
    with tf.Graph().as_default():
        weights = model.PyNETWeights()
        inp = tf.placeholder(tf.float32, [1, None, None, 4])
        whole = model.PyNET(inp, weights=weights)
        e1 = model.encoder_level_1(weights, inp)
        u1a, u1b, _ = model.lower_levels(weights, e1)
        out0, out1 = model.upper_levels(weights, e1, u1a, u1b)
        assert len(tf.global_variables()) == 437
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            a, b = sess.run([whole[0], out0], {inp: x})
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a.min() >= -0.08 - 1e-6 and a.max() <= 1.08 + 1e-6


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
            with model.row_strip_convolutions(budget):
                strips = model.conv2d_same(x, kernel)
            outside = model.conv2d_same(x, kernel)      # the setting ends with the block
            ops = [op.type for op in tf.get_default_graph().get_operations()].count('Conv2D')
            with tf.Session() as sess:
                a, b = sess.run([whole, strips])
        assert ops == 2 + expected_strips and outside.shape == whole.shape
        assert b.shape == a.shape
        np.testing.assert_allclose(b, a, atol=1e-4)
