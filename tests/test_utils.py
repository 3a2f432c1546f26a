"""Shared plumbing: key=value parsing, atomic writes, the quiet TensorFlow import; checkpoint naming,
saving and restoring."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import utils
from conftest import REPO
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
            checkpoints.save_variables(sess, tf.train.Saver([a, b]), path)


def test_checkpoints_are_named_found_and_restored(tmp_path):
    models = str(tmp_path)
    for it, value in [(1000, 1.0), (200, 2.0)]:
        _save_two_variables(checkpoints.checkpoint_path(models, 4, it), value)
    assert sorted(f for f in os.listdir(models)) == [
        'pynet_level_4_iteration_1000.ckpt.data-00000-of-00001', 'pynet_level_4_iteration_1000.ckpt.index',
        'pynet_level_4_iteration_200.ckpt.data-00000-of-00001', 'pynet_level_4_iteration_200.ckpt.index']
    assert checkpoints.saved_iterations(models, 4) == [200, 1000]
    path, label = checkpoints.find_checkpoint(models, 4)
    assert label == 1000 and path.endswith('pynet_level_4_iteration_1000.ckpt')
    with tf.Graph().as_default():
        a = tf.Variable(tf.zeros([2, 3]), name='generator/Variable')
        b = tf.Variable(tf.zeros([3]), name='generator/Variable_1')
        with tf.Session() as sess:
            checkpoints.restore_variables(sess, [a, b], checkpoints.find_checkpoint(models, 4, 200)[0])
            assert sess.run(b).tolist() == [2.0, 2.0, 2.0]


def test_missing_and_mismatched_checkpoints_are_user_errors(tmp_path):
    models = str(tmp_path)
    with pytest.raises(UserError, match='no checkpoint of level 3'):
        checkpoints.find_checkpoint(models, 3)
    with pytest.raises(UserError, match='published model not found'):
        checkpoints.find_checkpoint(models, 0, orig=True)
    path = checkpoints.checkpoint_path(models, 3, 10)
    _save_two_variables(path, 1.0)
    with pytest.raises(UserError, match='saved iterations of level 3: 10'):
        checkpoints.find_checkpoint(models, 3, restore_iter=11)
    with tf.Graph().as_default():
        wrong = tf.Variable(tf.zeros([4, 4]), name='generator/Variable')
        with tf.Session() as sess, pytest.raises(UserError, match='has shape'):
            checkpoints.restore_variables(sess, [wrong], path)
    with tf.Graph().as_default():
        absent = tf.Variable(tf.zeros([1]), name='generator/Variable_9')
        with tf.Session() as sess, pytest.raises(UserError, match='has no variable generator/Variable_9'):
            checkpoints.restore_variables(sess, [absent], path)
    open(path + '.index', 'wb').write(b'not a checkpoint')
    with tf.Graph().as_default():
        a = tf.Variable(tf.zeros([2, 3]), name='generator/Variable')
        with tf.Session() as sess, pytest.raises(UserError, match='cannot read checkpoint'):
            checkpoints.restore_variables(sess, [a], path)


def test_a_checkpoint_is_on_disk_before_its_index_commits_it(tmp_path, monkeypatch):
    events = []
    sync, replace = utils.sync_to_disk, os.replace
    monkeypatch.setattr(utils, 'sync_to_disk', lambda p: (events.append(('sync', os.path.basename(p))), sync(p)))
    monkeypatch.setattr(os, 'replace', lambda a, b: (events.append(('rename', os.path.basename(b))), replace(a, b)))
    path = checkpoints.checkpoint_path(str(tmp_path), 1, 7)
    _save_two_variables(path, 1.0)
    name, folder = os.path.basename(path), tmp_path.name
    # Both files are synced under their temporary names, then the data renamed and the folder
    # synced, and only then the index renamed (the commit) and the folder synced again.
    assert sorted(events[:2]) == [('sync', '.tmp-%d-%s%s' % (os.getpid(), name, suffix))
                                  for suffix in ('.data-00000-of-00001', '.index')]
    assert events[2:] == [('rename', name + '.data-00000-of-00001'), ('sync', folder),
                          ('rename', name + '.index'), ('sync', folder)]
    assert checkpoints.saved_iterations(str(tmp_path), 1) == [7]


def test_truncated_checkpoint_data_is_a_user_error(tmp_path):
    path = checkpoints.checkpoint_path(str(tmp_path), 2, 5)
    _save_two_variables(path, 3.0)
    data = path + '.data-00000-of-00001'
    open(data, 'r+b').truncate(8)
    with tf.Graph().as_default():
        a = tf.Variable(tf.zeros([2, 3]), name='generator/Variable')
        b = tf.Variable(tf.zeros([3]), name='generator/Variable_1')
        with tf.Session() as sess, pytest.raises(UserError, match='damaged'):
            checkpoints.restore_variables(sess, [a, b], path)
    # Read as numpy values (the renderer's way), the same.
    with pytest.raises(UserError, match='damaged'):
        checkpoints.read_variables(path, {'generator/Variable': [2, 3], 'generator/Variable_1': [3]})


def test_read_variables_gives_the_values_and_checks_names_and_shapes(tmp_path):
    path = checkpoints.checkpoint_path(str(tmp_path), 2, 5)
    _save_two_variables(path, 3.0)
    values = checkpoints.read_variables(path, {'generator/Variable_1': [3]})
    assert list(values) == ['generator/Variable_1'] and values['generator/Variable_1'].tolist() == [3.0] * 3
    with pytest.raises(UserError, match='has shape'):
        checkpoints.read_variables(path, {'generator/Variable': [4, 4]})
    with pytest.raises(UserError, match='has no variable generator/Variable_9'):
        checkpoints.read_variables(path, {'generator/Variable_9': [1]})


def quiet_import(folder=None, env=None):
    """Runs utils.import_tensorflow() in a fresh Python, with `folder` first on sys.path if given."""
    code = ('import sys; sys.path.insert(0, %r); import utils; utils.import_tensorflow(); print("imported")'
            % (folder or REPO))
    environ = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                          env=dict(environ, **(env or {})), timeout=300)


def test_tensorflow_import_is_silent_on_stderr():
    result = quiet_import()
    assert result.returncode == 0 and result.stdout.strip() == 'imported', result.stderr
    assert result.stderr == ''


# A stand-in for TensorFlow: prints on file descriptor 2 as its C++ layer does, then fails or not.
FAKE_TENSORFLOW = """
import os
os.write(2, b'E0000 cuda_dnn.cc:8] Could not load library libcudnn.so.9\\n')
if os.environ['FAKE_TF'] == 'raise':
    raise ImportError('libcudnn.so.9: cannot open shared object file')
if os.environ['FAKE_TF'] == 'abort':
    os.write(2, b'F0000 cpu_feature_guard.cc:9] The TensorFlow library was compiled to use AVX\\n')
    os.abort()

class config:
    @staticmethod
    def list_physical_devices(kind):
        os.write(2, b'E0000 cuda_platform.cc:52] failed call to cuInit\\n')
        return []
"""


@pytest.mark.parametrize('outcome', ['raise', 'abort', 'succeed'])
def test_what_tensorflow_prints_while_loading_is_shown_only_if_loading_fails(tmp_path, outcome):
    (tmp_path / 'tensorflow').mkdir()
    (tmp_path / 'tensorflow' / '__init__.py').write_text(FAKE_TENSORFLOW)
    result = quiet_import(str(tmp_path), {'FAKE_TF': outcome})
    if outcome == 'succeed':
        assert result.returncode == 0 and result.stdout.strip() == 'imported'
        assert result.stderr == ''
        return
    assert result.returncode != 0 and 'imported' not in result.stdout
    assert 'Could not load library libcudnn.so.9' in result.stderr
    if outcome == 'raise':     # what it printed, then the traceback
        assert result.stderr.index('libcudnn.so.9') < result.stderr.index('Traceback')
        assert result.stderr.rstrip().endswith('ImportError: libcudnn.so.9: cannot open shared object file')
    else:   # the process died in the import: the helper still shows what it said
        assert 'compiled to use AVX' in result.stderr


def test_atomic_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with utils.atomic_path(str(tmp_path / 'a.txt')) as tmp:
            open(tmp, 'w').write('x')
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / 'a.txt').st_mode & 0o777) == oct(0o644)
