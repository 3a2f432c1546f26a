"""export_model.py: SavedModel and TFLite exports load, run, match the graph; bad input leaves nothing behind."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import export_model
import image_io
import model
import utils
from conftest import assert_one_line_error, fixture_folder, run_script

SIZE = 32           # packed input size: small, so that each conversion stays quick
ITERATION = 3


def make_checkpoint(models_dir, x, seed=0):
    """Saves a level-0 checkpoint with perturbed weights; returns the graph's float32 output for x."""
    with tf.Graph().as_default():
        raw = tf.placeholder(tf.float32, [1, SIZE, SIZE, 4])
        out0 = model.PyNET(raw)[0]
        variables = model.generator_variables()
        # Plain initial weights give a nearly flat image; noise makes every layer matter.
        perturb = [tf.assign_add(v, tf.random.normal(v.shape, stddev=0.05 if v.shape.ndims == 1 else 0.02,
                                                     seed=seed + i)) for i, v in enumerate(variables)]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(perturb)
            checkpoints.save_variables(sess, tf.train.Saver(variables),
                                 checkpoints.checkpoint_path(models_dir, 0, ITERATION))
            return sess.run(out0, {raw: x})


def make_raw_patches(folder, count, size, seed=0):
    """Random 10-bit Bayer mosaics saved as RAW PNGs (size x size on the mosaic)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        image_io.save_raw_png(os.path.join(folder, '%d.png' % i), rng.integers(0, 1024, (size, size), np.uint16))


def hidden_leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith('.')] if os.path.isdir(folder) else []


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A models folder with one checkpoint, a tiny RAW dataset, an input and the graph's output for it."""
    with fixture_folder(tmp_path_factory, 'export') as root:
        models_dir = str(root / 'models')
        x = np.random.default_rng(1).random((1, SIZE, SIZE, 4)).astype(np.float32)
        expected = make_checkpoint(models_dir, x)
        # 24x24 patches are smaller than the 32x32 export: calibration inputs are tiled from several patches.
        make_raw_patches(str(root / 'raw_images' / 'train' / 'huawei_raw'), 3, 48)
        yield {'root': root, 'models_dir': models_dir, 'x': x, 'expected': expected,
               'dataset_dir': str(root / 'raw_images')}


def config(setup, **overrides):
    values = {name: key.default for name, key in export_model.KEYS.items()}
    values.update(models_dir=setup['models_dir'], height=SIZE, width=SIZE, dataset_dir=setup['dataset_dir'])
    values.update(overrides)
    return values


@pytest.fixture(scope='module')
def saved_model(setup):
    return export_model.export(config(setup, format='saved_model'))


def test_saved_model_matches_graph(setup, saved_model):
    assert saved_model == os.path.join(setup['models_dir'], 'export', 'pynet_level_0_iteration_%d_%dx%d'
                                       % (ITERATION, SIZE, SIZE))
    assert os.path.isfile(os.path.join(saved_model, 'saved_model.pb'))
    got = export_model.load_exported(saved_model)(setup['x'])
    assert got.shape == (1, 2 * SIZE, 2 * SIZE, 3) and got.dtype == np.float32
    assert setup['expected'].std() > 0.01       # the weights make a non-trivial image
    np.testing.assert_allclose(got, setup['expected'], atol=2e-4)
    assert hidden_leftovers(os.path.dirname(saved_model)) == []


def tensor_types(path):
    return {d['dtype'] for d in export_model.tflite_interpreter(path).get_tensor_details()}


@pytest.fixture(scope='module')
def converted(setup, saved_model):
    """quant -> a .tflite converted straight from the SavedModel above (export() would rebuild it: slow), made
    once for the tests that need it."""
    paths = {}

    def convert(quant):
        if quant not in paths:
            paths[quant] = str(setup['root'] / ('%s.tflite' % quant))
            with open(paths[quant], 'wb') as f:
                f.write(export_model.tflite_bytes(saved_model, quant))
        return paths[quant]
    return convert


@pytest.mark.parametrize('quant, stored_type, atol', [('none', np.float32, 1e-3), ('float16', np.float16, 1e-2),
                                                      ('dynamic', np.int8, None)])
def test_tflite_from_saved_model(setup, converted, quant, stored_type, atol):
    path = converted(quant)
    assert stored_type in tensor_types(path)
    got = export_model.load_exported(path)(setup['x'])
    assert got.shape == (1, 2 * SIZE, 2 * SIZE, 3) and np.isfinite(got).all()
    assert -0.081 <= got.min() and got.max() <= 1.081
    if atol is not None:
        np.testing.assert_allclose(got, setup['expected'], atol=atol)
    else:
        assert np.abs(got - setup['expected']).mean() < 0.1


def test_int8_calibrates_on_raw_patches(setup):
    output = setup['root'] / 'out' / 'int8.tflite'
    path = export_model.export(config(setup, format='tflite', quant='int8', calibration_size=2, output=str(output)))
    assert path == str(output) and os.listdir(output.parent) == ['int8.tflite']
    interpreter = export_model.tflite_interpreter(path)
    tensors = {t['index']: t['dtype'] for t in interpreter.get_tensor_details()}
    op_types = {(op['op_name'], tensors[op['outputs'][0]]) for op in interpreter._get_ops_details()}
    # convolutions run in int8; instance norm's statistics stay float32 (int8_float=norm, the default)
    assert ('CONV_2D', np.int8) in op_types and ('CONV_2D', np.float32) not in op_types
    assert ('MEAN', np.float32) in op_types and ('MEAN', np.int8) not in op_types
    got = export_model.load_exported(path, xnnpack=False)(setup['x'])
    assert got.shape == (1, 2 * SIZE, 2 * SIZE, 3) and np.isfinite(got).all()
    assert np.abs(got - setup['expected']).mean() < 0.1


def largest_activation_bytes(interpreter):
    """The largest [1, H, W, C] tensor: activations and kernels' scratch buffers (weights start with C_out)."""
    return max(int(np.prod(t['shape'])) * np.dtype(t['dtype']).itemsize for t in interpreter.get_tensor_details()
               if len(t['shape']) == 4 and t['shape'][0] == 1)


def test_dynamic_export_splits_convolutions_to_bound_scratch(setup, converted):
    # Level 1's 9x9 blocks need an im2col matrix of 32*32*81*128 bytes (10 MB) at this size; max_scratch_mb=4
    # makes the export build every convolution above 4 MB as row strips, so LiteRT's largest buffer stays under it.
    split = export_model.export(config(setup, quant='dynamic', max_scratch_mb=4,
                                       output=str(setup['root'] / 'dynamic_split.tflite')))
    run_whole = export_model.load_exported(converted('dynamic'), xnnpack=False)
    run_split = export_model.load_exported(split, xnnpack=False)
    assert largest_activation_bytes(run_whole.interpreter) > 2 ** 23
    assert largest_activation_bytes(run_split.interpreter) <= 4 * 2 ** 20
    convs = [len([op for op in run.interpreter._get_ops_details() if op['op_name'] == 'CONV_2D'])
             for run in (run_whole, run_split)]
    assert convs[1] > convs[0]
    # Each strip quantises its own input range, so the two differ slightly; both stay near the graph.
    got_whole, got_split = run_whole(setup['x']), run_split(setup['x'])
    assert np.abs(got_split - got_whole).mean() < 0.01
    assert np.abs(got_split - setup['expected']).mean() < 0.1


def test_calibration_inputs_tile_patches(tmp_path):
    make_raw_patches(str(tmp_path / 'train' / 'huawei_raw'), 3, 8)
    files = export_model.calibration_files(str(tmp_path))
    samples = list(export_model.calibration_inputs(files, 8, 16, 2))
    assert len(samples) == 2 and samples[0].shape == (1, 8, 16, 4)
    packed = [image_io.pack_raw(image_io.read_raw_png(f)) for f in files]
    # each 8x16 input is two 4x4 patches side by side, repeated twice to fill the height
    tiles = [samples[0][0, :4, :4], samples[0][0, :4, 4:8]]
    assert all(any(np.array_equal(t, p) for p in packed) for t in tiles)
    assert not np.array_equal(tiles[0], tiles[1])


@pytest.mark.parametrize('args, fragments', [
    (['height=30'], ['height=30', 'multiple of 16']),
    (['format=onnx'], ['format=onnx', 'saved_model']),
    (['quant=int4'], ['quant=int4', 'int8']),
    (['format=saved_model', 'quant=float16'], ['quant=float16', 'format=tflite']),
    (['restore_iter=99'], ['not found']),
    (['quant=int8', 'dataset_dir=nowhere/'], ['nowhere/', 'calibrat']),
    (['orig=true', 'level=2'], ['orig=true', 'level=0']),
    (['quant=dynamic', 'max_scratch_mb=-1'], ['max_scratch_mb=-1', 'MB']),
])
def test_bad_input_one_line_error_and_no_files(setup, tmp_path, args, fragments):
    output = tmp_path / 'out' / 'model.tflite'
    result = run_script('export_model.py', 'models_dir=%s' % setup['models_dir'], 'output=%s' % output, *args,
                        cwd=str(tmp_path))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []


def test_missing_checkpoint(tmp_path):
    result = run_script('export_model.py', 'models_dir=%s' % (tmp_path / 'models'), cwd=str(tmp_path))
    assert_one_line_error(result, 'no checkpoint of level 0')
    assert not (tmp_path / 'models').exists()


class UnallocatedInterpreter:
    """What LiteRT does when its arena does not fit: allocate_tensors passes, setting the input fails."""

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        return [{'index': 0, 'shape': np.array([1, 1472, 1984, 4]), 'dtype': np.float32}]

    def set_tensor(self, index, value):
        raise ValueError('Cannot set tensor: Tensor is unallocated. Try calling allocate_tensors() first')

    def get_tensor_details(self):
        return [{'shape': np.array([1, 1472, 1984, 4]), 'dtype': np.float32},
                {'shape': np.array([30 * 10 ** 9]), 'dtype': np.int8}]


def test_unallocatable_tflite_model_is_a_one_line_error():
    with pytest.raises(utils.UserError, match=r'm\.tflite: LiteRT cannot allocate .* at input 1472x1984 '
                                              r'.*needs 30\.0 GB.*smaller max_scratch_mb'):
        export_model.check_allocated(UnallocatedInterpreter(), 'm.tflite')
