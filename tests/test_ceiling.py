"""bench/ceiling.py: PyNET's convolutions as model.convolutions lists them, their cost, and the benchmark's run."""
import os
import sys

import tensorflow.compat.v1 as tf

import checkpoints
import model
from conftest import REPO, assert_one_line_error

sys.path.insert(0, REPO)
from bench import ceiling  # noqa: E402


def test_convolutions_cost_what_the_published_network_costs():
    # The spec's figures: 671.5 GFLOP for packed 224x224, 39.1 TFLOP for a 12 MP photo (packed 1472x1984).
    assert round(ceiling.network_flops(224, 224) / 1e9, 1) == 671.5
    assert round(ceiling.network_flops(1472, 1984) / 1e12, 1) == 39.1
    # A coarser level needs fewer of them; level 5 only the encoder and level 5.
    assert ceiling.network_flops(224, 224, level=5) < ceiling.network_flops(224, 224, level=1) \
        < ceiling.network_flops(224, 224)


def test_convolutions_are_the_kernels_of_the_graph():
    with tf.Graph().as_default():
        variables = model.create_weights().variables
    convs = model.convolutions([model.OUTPUTS[0]])
    for conv in convs:
        shape = variables[conv.key + '/kernel'].shape.as_list()
        channels = [conv.filters, conv.in_channels] if conv.transposed else [conv.in_channels, conv.filters]
        assert shape == [conv.size, conv.size] + channels, conv
    # Every kernel that level 0 reads, and no other: level 1's and coarser levels' outputs are not on its way.
    kernels = {key[:-len('/kernel')] for key in variables if key.endswith('/kernel')}
    assert {c.key for c in convs} == kernels - {'level%d/out' % level for level in range(1, 6)}
    assert [c.scale for c in convs if c.transposed and c.key == 'level0/up'] == [0]


def test_ceiling_runs_and_sets_renders_against_the_convolutions(tmp_path, run):
    models = tmp_path / 'models'
    with tf.Graph().as_default():
        model.create_weights(trainable=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            checkpoints.save_variables(sess, tf.train.Saver(), checkpoints.checkpoint_path(str(models), 0, 1))
    benchmarks = open(os.path.join(REPO, 'BENCHMARKS.md')).read()
    result = run('bench/ceiling.py', 'size=32x48', 'precisions=float32', 'repeats=1', 'tile=16',
                 'models_dir=%s' % models, 'write=false')
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert 'Level 0 at packed 32x48: %.0f GFLOP' % (ceiling.network_flops(32, 48) / 1e9) in out
    for row in ('| convolutions alone | ', '| fastest convolution alone | ', '| render, one piece (tile=0) | ',
                '| render, in bands (tile=16) | ', '| S/2 (e2, level 2) | '):
        assert row in out, out
    assert open(os.path.join(REPO, 'BENCHMARKS.md')).read() == benchmarks      # write=false


def test_describe_names_a_convolution_shape():
    assert ceiling.describe((1, 7, 192, 64, False)) == '7x7, 192 -> 64 channels at S/2'
    assert ceiling.describe((0, 3, 32, 8, True)) == '3x3 transposed, 32 -> 8 channels at S'


def test_ceiling_refuses_unknown_precisions_and_tiny_sizes(run):
    assert_one_line_error(run('bench/ceiling.py', 'precisions=float16', 'renders=false'), 'precisions=float16',
                          'float32, bfloat16')
    assert_one_line_error(run('bench/ceiling.py', 'size=8x64', 'renders=false'), 'size=8x64', 'at least 16x16')


def test_render_passes_stages_split_the_convolutions_and_set_passes_against_them():
    from bench import render_passes
    convs = render_passes.stage_convolutions()
    assert list(convs) == [name for name, _, _ in render_passes.STAGES]
    keys = [c.key for stage in convs.values() for c in stage]
    assert sorted(keys) == sorted(c.key for c in model.convolutions([model.OUTPUTS[0]]))    # each exactly once
    assert {c.scale for c in convs['level 2']} == {1, 2}        # level 2's own, and level 3's upsamplings to it
    assert 'level0/up' in {c.key for c in convs['levels 1 and 0']}
    passes = {'e2 conv1': {'seconds': 1.0}, 'level2/a conv1': {'seconds': 3.0}, 'output': {'seconds': 8.0}}
    rows = render_passes.stages(passes, {'level3/e': 0.5, 'level2/h': 2.5, 'all': 9.5},
                                {'encoder and levels 5-3': 0.4, 'level 2': 1.5, 'levels 1 and 0': 6.0})
    assert rows == [('encoder and levels 5-3', 1.0, 0.5, 0.4), ('level 2', 3.0, 2.0, 1.5),
                    ('levels 1 and 0', 8.0, 7.0, 6.0)]
    text = render_passes.report_text(dict(size='64x64', tile=16, precision='float32', command='c'),
                                     {n: dict(r, bands=1) for n, r in passes.items()}, rows, 12.0, 'machine',
                                     ['start', 'end'])
    assert '| level 2 | 3.0 | 2.0 | 1.5 | 1.50x | 2.00x |' in text
