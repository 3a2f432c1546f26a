"""test_model.py: checkpoints written by our code render at every level, any size, clipped; bad input fails on one line."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import checkpoints
import image_io
import render
import utils
from conftest import assert_one_line_error, run_script

ITERATION = 7
EXACT_ENV = {'TF_ENABLE_ONEDNN_OPTS': '0'}
_CHECKPOINTS = {}


def write_test_checkpoint(folder, seed=0):
    """A checkpoint saved by checkpoints.save_variables for every level (and as the published model), same weights.

    Kernels are drawn with std sqrt(1/fan_in) rather than the training init's 0.01, so that the
    outputs depend visibly on the input and reach past [0, 1] (which tests the clipping).
    """
    import tensorflow.compat.v1 as tf
    import model
    with tf.Graph().as_default():
        model.PyNET(tf.placeholder(tf.float32, [1, None, None, 4]))
        variables = model.generator_variables()
        assigns = []
        for i, var in enumerate(variables):
            shape = var.shape.as_list()
            if len(shape) == 4:
                # The last kernel makes the level-0 RGB: a larger gain pushes it past [0, 1].
                gain = 6.0 if i == len(variables) - 2 else 1.0
                std = gain / (shape[0] * shape[1] * shape[2]) ** 0.5
                assigns.append(var.assign(tf.random.normal(shape, stddev=std, seed=seed + i)))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(assigns)
            path = checkpoints.save_variables(sess, tf.train.Saver(variables), checkpoints.checkpoint_path(folder, 0, ITERATION))
    copies = [checkpoints.checkpoint_path(folder, level, ITERATION) for level in utils.LEVELS[1:]]
    copies.append(checkpoints.original_checkpoint_path(folder))
    for copy in copies:
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        for suffix in ('.index', '.data-00000-of-00001'):
            try:
                os.link(path + suffix, copy + suffix)     # 190 MB each: share, don't copy
            except OSError:
                shutil.copyfile(path + suffix, copy + suffix)
    return folder


def shared_models_dir(tmp_path_factory):
    """The models folder of write_test_checkpoint, made once per test session."""
    if 'models' not in _CHECKPOINTS:
        _CHECKPOINTS['models'] = write_test_checkpoint(str(tmp_path_factory.mktemp('models')))
    return _CHECKPOINTS['models']


models_dir = pytest.fixture(shared_models_dir, name='models_dir', scope='session')


def random_mosaic(height, width, seed=0):
    """A smooth 10-bit Zurich mosaic with some texture (values 64..1023)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 400 + 300 * np.sin(x / 7.0) * np.cos(y / 5.0)
    return np.clip(base + rng.normal(0, 60, (height, width)), 64, 1023).astype(np.uint16)


MOSAICS = {'levels': random_mosaic(64, 96, 0),       # packed 32x48
           'a': random_mosaic(70, 90, 1),            # packed 35x45: not a multiple of 16
           'b': random_mosaic(67, 99, 2)}            # odd: the last row and column are dropped


@pytest.fixture(scope='module')
def references(models_dir):
    """All six outputs of every mosaic of MOSAICS, from one plain PyNET graph restored with checkpoints.restore_variables.

    Padded and cropped as render.py does, so that they are what test_model.py must write.
    """
    import tensorflow.compat.v1 as tf
    import model
    path, _ = checkpoints.find_checkpoint(models_dir, 0)
    outputs = {}
    with tf.Graph().as_default():
        packed = tf.placeholder(tf.float32, [1, None, None, 4])
        levels = model.PyNET(packed)
        with tf.Session() as sess:
            checkpoints.restore_variables(sess, model.generator_variables(), path)
            for name, mosaic in MOSAICS.items():
                even = mosaic[:mosaic.shape[0] // 2 * 2, :mosaic.shape[1] // 2 * 2]
                x = image_io.pack_raw(even)
                got = sess.run(levels, {packed: render.pad_to_multiple(x, 16)[None]})
                outputs[name] = [o[0][:render.output_size(x.shape[0], x.shape[1], level)[0],
                                      :render.output_size(x.shape[0], x.shape[1], level)[1]]
                                 for level, o in zip(utils.LEVELS, got)]
    return outputs


def test_checkpoint_restores_and_every_level_has_its_size(models_dir, references):
    for level in utils.LEVELS:
        assert checkpoints.find_checkpoint(models_dir, level) == (checkpoints.checkpoint_path(models_dir, level, ITERATION),
                                                            ITERATION)
        out = references['levels'][level]
        scale = 2 ** (1 - level)
        assert out.shape == (int(32 * scale), int(48 * scale), 3), (level, out.shape)
        assert np.isfinite(out).all()
        assert -0.08 - 1e-6 <= out.min() and out.max() <= 1.08 + 1e-6
    assert references['levels'][0].std() > 0.02, 'the test weights should make the output depend on the input'


def test_dataset_folders_any_size_and_a_bad_file(models_dir, references, tmp_path):
    """Both full-resolution folders are rendered; odd and non-multiple-of-32 sizes come out at 2x the packed size."""
    dataset = tmp_path / 'raw_images'
    first = dataset / 'test' / 'huawei_full_resolution'
    second = dataset / 'full_resolution'
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    image_io.save_raw_png(str(first / 'a.png'), MOSAICS['a'])
    image_io.save_raw_png(str(second / 'b.png'), MOSAICS['b'])
    (second / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
    out = tmp_path / 'out'
    result = run_script('test_model.py', 'level=0', 'use_gpu=false', 'dataset_dir=%s' % dataset,
                        'models_dir=%s' % models_dir, 'output_dir=%s' % out, cwd=str(tmp_path), env=EXACT_ENV)
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
    assert len(errors) == 2 and 'broken.png' in errors[0], result.stderr
    assert 'b.png: 67x99 mosaic has an odd size' in result.stderr
    assert sorted(os.listdir(out)) == ['a_level_0_iteration_7.png', 'b_level_0_iteration_7.png']
    for name, shape in (('a', (70, 90, 3)), ('b', (66, 98, 3))):
        photo = np.asarray(Image.open(out / ('%s_level_0_iteration_7.png' % name)))
        assert photo.shape == shape and photo.dtype == np.uint8
        # Clipped to [0, 1], never rescaled: the 8-bit PNG is round(clip(render) * 255).
        expected = references[name][0]
        assert expected.min() < 0 and expected.max() > 1, 'the test weights should reach past [0, 1]'
        diff = np.abs(photo.astype(int) - image_io.to_uint(expected, 8).astype(int))
        assert diff.max() <= 1, diff.max()


def test_every_level_through_the_command_line(models_dir, references, tmp_path):
    """test_model.py level=L for L = 5..0 writes the level-L output of its checkpoint: H/2^L x W/2^L (rounded up)
    for an H x W mosaic, as the plain graph computes it. tile=16 renders the packed 32x48 image in bands of 8
    rows (the test above renders in one piece); levels 2 and 0 with low_memory=true, which must not change a pixel."""
    image_io.save_raw_png(str(tmp_path / 'levels.png'), MOSAICS['levels'])
    height, width = MOSAICS['levels'].shape
    for level in (5, 4, 3, 2, 1, 0):
        out = tmp_path / ('out%d' % level)
        result = run_script('test_model.py', 'level=%d' % level, 'use_gpu=false', 'input=%s' % (tmp_path / 'levels.png'),
                            'models_dir=%s' % models_dir, 'output_dir=%s' % out, 'tile=16',
                            *(['low_memory=true'] if level in (2, 0) else []), cwd=str(tmp_path), env=EXACT_ENV)
        assert result.returncode == 0, result.stderr[-2000:]
        assert os.listdir(out) == ['levels_level_%d_iteration_%d.png' % (level, ITERATION)]
        photo = np.asarray(Image.open(out / os.listdir(out)[0]))
        assert photo.shape == (-(-height // 2 ** level), -(-width // 2 ** level), 3), (level, photo.shape)
        diff = np.abs(photo.astype(int) - image_io.to_uint(references['levels'][level], 8).astype(int))
        assert diff.max() <= 1, (level, diff.max())
        assert photo.std() > 1, 'the picture should depend on the input'


def test_output_names_stay_distinct():
    from test_model import output_names
    assert output_names(['x/a.png', 'y/b.dng']) == ['a', 'b']
    assert output_names(['x/a.png', 'x/a.dng', 'y/a.png']) == ['a_png_1', 'a_dng', 'a_png_2']


# ----------------------------------------------------------------------------------------
# bad input: one line, no traceback, exit status 2 (all fail before TensorFlow loads)

def test_bad_input(models_dir, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (tmp_path / 'data' / 'test' / 'huawei_full_resolution').mkdir(parents=True)
    corrupt = tmp_path / 'corrupt.png'
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + os.urandom(64))
    rgb = tmp_path / 'rgb.png'
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    models = 'models_dir=%s' % models_dir
    cases = [
        (['level=0', 'models_dir=%s' % empty], 'no checkpoint of level 0'),
        (['level=2', models, 'restore_iter=5'], 'saved iterations of level 2: 7'),
        (['level=0', 'orig=true', 'models_dir=%s' % empty], 'published model not found'),
        (['level=3', 'orig=true', models], 'use level=0'),
        (['level=0', models, 'dataset_dir=%s' % (tmp_path / 'nowhere')], 'no full-resolution folder'),
        (['level=0', models, 'dataset_dir=%s' % (tmp_path / 'data')], 'no RAW PNG files'),
        (['level=0', models, 'input=%s' % (tmp_path / 'missing.png')], 'no such file or folder'),
        (['level=0', models, 'input=%s' % empty], 'no RAW files in folder'),
        (['level=0', models, 'input=%s' % corrupt], 'corrupt.png'),
        (['level=0', models, 'input=%s' % rgb], 'single-channel'),
        (['level=0', models, 'black_level=1023', 'white_level=64'], 'black < white'),
        (['level=0', 'colour=true'], "unknown key 'colour'"),
        (['level=7'], 'must be one of'),
        (['orig=true'], 'level=... is required'),
    ]
    for args, fragment in cases:
        result = run_script('test_model.py', 'use_gpu=false', *args, cwd=str(tmp_path))
        assert_one_line_error(result, fragment)
        assert result.returncode == 2
    assert not os.path.exists(tmp_path / 'results')     # nothing written
