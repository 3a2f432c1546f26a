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
from conftest import assert_one_line_error, fixture_folder, run_script


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    with fixture_folder(tmp_path_factory, 'fine_tune') as root:
        prepare(root)
        yield root


def prepare(root):
    """Aligned pairs made into a dataset in `root`/data, a random VGG and a starting checkpoint."""
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


def test_train_layers_new_trains_only_the_layers_the_level_adds(workspace):
    result = train(workspace, 'level=0', 'init_checkpoint=start/pynet.ckpt', 'num_train_iters=3', 'eval_step=3',
                   'learning_rate=1e-3', 'train_layers=new', 'models_dir=head_models', 'content_weight=0')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'training only the layers level 0 adds (level0/up, level0/out)' in result.stdout
    import model
    with tf.Graph().as_default():
        weights = model.create_weights()
        added = {v.op.name for v in weights.of_layers(model.added_layers(0))}
    assert len(added) == 3        # the upsampling's kernel, the output's kernel and bias
    start = tf.train.load_checkpoint(str(workspace / 'start' / 'pynet.ckpt'))
    tuned = tf.train.load_checkpoint(checkpoints.checkpoint_path(str(workspace / 'head_models'), 0, 3))
    names = start.get_variable_to_shape_map()
    assert added < set(names)
    moved = {name for name in names if not np.array_equal(tuned.get_tensor(name), start.get_tensor(name))}
    assert moved == added


def test_init_new_layers_he_redraws_the_new_kernels_but_not_the_output(workspace):
    result = train(workspace, 'level=0', 'init_checkpoint=start/pynet.ckpt', 'num_train_iters=1', 'eval_step=1',
                   'learning_rate=1e-9', 'train_layers=new', 'init_new_layers=he', 'models_dir=he_models',
                   'content_weight=0')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'drew the kernels of the layers level 0 adds again, He-scaled' in result.stdout
    import model
    with tf.Graph().as_default():
        names = {key: var.op.name for key, var in model.create_weights().variables.items()}
    start = tf.train.load_checkpoint(str(workspace / 'start' / 'pynet.ckpt'))
    tuned = tf.train.load_checkpoint(checkpoints.checkpoint_path(str(workspace / 'he_models'), 0, 1))
    up = tuned.get_tensor(names['level0/up/kernel'])            # [3, 3, 8, 32]: fan-in 9 * 32 / 4 (stride 2)
    assert abs(up.std() / np.sqrt(2 / 72) - 1) < 0.15 and start.get_tensor(names['level0/up/kernel']).std() < 0.02
    # The output layer keeps its (small) values: one step of 1e-9 moves it by about that.
    for key in ('level0/out/kernel', 'level0/out/bias'):
        assert np.abs(tuned.get_tensor(names[key]) - start.get_tensor(names[key])).max() < 1e-6
