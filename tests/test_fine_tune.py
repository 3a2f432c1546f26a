"""Fine-tuning: train_model.py init_checkpoint= starts a level from any compatible checkpoint, here on a
dataset make_camera_dataset.py built from synthetic pairs; the logged training loss falls. A missing or
incompatible checkpoint is a one-line error before training."""
import os
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import synthetic_pairs
import vgg
from conftest import assert_one_line_error, run_script


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('fine_tune')
    synthetic_pairs.write_pairs(str(root / 'pairs'), 3, (512, 768), seed=1)
    result = run_script('make_camera_dataset.py', 'raw_dir=pairs/raw', 'photo_dir=pairs/photos',
                        'output_dir=data', 'patch_size=64', 'test_fraction=0.3', cwd=str(root))
    assert result.returncode == 0, result.stderr
    vgg.write_random_vgg(str(root / 'vgg.mat'))
    # The starting checkpoint: PyNET's initial weights drawn with another seed than training's (seed 0), so
    # that weights which the level does not train must come out equal to it if, and only if, it was loaded.
    import model
    with tf.Graph().as_default():
        tf.set_random_seed(7)
        model.PyNET(tf.placeholder(tf.float32, [1, None, None, 4]))
        variables = model.generator_variables()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            checkpoints.save_variables(sess, tf.train.Saver(variables), str(root / 'start' / 'pynet.ckpt'))
    return root


def train(root, *args):
    return run_script('train_model.py', 'dataset_dir=data', 'vgg_dir=vgg.mat', 'batch_size=4', 'use_gpu=false',
                      *args, cwd=str(root))


def test_fine_tuning_starts_from_the_checkpoint_and_the_loss_falls(workspace):
    result = train(workspace, 'level=4', 'init_checkpoint=start/pynet.ckpt', 'num_train_iters=60', 'eval_step=20',
                   'learning_rate=1e-3')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'starting from start/pynet.ckpt' in result.stdout
    lines = (workspace / 'models' / 'logs.txt').read_text().splitlines()
    train_losses = [float(re.search(r'train loss ([\d.e+-]+)', l).group(1)) for l in lines]
    test_losses = [float(re.search(r'\| test loss ([\d.e+-]+)', l).group(1)) for l in lines]
    # Mean training loss of iterations 1-20, 21-40, 41-60; the test loss after 20 and after 60 iterations.
    assert len(lines) == 3
    assert train_losses[2] < 0.75 * train_losses[0], train_losses
    assert test_losses[2] < test_losses[0], test_losses
    start = tf.train.load_checkpoint(str(workspace / 'start' / 'pynet.ckpt'))
    tuned = tf.train.load_checkpoint(checkpoints.checkpoint_path(str(workspace / 'models'), 4, 60))
    differences = [float(np.abs(tuned.get_tensor(name) - start.get_tensor(name)).max())
                   for name in start.get_variable_to_shape_map()]
    # Levels 3..0 are not trained at level 4: their weights come out as the checkpoint had them, exactly
    # (a start from training's own random weights, seed 0, would differ everywhere); the others moved.
    assert sum(d == 0 for d in differences) > 100 and max(differences) > 1e-3


def test_missing_or_incompatible_checkpoint_is_one_line(workspace):
    result = train(workspace, 'level=4', 'init_checkpoint=nowhere/pynet.ckpt')
    assert_one_line_error(result, 'init_checkpoint=nowhere/pynet.ckpt', 'not found')
    result = train(workspace, 'level=2', 'init_checkpoint=start/pynet.ckpt', 'restore_iter=3')
    assert_one_line_error(result, 'init_checkpoint= and restore_iter=')
    # A checkpoint of another model: PyNET's first variable with another shape.
    with tf.Graph().as_default():
        with tf.variable_scope('generator'):
            tf.Variable(tf.zeros([3, 3, 1, 8]), name='Variable')
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            checkpoints.save_variables(sess, tf.train.Saver(), str(workspace / 'other' / 'model.ckpt'))
    result = train(workspace, 'level=4', 'init_checkpoint=other/model.ckpt.index', 'models_dir=other_models')
    assert_one_line_error(result, 'other/model.ckpt', 'shape [3, 3, 1, 8]', 'another model')
    assert not os.path.exists(workspace / 'other_models' / 'logs.txt')
