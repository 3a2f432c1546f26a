"""train_model.py: the real CLI trains levels 5 -> 0 in turn on a tiny dataset; the level-5 loss
falls on a fixed batch; bad input stops it with one line."""
import os
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import load_dataset
import model
import tiny_zurich
import train_model
import vgg
from conftest import assert_one_line_error, run_script, train


def checkpoint(workspace, level, iteration):
    return tf.train.load_checkpoint(checkpoints.checkpoint_path(str(workspace / 'models'), level, iteration))


def max_difference(a, b):
    return max(np.abs(a.get_tensor(name) - b.get_tensor(name)).max()
               for name in a.get_variable_to_shape_map())


def save_shifted_copy(workspace, level, iteration, new_iteration, shift):
    """Saves level's checkpoint `iteration` with every weight moved by `shift` as iteration `new_iteration`."""
    reader = checkpoint(workspace, level, iteration)
    names = sorted(reader.get_variable_to_shape_map())
    tf.raw_ops.SaveV2(prefix=checkpoints.checkpoint_path(str(workspace / 'models'), level, new_iteration),
                      tensor_names=names, shape_and_slices=[''] * len(names),
                      tensors=[reader.get_tensor(name) + np.float32(shift) for name in names])   # eager: written now
    return checkpoint(workspace, level, new_iteration)


# The published loss of each level from its logged parts (PyNET paper): MSE, content and 1 - SSIM terms.
PUBLISHED_LOSS = {5: lambda m, c, s: 100 * m, 4: lambda m, c, s: 100 * m,
                  3: lambda m, c, s: 100 * m + c, 2: lambda m, c, s: 100 * m + c,
                  1: lambda m, c, s: 50 * m + c, 0: lambda m, c, s: 20 * m + c + 20 * (1 - s)}


def logged_test_numbers(line):
    """{'loss', 'content', 'mse', 'psnr', and 'ssim' at levels 1 and 0} of a logs.txt line's test part."""
    return {k: float(v) for k, v in re.findall(r'(loss|content|mse|psnr|ssim) ([-\d.e+]+)', line.split('|')[1])}


# Seven training runs one after another: a longer limit (pytest-timeout).
@pytest.mark.timeout(1800)
def test_cli_trains_level_5_then_4_down_to_0(workspace):
    models, results = workspace / 'models', workspace / 'results'
    logs = models / 'logs.txt'

    # Level 5 from scratch: evaluations and checkpoints at iterations 2 and 3 (the last).
    result = train(workspace, 'level=5', 'num_train_iters=3', 'eval_step=2', 'learning_rate=1e-3')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'starting from random weights' in result.stdout
    assert checkpoints.saved_iterations(str(models), 5) == [2, 3]
    assert '100%' in result.stderr and 'loss=' in result.stderr          # the progress bar
    lines = logs.read_text().splitlines()
    assert [l.split(':')[0] for l in lines] == ['level 5, iteration 2', 'level 5, iteration 3']
    for line in lines:
        numbers = logged_test_numbers(line)
        assert set(numbers) == {'loss', 'content', 'mse', 'psnr'}
        # level 5: loss = 100 * mse; PSNR, a mean of per-image PSNRs, is at least that of the mean MSE
        assert float(numbers['loss']) == pytest.approx(100 * float(numbers['mse']), rel=1e-4)
        assert float(numbers['psnr']) >= -10 * np.log10(float(numbers['mse'])) - 1e-3
        assert float(numbers['psnr']) < 60
    assert sorted(os.listdir(results)) == ['pynet_level_5_iteration_%d_img_%d.jpg' % (i, k)
                                           for i in (2, 3) for k in range(3)]

    # Level 4 from a chosen level-5 iteration; then each level from the last one of level + 1.
    result = train(workspace, 'level=4', 'num_train_iters=2', 'eval_step=2', 'restore_iter=2', 'learning_rate=1e-5')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'starting from models/pynet_level_5_iteration_2.ckpt' in result.stdout
    # Started from iteration 2, not 3: two Adam steps of 1e-5 move no weight by more than ~2e-5.
    level4, level5_2, level5_3 = checkpoint(workspace, 4, 2), checkpoint(workspace, 5, 2), checkpoint(workspace, 5, 3)
    assert max_difference(level5_2, level5_3) > 5e-4
    assert max_difference(level4, level5_2) < 3e-5
    for level in (3, 2, 1, 0):
        # Level L starts from the last checkpoint of level L + 1: here a copy with every weight moved by
        # 0.002, which two Adam steps of 1e-5 cannot reach from any other start.
        start = save_shifted_copy(workspace, level + 1, 2, 9, shift=0.002)
        result = train(workspace, 'level=%d' % level, 'num_train_iters=2', 'eval_step=2', 'learning_rate=1e-5')
        assert result.returncode == 0, result.stderr[-3000:]
        assert 'starting from models/pynet_level_%d_iteration_9.ckpt' % (level + 1) in result.stdout
        assert checkpoints.saved_iterations(str(models), level) == [2]
        assert max_difference(checkpoint(workspace, level, 2), start) < 3e-5
        last = logs.read_text().splitlines()[-1]
        assert last.startswith('level %d, iteration 2: train loss ' % level)
        if level <= 1:     # 64 px and 32 px outputs: too small for 5-scale MS-SSIM, said so
            assert 'below the 161 px' in result.stdout
            assert re.search(r', ssim 0\.\d+', last) and 'ms-ssim' not in last
        else:
            assert 'ssim' not in last
    # Every level's logged test loss is its published weighting of the logged MSE, content and SSIM.
    # (The random VGG's features of outputs of 16 px and less are ~0, so the content weight of levels
    # 3 and 2 shows only in test_losses.py; at levels 1 and 0 every term weighs.)
    for line in logs.read_text().splitlines():
        level = int(line.split(',')[0].split()[1])
        numbers = logged_test_numbers(line)
        parts = numbers['mse'], numbers['content'], numbers.get('ssim')
        assert numbers['loss'] == pytest.approx(PUBLISHED_LOSS[level](*parts), rel=1e-4), line
        if level <= 1:
            assert numbers['content'] > 0.01 * numbers['loss'], line
        if level == 0:
            assert 20 * (1 - numbers['ssim']) > 0.1 * numbers['loss'], line
    assert len(logs.read_text().splitlines()) == 2 + 5
    assert len(os.listdir(results)) == 6 + 5 * 3
    # a picture is output | target at the level's size: level 0 is 64 px high, two images wide
    from PIL import Image
    assert Image.open(results / 'pynet_level_0_iteration_2_img_0.jpg').size == (128, 64)


def test_level_5_loss_falls_on_a_fixed_batch(workspace):
    pairs = load_dataset.list_pairs(str(workspace / 'data'), 'train')
    planes, targets = tiny_zurich.read_subset(pairs, 64, 5, [0, 1])
    with tf.Graph().as_default():
        metrics = train_model.build_loss(5, tf.constant(planes), tf.constant(targets),
                                         vgg.VGG19(str(workspace / 'vgg.mat')))
        step = train_model.make_optimizer(5e-5).minimize(metrics['loss'], var_list=model.generator_variables())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            losses = [sess.run([step, metrics['loss']])[1] for _ in range(15)]
    # With gradients flowing, 15 Adam steps at the published rate cut this loss by >100x;
    # without them it would stay where it is.
    assert losses[0] > 1.0
    assert losses[-1] < 0.1 * losses[0], losses


def test_data_error_met_while_training_is_one_line(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=2, n_test=1, side=64)
    vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    damaged = tmp_path / 'data' / 'train' / 'huawei_raw' / '1.png'
    with open(damaged, 'r+b') as f:      # the header stays valid, the pixel data does not
        f.seek(60)
        f.write(b'\x00' * 300)
    result = run_script('train_model.py', 'level=5', 'dataset_dir=data', 'vgg_dir=vgg.mat', 'batch_size=2',
                        'num_train_iters=20', 'eval_step=20', cwd=str(tmp_path))
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: cannot read RAW image') and 'data/train/huawei_raw/1.png' in last
    assert not os.path.exists(tmp_path / 'models' / 'pynet_level_5_iteration_20.ckpt.index')


# ---- bad input, refused before TensorFlow starts (one line, exit 2)

def test_level_is_required(workspace):
    assert_one_line_error(train(workspace), 'level=... is required')


def test_lower_level_needs_the_level_above(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=2, n_test=1)
    vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    assert_one_line_error(train(tmp_path, 'level=2'), 'no checkpoint of level 3', 'level=3')


def test_missing_restore_iter(workspace):
    # the chain test may or may not have run: either way there is no iteration 999 of level 5
    result = train(workspace, 'level=4', 'restore_iter=999')
    assert_one_line_error(result, 'level 5')


def test_missing_vgg_file(workspace):
    assert_one_line_error(train(workspace, 'level=5', 'vgg_dir=nothere.mat'),
                          'nothere.mat not found', 'imagenet-vgg-verydeep-19.mat')


def test_vgg_file_that_is_not_a_mat(workspace):
    (workspace / 'notmat.mat').write_text('Sorry, this file is not available')
    assert_one_line_error(train(workspace, 'level=5', 'vgg_dir=notmat.mat'), 'not a readable MATLAB .mat')


def test_missing_pair(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=3, n_test=1)
    vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    os.remove(tmp_path / 'data' / 'train' / 'canon' / '2.jpg')
    assert_one_line_error(train(tmp_path, 'level=5'), '2.png has no partner', '2.jpg')


def test_patch_side_not_a_multiple_of_32(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=2, n_test=1, side=80)
    vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    assert_one_line_error(train(tmp_path, 'level=5'), '0.png is 80x80', 'multiple of 32')


def test_test_patch_of_another_size(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=2, n_test=2)
    tiny_zurich.make_dataset(str(tmp_path / 'other'), n_train=1, n_test=1, side=32)
    os.replace(tmp_path / 'other' / 'test' / 'canon' / '0.jpg', tmp_path / 'data' / 'test' / 'canon' / '1.jpg')
    vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    assert_one_line_error(train(tmp_path, 'level=5'), '1.jpg is 32x32', 'its RAW mosaic is 64x64')


@pytest.mark.parametrize('arg', ['batch_size=0', 'eval_step=0', 'learning_rate=-1', 'num_train_iters=0'])
def test_bad_numbers(workspace, arg):
    assert_one_line_error(train(workspace, 'level=5', arg), arg)


def test_restore_iter_is_not_for_level_5(workspace):
    assert_one_line_error(train(workspace, 'level=5', 'restore_iter=3'), 'level 5 starts from scratch')
