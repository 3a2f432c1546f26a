"""GPU behaviour, tested only where TensorFlow sees a GPU and skipped elsewhere with the reason:
the device list, MirroredStrategy over two GPUs, float16 and bfloat16 compute on a GPU.

The rest of the suite hides the GPUs (conftest.py); these tests run train_model.py in subprocesses
that see them again (the `gpu` fixture), with TensorFloat-32 off and deterministic kernels, and
compare one training step (level 5, batch 2, the same seeded weights and batch) between settings.
"""
import os
import subprocess
import sys

import pytest

import vgg
import tiny_zurich
from conftest import REPO, assert_one_line_error, fixture_folder, run_script
from test_train_scale import LEARNING_RATE, assert_same_step, logged, weights


def test_the_suite_itself_sees_no_gpu():
    import tensorflow as tf
    assert os.environ['CUDA_VISIBLE_DEVICES'] == '-1'
    assert tf.config.list_physical_devices('GPU') == []
    child = subprocess.run([sys.executable, '-c', 'import devices; print(devices.gpu_available())'], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert child.stdout.strip() == 'False', child.stderr


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, gpu):
    with fixture_folder(tmp_path_factory, 'gpu') as root:
        tiny_zurich.make_dataset(str(root / 'data'), n_train=4, n_test=1, side=64)
        vgg.write_random_vgg(str(root / 'vgg.mat'))
        yield root


def train(workspace, env, name, *args):
    """One training step at level 5 into models folder `name`; returns (result, models folder)."""
    models = str(workspace / name)
    result = run_script('train_model.py', 'level=5', 'batch_size=2', 'train_size=4', 'num_train_iters=1',
                        'eval_step=1', 'learning_rate=%g' % LEARNING_RATE, 'dataset_dir=data', 'vgg_dir=vgg.mat',
                        'models_dir=' + models, 'results_dir=' + str(workspace / 'results' / name), *args,
                        cwd=str(workspace), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, models


@pytest.fixture(scope='module')
def float32_on_gpu(workspace, gpu):
    return train(workspace, gpu[0], 'gpu_float32', 'num_gpus=1')


def test_gpus_are_listed_and_used(workspace, gpu, float32_on_gpu):
    env, count = gpu
    child = subprocess.run([sys.executable, '-c', 'import devices; print(devices.gpu_available())'], cwd=REPO,
                           env={k: v for k, v in dict(os.environ, **env).items() if v is not None},
                           capture_output=True, text=True, timeout=300)
    assert child.stdout.strip() == 'True', child.stderr
    # All visible GPUs by default; more than there are is refused on one line.
    result, _ = train(workspace, env, 'gpu_all')
    assert ('%d replica(s)' % count if count > 1 else 'one device') in result.stdout
    assert_one_line_error(run_script('train_model.py', 'level=5', 'num_gpus=%d' % (count + 1), 'dataset_dir=data',
                                     'vgg_dir=vgg.mat', cwd=str(workspace), env=env),
                          'num_gpus=%d' % (count + 1), 'only %d GPU(s) are visible' % count)
    # The GPU computes what the CPU computes (float32 without TensorFloat-32).
    _, cpu = train(workspace, env, 'cpu_float32', 'use_gpu=false')
    assert logged(float32_on_gpu[1])[0] == pytest.approx(logged(cpu)[0], rel=1e-4)


def test_mirrored_over_two_gpus_trains_like_one(workspace, gpu, float32_on_gpu):
    env, count = gpu
    if count < 2:
        pytest.skip('MirroredStrategy over GPUs needs 2 GPUs; %d visible' % count)
    result, mirrored = train(workspace, env, 'gpu_mirrored', 'num_gpus=2')
    assert '2 replica(s)' in result.stdout
    assert_same_step(mirrored, float32_on_gpu[1])


@pytest.mark.parametrize('precision, worst', [('mixed_float16', 0.05), ('bfloat16', 0.2)])
def test_16_bit_compute_on_gpu(workspace, gpu, float32_on_gpu, precision, worst):
    """Same weights and batch: the loss moves by 16-bit rounding (far more than float32's, far less than a
    different computation), and the variables saved stay float32."""
    import tensorflow.compat.v1 as tf
    result, models = train(workspace, gpu[0], 'gpu_' + precision, 'num_gpus=1', 'precision=' + precision)
    assert precision in result.stdout
    loss, reference = logged(models)[0], logged(float32_on_gpu[1])[0]
    assert 1e-4 < abs(loss - reference) / reference < worst, (loss, reference)
    assert len(weights(models)) == 437
    dtypes = tf.train.load_checkpoint(os.path.join(models, 'pynet_level_5_iteration_1.ckpt')) \
        .get_variable_to_dtype_map()
    assert set(dtypes.values()) == {tf.float32}
