"""Shared plumbing: key=value parsing, atomic writes, checkpoint naming, saving and restoring."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import utils
from utils import Key, UserError

KEYS = {
    'level': Key(None, int, 'level', choices=utils.LEVELS, required=True),
    'batch_size': 50,
    'learning_rate': 5e-5,
    'orig': False,
    'restore_iter': Key(None, int),
    'dataset_dir': 'raw_images/',
}


def test_defaults_and_overrides():
    config = utils.parse_args(['level=3', 'batch_size=8', 'learning_rate=1e-4', 'orig=true',
                               'restore_iter=5e3'], KEYS)
    assert config == {'level': 3, 'batch_size': 8, 'learning_rate': 1e-4, 'orig': True,
                      'restore_iter': 5000, 'dataset_dir': 'raw_images/'}


@pytest.mark.parametrize('argv, fragment', [
    (['level=3', 'bogus=1'], "unknown key 'bogus'"),
    (['level=3', 'batch_size'], 'not of the form key=value'),
    (['level=3', 'batch_size=many'], 'batch_size=many: expected a number'),
    (['level=3', 'batch_size=2.5'], 'expected a number'),
    (['level=3', 'orig=maybe'], 'expected true or false'),
    (['level=7'], 'must be one of 0, 1, 2, 3, 4, 5'),
    ([], 'level=... is required'),
])
def test_bad_arguments_name_the_problem(argv, fragment):
    with pytest.raises(UserError, match=fragment):
        utils.parse_args(argv, KEYS)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / 'out.png'
    with pytest.raises(RuntimeError):
        with utils.atomic_path(str(target)) as tmp:
            open(tmp, 'w').write('half')
            raise RuntimeError('crash')
    assert os.listdir(tmp_path) == []
    with utils.atomic_path(str(target)) as tmp:
        open(tmp, 'w').write('whole')
    assert os.listdir(tmp_path) == ['out.png'] and target.read_text() == 'whole'


def _save_two_variables(path, value):
    with tf.Graph().as_default():
        a = tf.Variable(np.full([2, 3], value, np.float32), name='generator/Variable')
        b = tf.Variable(np.full([3], value, np.float32), name='generator/Variable_1')
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            utils.save_variables(sess, tf.train.Saver([a, b]), path)


def test_checkpoints_are_named_found_and_restored(tmp_path):
    models = str(tmp_path)
    for it, value in [(1000, 1.0), (200, 2.0)]:
        _save_two_variables(utils.checkpoint_path(models, 4, it), value)
    assert sorted(f for f in os.listdir(models)) == [
        'pynet_level_4_iteration_1000.ckpt.data-00000-of-00001', 'pynet_level_4_iteration_1000.ckpt.index',
        'pynet_level_4_iteration_200.ckpt.data-00000-of-00001', 'pynet_level_4_iteration_200.ckpt.index']
    assert utils.saved_iterations(models, 4) == [200, 1000]
    path, label = utils.find_checkpoint(models, 4)
    assert label == 1000 and path.endswith('pynet_level_4_iteration_1000.ckpt')
    with tf.Graph().as_default():
        a = tf.Variable(tf.zeros([2, 3]), name='generator/Variable')
        b = tf.Variable(tf.zeros([3]), name='generator/Variable_1')
        with tf.Session() as sess:
            utils.restore_variables(sess, [a, b], utils.find_checkpoint(models, 4, 200)[0])
            assert sess.run(b).tolist() == [2.0, 2.0, 2.0]


def test_missing_and_mismatched_checkpoints_are_user_errors(tmp_path):
    models = str(tmp_path)
    with pytest.raises(UserError, match='no checkpoint of level 3'):
        utils.find_checkpoint(models, 3)
    with pytest.raises(UserError, match='published model not found'):
        utils.find_checkpoint(models, 0, orig=True)
    path = utils.checkpoint_path(models, 3, 10)
    _save_two_variables(path, 1.0)
    with pytest.raises(UserError, match='saved iterations of level 3: 10'):
        utils.find_checkpoint(models, 3, restore_iter=11)
    with tf.Graph().as_default():
        wrong = tf.Variable(tf.zeros([4, 4]), name='generator/Variable')
        with tf.Session() as sess, pytest.raises(UserError, match='has shape'):
            utils.restore_variables(sess, [wrong], path)
    with tf.Graph().as_default():
        absent = tf.Variable(tf.zeros([1]), name='generator/Variable_9')
        with tf.Session() as sess, pytest.raises(UserError, match='has no variable generator/Variable_9'):
            utils.restore_variables(sess, [absent], path)
    open(path + '.index', 'wb').write(b'not a checkpoint')
    with tf.Graph().as_default():
        a = tf.Variable(tf.zeros([2, 3]), name='generator/Variable')
        with tf.Session() as sess, pytest.raises(UserError, match='cannot read checkpoint'):
            utils.restore_variables(sess, [a], path)


def test_truncated_checkpoint_data_is_a_user_error(tmp_path):
    path = utils.checkpoint_path(str(tmp_path), 2, 5)
    _save_two_variables(path, 3.0)
    data = path + '.data-00000-of-00001'
    open(data, 'r+b').truncate(8)
    with tf.Graph().as_default():
        a = tf.Variable(tf.zeros([2, 3]), name='generator/Variable')
        b = tf.Variable(tf.zeros([3]), name='generator/Variable_1')
        with tf.Session() as sess, pytest.raises(UserError, match='damaged'):
            utils.restore_variables(sess, [a, b], path)


def test_tensorflow_import_is_silent_on_stderr(run):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-c', 'import utils, tensorflow.compat.v1 as tf; '
                             'print(tf.constant(1).shape)'], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'},
                            cwd=os.path.dirname(os.path.abspath(utils.__file__)))
    assert result.returncode == 0 and result.stdout.strip() == '()'
    assert result.stderr.strip() == ''


def test_atomic_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with utils.atomic_path(str(tmp_path / 'a.txt')) as tmp:
            open(tmp, 'w').write('x')
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / 'a.txt').st_mode & 0o777) == oct(0o644)
