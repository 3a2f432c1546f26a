"""train_model.py's schedule keys: end_learning_rate (a cosine decay, fed at every step) and
content_weight (the weight of the VGG-19 content loss); both default to the published behaviour."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import load_dataset
import model
import tiny_zurich
import train_model
import vgg
from conftest import assert_one_line_error, train


def test_scheduled_learning_rate():
    constant = [train_model.scheduled_learning_rate(i, 5, 1e-3) for i in range(1, 6)]
    assert constant == [1e-3] * 5                       # the published default: no decay
    decayed = [train_model.scheduled_learning_rate(i, 5, 1e-3, 1e-5) for i in range(1, 6)]
    assert decayed[0] == pytest.approx(1e-3) and decayed[-1] == pytest.approx(1e-5)
    assert decayed[2] == pytest.approx((1e-3 + 1e-5) / 2)     # cosine: half way at half time
    assert all(a > b for a, b in zip(decayed, decayed[1:]))
    assert train_model.scheduled_learning_rate(1, 1, 1e-3, 0.0) == 1e-3


def test_learning_rate_decays_to_end_learning_rate(workspace):
    # Decay to 0: the last of three steps has learning rate 0, so iteration 3 keeps iteration 2's
    # weights exactly, while the first steps moved them.
    result = train(workspace, 'level=5', 'num_train_iters=3', 'eval_step=2', 'learning_rate=1e-3',
                   'end_learning_rate=0', 'models_dir=decay')
    assert result.returncode == 0, result.stderr[-3000:]
    read = lambda i: tf.train.load_checkpoint(checkpoints.checkpoint_path(str(workspace / 'decay'), 5, i))
    second, third = read(2), read(3)
    names = list(second.get_variable_to_shape_map())
    assert all(np.array_equal(second.get_tensor(n), third.get_tensor(n)) for n in names)
    # ... while the first two steps moved them: the output biases start at 0.01
    biases = [n for n in names if second.get_variable_to_shape_map()[n] == [3]]
    assert any(np.abs(second.get_tensor(n) - 0.01).max() > 1e-4 for n in biases)


def test_content_weight_scales_the_content_loss(workspace):
    pairs = load_dataset.list_pairs(str(workspace / 'data'), 'train')
    planes, targets = tiny_zurich.read_subset(pairs, 64, 3, [0, 1])
    with tf.Graph().as_default():
        net = vgg.VGG19(str(workspace / 'vgg.mat'))
        weights = model.PyNETWeights()      # one generator: the losses differ only by the weight
        losses = {weight: train_model.build_loss(3, tf.constant(planes), tf.constant(targets), net, weights,
                                                 content_weight=weight)
                  for weight in (1.0, 0.0, 2.5)}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = sess.run(losses)
    # level 3 as published: 100 * MSE + content; content_weight=0 leaves VGG-19 out of the graph
    published = values[1.0]
    assert published['loss'] == pytest.approx(100 * published['mse'] + published['content'], rel=1e-5)
    assert published['content'] > 0
    assert 'content' not in values[0.0] and 'content' in values[2.5]
    for weight in (0.0, 2.5):
        expected = 100 * published['mse'] + weight * published['content']
        assert values[weight]['loss'] == pytest.approx(expected, rel=1e-5), weight


@pytest.mark.parametrize('args,fragment', [
    (('end_learning_rate=-1',), 'end_learning_rate=-1'),
    (('learning_rate=1e-4', 'end_learning_rate=1e-3'), 'between 0 and learning_rate'),
    (('content_weight=-0.5',), 'content_weight=-0.5'),
])
def test_bad_schedule_keys(workspace, args, fragment):
    assert_one_line_error(train(workspace, 'level=5', *args), fragment)
