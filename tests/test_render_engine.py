"""The rendering engine (render.py): any size, exact tiles, precision fallback, progress."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import model
import render
import utils
from conftest import REPO



def save_checkpoint(path, seed=0, kernel_gain=0.0, output_gain=10.0, instance_norm_level_1=False):
    """A checkpoint of the PyNET variables. kernel_gain=0 keeps the initialiser's weights (outputs
    near 0.5 everywhere); kernel_gain>0 draws He-scaled kernels, so outputs vary strongly with the
    input and far-away pixels matter: what the tiling tests need."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        weights = model.PyNETWeights()
        model.PyNET(tf.placeholder(tf.float32, [1, None, None, 4]), weights=weights,
                    instance_norm_level_1=instance_norm_level_1)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            if kernel_gain:
                for key, var in weights.variables.items():
                    shape = var.shape.as_list()
                    if key.endswith('/kernel'):
                        fan_in = shape[0] * shape[1] * (shape[3] if '/up' in key else shape[2])
                        value = rng.standard_normal(shape) * kernel_gain * np.sqrt(2.0 / fan_in)
                        if key.endswith('out/kernel'):
                            value *= output_gain
                        var.load(value.astype(np.float32), sess)
                    elif key.endswith('/bias'):
                        var.load((rng.standard_normal(shape) * 0.05).astype(np.float32), sess)
            utils.save_variables(sess, tf.train.Saver(weights.in_creation_order()), path)
    return path


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('render_ckpt')
    return {'varied': save_checkpoint(str(folder / 'varied.ckpt'), seed=1, kernel_gain=0.8)}


def packed_image(h, w, seed=0):
    return np.random.default_rng(seed).random((h, w, 4)).astype(np.float32)


@pytest.mark.parametrize('tile', [0, 32])
def test_any_size_gives_exact_output_size_at_every_level(checkpoints, tile):
    with render.Renderer(checkpoints['varied'], level=0, use_gpu=False, tile=tile) as renderer:
        for h, w in [(1, 1), (3, 2), (23, 37)]:       # tiny: padding longer than the image
            out = renderer.render(packed_image(h, w), progress=False)
            assert out.shape == (2 * h, 2 * w, 3) and out.dtype == np.float32
            assert np.isfinite(out).all()
        x = packed_image(37, 53)                       # not a multiple of 16 (nor 32 on the mosaic)
        for level in utils.LEVELS:
            renderer.level = level
            out = renderer.render(x, progress=False)
            assert out.shape == (-(-74 // 2 ** level), -(-106 // 2 ** level), 3), (level, out.shape)
            assert np.isfinite(out).all() and out.std() > 1e-3


def test_padding_reflects_and_crop_keeps_the_image(checkpoints):
    # Rendering an image and the same image already reflected to 48x64 agree on the original area.
    x = packed_image(40, 57)
    padded = render.pad_to_multiple(x)
    assert padded.shape == (48, 64, 4)
    np.testing.assert_array_equal(padded[40:42, :57], x[38:36:-1])
    np.testing.assert_array_equal(padded[:40, 57:59], x[:, 55:53:-1])
    with render.Renderer(checkpoints['varied'], use_gpu=False, tile=0) as renderer:
        a = renderer.render(x)
        b = renderer.render(padded)
    np.testing.assert_allclose(a, b[:80, :114], atol=1e-6)


TILED_CHECK = r'''
import json, sys
import numpy as np
import render
checkpoint, level = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(3).random((100, 190, 4)).astype(np.float32)
with render.Renderer(checkpoint, level=level, use_gpu=False, tile=0) as r:
    whole = r.render(x)
result = {'std': float(whole.std())}
with render.Renderer(checkpoint, level=level, use_gpu=False, tile=64) as r:
    calls = []
    tiled = r.render(x, progress=lambda done, total: calls.append((done, total)))
    result['diff'] = float(np.abs(tiled - whole).max())
    result['calls'] = calls
    render.HALO = 20          # a halo smaller than the receptive field must show at the seams
    result['diff_small_halo'] = float(np.abs(r.render(x, progress=False) - whole).max())
print(json.dumps(result))
'''


def test_tiled_equals_one_piece_across_seams(checkpoints):
    # 100x190 packed in tiles of 64: 2x3 tiles, and the middle column's halo stays inside the image,
    # so its seams are computed from tile data only. Eigen kernels (oneDNN off) for exact arithmetic.
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0', PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, '-c', TILED_CHECK, checkpoints['varied'], '1'], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['std'] > 0.1                       # the weights make a varied picture
    assert result['diff'] <= 1 / 255, result
    assert result['diff'] <= 1e-4, result            # in fact equal up to float rounding
    assert result['diff_small_halo'] > 1 / 255, result
    calls = result['calls']
    assert calls[-1][0] == calls[-1][1] == len(calls) and calls[0][0] == 1


def test_tile_boxes_cover_the_image_once():
    for h, w, tile in [(48, 64, 16), (1472, 1984, 512), (16, 16, 512), (130, 190, 64)]:
        cover = np.zeros((h, w), int)
        for y0, y1, x0, x1 in render.tile_boxes(h, w, tile):
            assert y0 % 2 == 0 and x0 % 2 == 0 and y1 - y0 <= tile + 2 and x1 - x0 <= tile + 2
            cover[y0:y1, x0:x1] += 1
        assert (cover == 1).all()


def test_bfloat16_falls_back_to_float32_with_a_message(checkpoints, monkeypatch, capsys):
    x = packed_image(16, 16)
    with render.Renderer(checkpoints['varied'], use_gpu=False, tile=0) as renderer:
        reference = renderer.render(x)
    monkeypatch.setattr(utils, 'cpu_supports_bfloat16', lambda: False)
    with render.Renderer(checkpoints['varied'], use_gpu=False, tile=0, precision='bfloat16') as renderer:
        assert renderer.precision == 'float32'
        out = renderer.render(x)
    lines = [l for l in capsys.readouterr().err.splitlines() if 'bfloat16' in l]
    assert len(lines) == 1 and 'float32' in lines[0]
    np.testing.assert_array_equal(out, reference)


def test_bfloat16_renders_close_to_float32_where_supported(checkpoints, monkeypatch):
    monkeypatch.setattr(utils, 'cpu_supports_bfloat16', lambda: True)
    x = packed_image(32, 32)
    outs = {}
    for precision in render.PRECISIONS:
        with render.Renderer(checkpoints['varied'], use_gpu=False, tile=0, precision=precision) as renderer:
            assert renderer.precision == precision
            outs[precision] = renderer.render(x)
    a, b = outs['bfloat16'], outs['float32']
    assert a.shape == b.shape
    # Rounded, not broken: bfloat16 keeps 8 bits of mantissa (its accuracy on trained weights is in BENCHMARKS.md).
    assert 0 < np.abs(a - b).mean() < 0.05 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_instance_norm_level_1_renders_in_one_piece(tmp_path, capsys):
    path = save_checkpoint(str(tmp_path / 'norm1.ckpt'), instance_norm_level_1=True)
    with render.Renderer(path, use_gpu=False, tile=32, instance_norm_level_1=True) as renderer:
        assert renderer.tile == 0
        assert renderer.render(packed_image(20, 24)).shape == (40, 48, 3)
    assert 'one piece' in capsys.readouterr().err


@pytest.mark.parametrize('kwargs, fragment', [({'precision': 'float16'}, 'precision'),
                                              ({'tile': 8}, 'tile'), ({'level': 6}, 'level')])
def test_bad_settings_are_user_errors(checkpoints, kwargs, fragment):
    with pytest.raises(utils.UserError, match=fragment):
        render.Renderer(checkpoints['varied'], use_gpu=False, **kwargs)


def test_bad_input_shape_is_a_user_error(checkpoints):
    with render.Renderer(checkpoints['varied'], use_gpu=False, tile=0) as renderer:
        for bad in [np.zeros((8, 8, 3)), np.zeros((0, 8, 4)), np.zeros((8, 8))]:
            with pytest.raises(utils.UserError, match='packed RAW'):
                renderer.render(bad)
