"""Checkpoints: their names, finding the one to load, saving and restoring variables, and the
crash-safe commit and resumption of training.

Under the models folder:
    pynet_level_<L>_iteration_<i>.ckpt.*            the generator (the published layout)
    original/pynet_level_0.ckpt.*                   the published model
    training_state/level_<L>_iteration_<i>.ckpt.*   optimiser slots and loss scale of that checkpoint
    logs.txt                                        one line per evaluation while training

Every checkpoint is written under a temporary name and renamed into place, its .index last,
after its files are on disk (fsync); a checkpoint is complete once its .index exists.
"""

import contextlib
import glob
import os
import re
import shutil

import tensorflow.compat.v1 as tf

import utils
from utils import UserError

LOG_FILE = 'logs.txt'                                   # under the models folder
ORIGINAL_CHECKPOINT = 'original/pynet_level_0.ckpt'     # under the models folder
STATE_DIR = 'training_state'                            # under the models folder
STATES_KEPT = 2                  # optimiser states are 2x the model: keep only the newest few


# ----------------------------------------------------------------------------------------
# names and finding

def checkpoint_path(models_dir, level, iteration):
    """models/pynet_level_<L>_iteration_<i>.ckpt"""
    return os.path.join(models_dir, 'pynet_level_%d_iteration_%s.ckpt' % (level, iteration))


def training_state_path(models_dir, level, iteration):
    """models/training_state/level_<L>_iteration_<i>.ckpt: optimiser state saved with a generator checkpoint."""
    return os.path.join(models_dir, STATE_DIR, 'level_%d_iteration_%s.ckpt' % (level, iteration))


def original_checkpoint_path(models_dir):
    """models/original/pynet_level_0.ckpt, where the published model goes."""
    return os.path.join(models_dir, ORIGINAL_CHECKPOINT)


def checkpoint_exists(path):
    # A checkpoint is complete once its .index exists: saving renames the index last.
    return os.path.exists(path + '.index')


def saved_iterations(models_dir, level, naming=checkpoint_path):
    """Iterations with a complete checkpoint for `level`, ascending (naming=training_state_path: optimiser states)."""
    found = []
    for index in glob.glob(naming(glob.escape(models_dir), level, '*') + '.index'):
        match = re.search(r'_iteration_(\d+)\.ckpt\.index$', index)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def find_checkpoint(models_dir, level, restore_iter=None, orig=False):
    """(path, label) of the checkpoint to load; label is the iteration or 'orig'."""
    if orig:
        path = original_checkpoint_path(models_dir)
        if not checkpoint_exists(path):
            raise UserError('published model not found at %s.index: download it as the README says '
                            'and put it into %s' % (path, os.path.dirname(path) + '/'))
        return path, 'orig'
    if restore_iter is None:
        iterations = saved_iterations(models_dir, level)
        if not iterations:
            raise UserError('no checkpoint of level %d in %s: train that level first '
                            '(python train_model.py level=%d) or pass models_dir=' % (level, models_dir, level))
        restore_iter = iterations[-1]
    path = checkpoint_path(models_dir, level, restore_iter)
    if not checkpoint_exists(path):
        have = saved_iterations(models_dir, level)
        raise UserError('checkpoint %s not found; saved iterations of level %d: %s'
                        % (path, level, ', '.join(map(str, have)) or 'none'))
    return path, restore_iter


# ----------------------------------------------------------------------------------------
# saving and restoring variables

def check_variables(path, shapes):
    """UserError unless the checkpoint at `path` holds every variable of `shapes` (name -> shape) with that shape."""
    try:
        stored = dict(tf.train.list_variables(path))
    except Exception as error:  # corrupt or unreadable files
        raise UserError('cannot read checkpoint %s (%s): it is damaged or not a TensorFlow checkpoint'
                        % (path, str(error).splitlines()[0][:120]))
    for name, shape in shapes.items():
        if name not in stored:
            raise UserError('checkpoint %s has no variable %s: it was not saved from this PyNET graph'
                            % (path, name))
        if list(stored[name]) != list(shape):
            raise UserError('checkpoint %s: %s has shape %s, the graph needs %s: it is from another model'
                            % (path, name, list(stored[name]), list(shape)))


def restore_variables(sess, variables, path):
    """Restores `variables` from the checkpoint at `path`, checking names and shapes first."""
    check_variables(path, {var.op.name: var.shape.as_list() for var in variables})
    try:
        with sess.graph.as_default():    # a Saver must be built in its variables' graph
            tf.train.Saver(var_list=variables).restore(sess, path)
    except tf.errors.OpError as error:   # e.g. a truncated .data file
        raise _damaged(path, error.message)


def read_variables(path, shapes):
    """name -> numpy value of the variables of `shapes` (name -> shape) in the checkpoint at `path`, checked first."""
    check_variables(path, shapes)
    try:
        reader = tf.train.load_checkpoint(path)
        return {name: reader.get_tensor(name) for name in shapes}
    except Exception as error:  # the reader turns its errors into IndexError, ValueError...: e.g. truncated data
        raise _damaged(path, str(error))


def _damaged(path, message):
    return UserError('cannot restore checkpoint %s (%s): it is damaged; save or download it again'
                     % (path, message.splitlines()[0][:120]))


def save_variables(sess, saver, path):
    """Saves a checkpoint under a temporary prefix, then renames it into place, the .index last.

    The files reach the disk before they are renamed, and each rename before the next step, so
    that after a crash or a power loss the .index under its final name means a whole checkpoint.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp_prefix = os.path.join(folder, '.tmp-%d-%s' % (os.getpid(), os.path.basename(path)))
    saver.save(sess, tmp_prefix, write_meta_graph=False, write_state=False)
    written = glob.glob(glob.escape(tmp_prefix) + '.*')
    for tmp in written:
        utils.sync_to_disk(tmp)
    data = [tmp for tmp in written if not tmp.endswith('.index')]
    for group in (data, [tmp_prefix + '.index']):
        for tmp in group:
            os.replace(tmp, path + tmp[len(tmp_prefix):])
        utils.sync_to_disk(folder)
    return path


# ----------------------------------------------------------------------------------------
# crash-safe training: commit an iteration, resume from the last one

def resume_point(models_dir, level):
    """(iteration, generator checkpoint, training state or None) to continue `level` from; (0, None, None) if none."""
    iterations = saved_iterations(models_dir, level)
    if not iterations:
        return 0, None, None
    last = iterations[-1]
    state = training_state_path(models_dir, level, last)
    return last, checkpoint_path(models_dir, level, last), state if checkpoint_exists(state) else None


class TrainingState:
    """Saves and restores the training variables besides the generator (optimiser slots, loss scale)."""

    def __init__(self, generator_vars):
        generator = {v.op.name for v in generator_vars}
        self.variables = [v for v in tf.global_variables() if v.op.name not in generator]
        self.saver = tf.train.Saver(var_list=self.variables, max_to_keep=None) if self.variables else None

    def save(self, sess, models_dir, level, iteration):
        """Writes the state for `iteration` (call before the generator checkpoint) and prunes old ones."""
        if self.saver is None:
            return None
        path = save_variables(sess, self.saver, training_state_path(models_dir, level, iteration))
        kept = sorted(saved_iterations(models_dir, level) + [iteration])[-STATES_KEPT:]
        for old in saved_iterations(models_dir, level, training_state_path):
            if old not in kept:
                for suffix in ('.index', '.data-00000-of-00001'):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(training_state_path(models_dir, level, old) + suffix)
        return path

    def restore(self, sess, path):
        """Restores the state saved at `path`."""
        if self.saver is not None:
            restore_variables(sess, self.variables, path)


class Checkpoints:
    """Saving and resuming one level: generator checkpoint (published layout), optimiser state, log line.

    Save order makes a kill or a power loss at any moment harmless: the state is written first,
    then the generator checkpoint (its .index renamed last commits the iteration), then the log
    line. Resuming restarts from the last committed iteration, so no log line is ever repeated.
    """

    def __init__(self, models_dir, level, generator_vars, is_chief=True):
        self.models_dir, self.level, self.is_chief = models_dir, level, is_chief
        self.generator_vars = list(generator_vars)
        self.generator_saver = tf.train.Saver(var_list=self.generator_vars, max_to_keep=None)
        self.state = TrainingState(self.generator_vars)

    def resume(self, sess):
        """Restores the last committed iteration of this level; returns it (0: nothing to resume)."""
        remove_stale_temporaries(self.models_dir)
        iteration, generator, state = resume_point(self.models_dir, self.level)
        if iteration:
            restore_variables(sess, self.generator_vars, generator)
            if state is not None:
                self.state.restore(sess, state)
            else:
                print('note: no optimiser state saved with %s: Adam restarts from zero moments' % generator)
        return iteration

    def save(self, sess, iteration, log_line=None):
        """Commits `iteration` (chief only): state, generator checkpoint, then the line in logs.txt."""
        if not self.is_chief:
            return None
        self.state.save(sess, self.models_dir, self.level, iteration)
        path = save_variables(sess, self.generator_saver, checkpoint_path(self.models_dir, self.level, iteration))
        if log_line is not None:
            utils.append_line(os.path.join(self.models_dir, LOG_FILE), log_line)
        return path


def remove_stale_temporaries(models_dir):
    """Deletes half-written checkpoint files left by killed processes (`.tmp-<pid>-...`)."""
    for folder in (models_dir, os.path.join(models_dir, STATE_DIR)):
        for path in glob.glob(os.path.join(glob.escape(folder), '.tmp-*')):
            match = re.match(r'\.tmp-(\d+)-', os.path.basename(path))
            if match and not _process_alive(int(match.group(1))):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
