"""The rendering engine (render.py): any size, exact tiles, precision fallback, progress."""
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import model
import render
import utils
from conftest import REPO, fixture_folder



def save_checkpoint(path, seed=0, kernel_gain=0.0, output_gain=10.0, instance_norm_level_1=False):
    """A checkpoint of the PyNET variables. kernel_gain=0 keeps the initialiser's weights (outputs
    near 0.5 everywhere); kernel_gain>0 draws He-scaled kernels, so outputs vary strongly with the
    input and far-away pixels matter: what the tiling tests need."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        weights = model.PyNETWeights()
        model.PyNET(tf.placeholder(tf.float32, [1, None, None, 4]), weights=weights,
                    instance_norm_level_1=instance_norm_level_1)
        values = {}
        if kernel_gain:
            for key, var in weights.variables.items():
                shape = var.shape.as_list()
                if key.endswith('/kernel'):
                    fan_in = shape[0] * shape[1] * (shape[3] if '/up' in key else shape[2])
                    value = rng.standard_normal(shape) * kernel_gain * np.sqrt(2.0 / fan_in)
                    if key.endswith('out/kernel'):
                        value *= output_gain
                elif key.endswith('/bias'):
                    value = rng.standard_normal(shape) * 0.05
                elif key.endswith('/scale'):       # instance norm away from its initial 1 and 0
                    value = rng.uniform(0.5, 1.5, shape)
                elif key.endswith('/shift'):
                    value = rng.standard_normal(shape) * 0.2
                else:
                    continue
                values[var] = value.astype(np.float32)
        # One run for all of them (a run per variable would build an executor for each).
        feeds = {var: tf.placeholder(tf.float32, var.shape) for var in values}
        assign = [var.assign(feeds[var]) for var in values]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(assign, {feeds[var]: value for var, value in values.items()})
            checkpoints.save_variables(sess, tf.train.Saver(weights.in_creation_order()), path)
    return path


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    with fixture_folder(tmp_path_factory, 'render_ckpt') as folder:
        yield {'varied': save_checkpoint(str(folder / 'varied.ckpt'), seed=1, kernel_gain=0.8)}


def packed_image(h, w, seed=0):
    return np.random.default_rng(seed).random((h, w, 4)).astype(np.float32)


@pytest.mark.parametrize('tile', [0, 16])
def test_any_size_gives_exact_output_size(ckpt, tile):
    # In one piece at every level; streamed (tile=16: 23x37 and 37x53 stream) at level 0 here, and at every
    # level on a 100x190 image by test_streamed_equals_one_piece_at_every_level (a plan per level costs seconds).
    with render.Renderer(ckpt['varied'], level=0, use_gpu=False, tile=tile) as renderer:
        for h, w in [(1, 1), (3, 2), (23, 37)]:       # tiny: padding longer than the image
            out = renderer.render(packed_image(h, w), progress=False)
            assert out.shape == (2 * h, 2 * w, 3) and out.dtype == np.float32
            assert np.isfinite(out).all()
        x = packed_image(37, 53)                       # not a multiple of 16 (nor 32 on the mosaic)
        for level in utils.LEVELS if not tile else (0,):
            renderer.level = level
            out = renderer.render(x, progress=False)
            assert out.shape == (-(-74 // 2 ** level), -(-106 // 2 ** level), 3), (level, out.shape)
            assert np.isfinite(out).all() and out.std() > 1e-3


def test_streamed_engine_is_prepared_only_when_a_photo_needs_it(ckpt):
    # 37x53 pads to 48x64: more than 32x32, so it streams; 30x20 pads to 32x32, one piece.
    with render.Renderer(ckpt['varied'], use_gpu=False, tile=32, largest=(30, 20)) as renderer:
        assert not renderer.plans and not renderer.streams(30, 20) and renderer.streams(37, 53)
        renderer.render(packed_image(30, 20), progress=False)
        assert not renderer.plans
    with render.Renderer(ckpt['varied'], level=5, use_gpu=False, tile=32, largest=(37, 53)) as renderer:
        assert list(renderer.plans) == [5]


def test_e2_is_stored_only_in_bfloat16_and_half_and_quarter_size_passes_take_taller_bands(ckpt):
    with render.Renderer(ckpt['varied'], level=2, use_gpu=False, tile=32, largest=(1, 1)) as renderer:
        plan = renderer._plan()
        bfloat16_plan = render._Plan(renderer.weights, 2, renderer.norms, tf.bfloat16)
    # In float32, e2 (S/2) is computed again from the input by every pass that reads it, never stored (0.19 GB at
    # 12 MP); e3 (S/4), which reads a normalised block, is stored. In bfloat16 e2 is stored like the others.
    assert 'e2' in plan.recomputed and 'e2' not in plan.stored
    assert not bfloat16_plan.recomputed and 'e2' in bfloat16_plan.stored
    streams = {p.name: p for p in plan.passes if isinstance(p, render._Stream)}
    assert not any('e2' in p.reads() for p in plan.passes)
    assert [name for name, p in streams.items() if 'conv:e2' in p.reads()] == ['e2 conv2']
    assert 'e3' in plan.stored and plan.low.reads() == ['e3']
    assert model.INPUT in streams['e3 conv1'].reads() and model.INPUT in streams['level2/a conv1'].reads()
    # Passes whose sinks are at S/4 take 4x the rows of a band (as many of their sinks' pixels); those at S/2
    # 2x in bfloat16, 1x in float32.
    assert streams['e3 conv1'].band_factor() == 4       # computes e1 at S and e2 at S/2 too, but stores e3's convs
    bfloat16_streams = {p.name: p for p in bfloat16_plan.passes if isinstance(p, render._Stream)}
    names = list(streams)
    assert list(bfloat16_streams) == names[:names.index('e2 conv2') + 1] + ['e2 output'] + \
        names[names.index('e2 conv2') + 1:]
    assert [name for name, p in bfloat16_streams.items() if model.INPUT in p.reads()] == ['e2 conv1']
    assert [name for name, p in bfloat16_streams.items() if 'e2' in p.reads()] == \
        ['e3 conv1', 'level2/a conv1', 'level2/b conv1', 'level2/b output', 'level2/g conv1']
    for name, stream in bfloat16_streams.items():
        # (the output pass of level 2 writes level 2's output, at S/2)
        quarter, half = name.startswith(('e3 ', 'level3/')), name.startswith(('e2 ', 'level2/', 'output'))
        assert stream.band_factor() == (4 if quarter else 2 if half else 1), name
        if name in streams:
            assert streams[name].band_factor() == (4 if quarter else 1), name
    steps = streams['level3/a conv1'].steps(112, 8)
    assert steps[0] == (0, 64) and steps[-1][0] + steps[-1][1] >= 224


def test_passes_have_graphs_of_their_own_fed_one_copy_of_the_weights(ckpt):
    # A graph per pass: TensorFlow prunes a session's whole graph for every executor it builds. No conditionals:
    # they were slow to build and to prepare. The weights: placeholders fed the renderer's arrays, not copies.
    with render.Renderer(ckpt['varied'], level=0, use_gpu=False, tile=32, largest=(1, 1)) as renderer:
        plan = renderer._plan()
        assert len({id(p.tf_graph) for p in plan.passes}) == len(plan.passes) > 40
        arrays = {id(value) for value in renderer.weights.values.values()}
        fed = set()
        for p in plan.passes:
            types = {op.type for op in p.tf_graph.get_operations()}
            assert not types & {'If', 'StatelessIf', 'Switch', 'Merge', 'VarHandleOp', 'VariableV2'}, (p, types)
            assert p.weight_feed and all(id(value) in arrays for value in p.weight_feed.values())
            fed.update(id(value) for value in p.weight_feed.values())
        # Every weight that level 0 needs is read by some pass, and no other (not the other levels' outputs').
        needed = tuple(layer.name + '/' for layer in model.needed_layers([model.OUTPUTS[0]]))
        assert fed == {id(value) for key, value in renderer.weights.values.items() if key.startswith(needed)}
        assert len(fed) < len(arrays)
        # pass_hook wraps every pass, in order (what bench/render_passes.py times).
        names = []

        @contextlib.contextmanager
        def hook(name):
            names.append(name)
            yield
        renderer.render(packed_image(37, 53), progress=False, pass_hook=hook)
        assert names == [p.name for p in plan.passes]


def test_low_memory_maps_large_allocations(ckpt, monkeypatch):
    calls = []
    monkeypatch.setattr(render, '_MALLOPT', lambda *args: calls.append(args))
    with render.Renderer(ckpt['varied'], use_gpu=False, tile=0):
        assert calls == []
    with render.Renderer(ckpt['varied'], use_gpu=False, tile=0, low_memory=True):
        assert calls == [(render._M_MMAP_THRESHOLD, render.MMAP_THRESHOLD)]


def test_padding_reflects_and_crop_keeps_the_image(ckpt):
    # Rendering an image and the same image already reflected to 48x64 agree on the original area.
    x = packed_image(40, 57)
    padded = render.pad_to_multiple(x)
    assert padded.shape == (48, 64, 4)
    np.testing.assert_array_equal(padded[40:42, :57], x[38:36:-1])
    np.testing.assert_array_equal(padded[:40, 57:59], x[:, 55:53:-1])
    with render.Renderer(ckpt['varied'], use_gpu=False, tile=0) as renderer:
        a = renderer.render(x)
        b = renderer.render(padded)
    np.testing.assert_allclose(a, b[:80, :114], atol=1e-6)


STREAMED_CHECK = r'''
import json, sys
import numpy as np
import render
checkpoint, tile, sabotage = sys.argv[1], int(sys.argv[2]), sys.argv[3] == 'sabotage'
levels = [int(l) for l in sys.argv[4].split(',')]
x = np.random.default_rng(3).random((100, 190, 4)).astype(np.float32)     # padded to 112 x 192
if sabotage:        # carry the first rows of each window over to the next band instead of its last ones
    import tensorflow.compat.v1 as tf
    def wrong_rows(stream, f):
        rows = f.carried()
        if not rows:
            return f.rows
        carry = tf.placeholder(tf.float32, [1, None, None, f.channels])
        window = tf.concat([carry, f.rows], axis=1)
        stream.carries.append((f, rows, carry, window[:, :rows]))
        return window
    render._Stream._window = wrong_rows
result = {}
one_piece = render.Renderer(checkpoint, use_gpu=False, tile=0)
for level in levels:
    one_piece.level = level
    whole = one_piece.render(x)
    with render.Renderer(checkpoint, level=level, use_gpu=False, tile=tile) as r:
        calls = []
        streamed = r.render(x, progress=lambda done, total: calls.append((done, total)))
    result[level] = {'diff': float(np.abs(streamed - whole).max()), 'std': float(whole.std()),
                     'shapes': [list(whole.shape), list(streamed.shape)],
                     'calls': calls, 'band': render.band_height(tile, 192)}
print(json.dumps(result))
'''


def streamed_check(checkpoint, tile, sabotage=False, levels=range(6), onednn=False):
    # Eigen kernels (oneDNN off) unless asked, so that bands and the whole image differ only by summation order.
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='1' if onednn else '0', PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, '-c', STREAMED_CHECK, checkpoint, str(tile),
                           'sabotage' if sabotage else 'exact', ','.join(map(str, levels))],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def test_streamed_equals_one_piece_at_every_level(ckpt):
    # tile 48: bands of 8 packed rows over a 112-row image, the last band shorter, every stage in several bands
    # (level 2's blocks at half size in bands of 4 rows); instance norm with scales and shifts away from 1 and 0.
    result = streamed_check(ckpt['varied'], 48)
    for level, r in result.items():
        assert r['band'] == 8
        # 100x190 packed (padded to 112x192 and cropped back): 200x380 at level 0, halved and rounded up above.
        size = [-(-200 // 2 ** level), -(-380 // 2 ** level), 3]
        assert r['shapes'] == [size, size], (level, r['shapes'])
        assert r['std'] > 0.1, (level, r)                # the weights make a varied picture
        # Equal up to float rounding, well within 1/255 (AVX2 kernels: up to 3e-5; AVX-512 ones: up to 1.2e-4).
        assert r['diff'] <= 5e-4, (level, r)
        calls = r['calls']
        assert calls[-1][0] == calls[-1][1] == len(calls) and calls[0][0] == 1
        assert len(calls) > 20 if level <= 2 else len(calls) > 5, (level, len(calls))


def test_streamed_equals_one_piece_with_onednn(ckpt):
    # TensorFlow's oneDNN kernels, on by default on CPUs with AVX-512: a convolution given fewer rows than its
    # kernel returned its input's shape there, not an empty tensor, which broke the first and last bands.
    r = streamed_check(ckpt['varied'], 48, levels=(0,), onednn=True)[0]
    assert r['std'] > 0.1 and r['diff'] <= 1e-3, r


def test_streams_depend_on_their_carried_rows(ckpt):
    # The check above is sensitive: carrying the wrong rows from band to band breaks the picture.
    result = streamed_check(ckpt['varied'], 48, sabotage=True, levels=(0, 2))
    assert result[0]['diff'] > 1 / 255 and result[2]['diff'] > 1 / 255, result


def test_combine_moments_of_unequal_parts():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((1000, 3)) * [1, 5, 0.1] + [0, -2, 7]
    cuts = [0, 7, 7, 250, 999, 1000]         # unequal parts, one of them empty, one of one pixel
    parts = [(b - a, values[a:b].mean(0) if b > a else np.zeros(3), values[a:b].var(0) if b > a else np.zeros(3))
             for a, b in zip(cuts, cuts[1:])]
    mean, variance = render.combine_moments(parts)
    np.testing.assert_allclose(mean, values.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(variance, values.var(0), rtol=1e-5)


def test_bands_cover_the_image_and_every_lag():
    stream = render._Stream('test', tf.bfloat16)
    source = stream.source('x', 1, 8)
    deep = stream.op(source, lambda w: w, lookback=3, lookahead=3)     # lags 3 rows at S/2: 12 rows of 2S
    stream.sink(deep, 'y')
    assert deep.lag == 12 and source.carried() == 6
    assert stream.band_factor() == 2        # its sink is at S/2, in bfloat16: bands of twice the rows
    for height, band in [(112, 8), (1472, 128), (16, 512), (48, 40)]:
        steps = stream.steps(height, band)
        assert steps[0][0] == 0 and all(p + n == q for (p, n), (q, _) in zip(steps, steps[1:]))
        end = steps[-1][0] + steps[-1][1]
        assert 2 * height + 12 <= end < 2 * height + 12 + 2 * render.BAND_ALIGN
        assert all(n % (2 * render.BAND_ALIGN) == 0 and n <= 2 * band * 2 for _, n in steps)
    assert render.band_height(512, 1984) == 128 and render.band_height(16, 5000) == render.BAND_ALIGN


def test_bfloat16_falls_back_to_float32_with_a_message(ckpt, monkeypatch, capsys):
    x = packed_image(16, 16)
    with render.Renderer(ckpt['varied'], use_gpu=False, tile=0) as renderer:
        reference = renderer.render(x)
    monkeypatch.setattr(utils, 'cpu_supports_bfloat16', lambda: False)
    with render.Renderer(ckpt['varied'], use_gpu=False, tile=0, precision='bfloat16') as renderer:
        assert renderer.precision == 'float32'
        out = renderer.render(x)
    lines = [l for l in capsys.readouterr().err.splitlines() if 'bfloat16' in l]
    assert len(lines) == 1 and 'float32' in lines[0]
    np.testing.assert_array_equal(out, reference)


@pytest.mark.skipif(not utils.cpu_supports_bfloat16(),
                    reason='this CPU has no native bfloat16 (AVX512-BF16 or AMX): oneDNN does not rewrite to bfloat16')
def test_bfloat16_renders_close_to_float32_where_supported(ckpt):
    x = packed_image(32, 32)
    outs = {}
    for precision in utils.RENDER_PRECISIONS:
        with render.Renderer(ckpt['varied'], use_gpu=False, tile=0, precision=precision) as renderer:
            assert renderer.precision == precision
            outs[precision] = renderer.render(x)
    a, b = outs['bfloat16'], outs['float32']
    assert a.shape == b.shape
    # Rounded, not broken: bfloat16 keeps 8 bits of mantissa (its accuracy on trained weights is in BENCHMARKS.md).
    assert 0 < np.abs(a - b).mean() < 0.05 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_streamed_passes_store_their_maps_in_bfloat16_for_bfloat16(ckpt, monkeypatch):
    # On any CPU: the stored dtype is set directly (precision=bfloat16 falls back to float32 where the CPU has no
    # native bfloat16), and the passes then compute in bfloat16 (slowly, where the CPU has no native bfloat16).
    taken = []

    def take(spare, shape, dtype=np.float32, take=render._take):
        taken.append((shape[-1], np.dtype(dtype)))
        return take(spare, shape, dtype)
    monkeypatch.setattr(render, '_take', take)
    x = packed_image(40, 64)
    # Level 3: every kind of stored map (S/2 and S/4 convolutions, e3, the low pass's) for a third of level 0's
    # time to build.
    with render.Renderer(ckpt['varied'], level=3, use_gpu=False, tile=16, largest=(1, 1)) as renderer:
        exact = renderer.render(x, progress=False)
        assert {dtype for _, dtype in taken} == {np.dtype(np.float32)}
        renderer.plans.clear()
        taken.clear()
        renderer.stored_dtype = tf.bfloat16
        rounded = renderer.render(x, progress=False)
    # Every stored map in bfloat16 but the output image (3 channels), which is float32 as always.
    assert taken and all(dtype == (np.float32 if channels == 3 else tf.bfloat16.as_numpy_dtype)
                         for channels, dtype in taken), taken
    assert rounded.dtype == np.float32 and rounded.shape == exact.shape
    # Computed in bfloat16 (8 bits of mantissa), not broken: close to float32's, but not equal. On these weights
    # the one-piece graph in bfloat16 (oneDNN's rewrite) is as far: mean 0.030, correlation 0.986 (AMD EPYC).
    assert 0 < np.abs(rounded - exact).mean() < 0.05 and np.corrcoef(rounded.ravel(), exact.ravel())[0, 1] > 0.98
    # The image itself is computed in float32: not only values that bfloat16 can hold.
    assert not np.array_equal(rounded, rounded.astype(tf.bfloat16.as_numpy_dtype).astype(np.float32))


def test_bfloat16_advice_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(utils, 'cpu_bfloat16_flag', lambda: None)
    assert render.bfloat16_advice() is None
    for flag, (speedup, psnr, _) in render.BFLOAT16_MEASURED.items():
        monkeypatch.setattr(utils, 'cpu_bfloat16_flag', lambda flag=flag: flag)
        note = render.bfloat16_advice()
        assert note.startswith('note: ') and '\n' not in note and flag in note
        assert '%.1fx' % speedup in note and '%d dB' % psnr in note


def test_instance_norm_level_1_renders_in_one_piece(tmp_path, capsys):
    path = save_checkpoint(str(tmp_path / 'norm1.ckpt'), instance_norm_level_1=True)
    with render.Renderer(path, use_gpu=False, tile=32, instance_norm_level_1=True) as renderer:
        assert renderer.tile == 0
        assert renderer.render(packed_image(20, 24)).shape == (40, 48, 3)
    assert 'one piece' in capsys.readouterr().err


@pytest.mark.parametrize('kwargs, fragment', [({'precision': 'float16'}, 'precision'),
                                              ({'tile': 8}, 'tile'), ({'level': 6}, 'level')])
def test_bad_settings_are_user_errors(ckpt, kwargs, fragment):
    with pytest.raises(utils.UserError, match=fragment):
        render.Renderer(ckpt['varied'], use_gpu=False, **kwargs)


def test_bad_input_shape_is_a_user_error(ckpt):
    with render.Renderer(ckpt['varied'], use_gpu=False, tile=0) as renderer:
        for bad in [np.zeros((8, 8, 3)), np.zeros((0, 8, 4)), np.zeros((8, 8))]:
            with pytest.raises(utils.UserError, match='packed RAW'):
                renderer.render(bad)


def test_new_stored_arrays_reuse_spare_ones_of_their_shape():
    spare = [np.zeros((4, 6, 8), np.float32), np.ones((2, 3, 8), np.float32)]
    reused = spare[1]
    assert render._take(spare, (2, 3, 8)) is reused and len(spare) == 1
    fresh = render._take(spare, (2, 3, 4))
    assert fresh.shape == (2, 3, 4) and fresh.dtype == np.float32 and len(spare) == 1
    bfloat16 = tf.bfloat16.as_numpy_dtype
    fresh = render._take(spare, (4, 6, 8), bfloat16)        # a float32 array of that shape is not reused
    assert fresh.shape == (4, 6, 8) and fresh.dtype == bfloat16 and len(spare) == 1
