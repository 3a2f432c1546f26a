"""Crash-safe resumption: train_model.py is killed with SIGKILL at chosen moments (mid-checkpoint
included) and restarted with resume=true; checkpoints stay readable, log lines stay whole and in
order, and the iterations continue to the same weights as an uninterrupted run.

The kill moments are the same in every run: tests/kill_at.py kills the process itself at a given
file commit or right after it prints a given line; no kill depends on polling for a short-lived file.
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import checkpoints
import tiny_zurich
import vgg
from conftest import REPO

ITERATIONS, EVAL_STEP = 8, 2
LOG_LINE = re.compile(r'^level 5, iteration (\d+): train loss \S+ \| test loss \S+, .*psnr \S+$')
KILL_AT = os.path.join(REPO, 'tests', 'kill_at.py')
GENERATOR_INDEX = '*/pynet_level_5_iteration_*.ckpt.index'
STATE_DATA = '*/training_state/level_5_iteration_*.ckpt.data-*'


def train_command(tmp_path, models_dir, resume, kill=None):
    """train_model.py's command line; kill=(when, n, what) runs it under tests/kill_at.py."""
    harness = [KILL_AT] + [str(k) for k in kill] if kill else []
    return [sys.executable] + harness + [
        os.path.join(REPO, 'train_model.py'), 'level=5', 'batch_size=2', 'train_size=4',
        'num_train_iters=%d' % ITERATIONS, 'eval_step=%d' % EVAL_STEP, 'resume=%s' % str(resume).lower(),
        'dataset_dir=' + str(tmp_path / 'data'), 'vgg_dir=' + str(tmp_path / 'vgg.mat'),
        'models_dir=' + models_dir, 'results_dir=' + str(tmp_path / 'results')]


def start(command, log_path):
    """The process, its output going to log_path."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0', PYTHONUNBUFFERED='1')    # every line out at once
    log = open(log_path, 'w')
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log


def killed_run(command, log_path, timeout=300):
    """Runs command under tests/kill_at.py to its kill moment; returns its output."""
    proc, log = start(command, log_path)
    with log:
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = open(log_path).read()
    assert proc.returncode == -signal.SIGKILL, 'ended before its kill moment:\n%s' % output[-2000:]
    return output


def temporaries(models_dir):
    return glob.glob(os.path.join(models_dir, '.tmp-*')) + \
        glob.glob(os.path.join(models_dir, 'training_state', '.tmp-*'))


def read_every_tensor(path):
    import tensorflow.compat.v1 as tf
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    for name in shapes:
        assert reader.get_tensor(name).shape == tuple(shapes[name])
    return reader, shapes


# Six training runs, five of them one after another: a longer limit (pytest-timeout).
@pytest.mark.timeout(1800)
def test_sigkill_at_any_moment_then_resume(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=4, n_test=1, side=64)
    vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    models, reference_models = str(tmp_path / 'models'), str(tmp_path / 'reference')
    reference, reference_log = start(train_command(tmp_path, reference_models, False),
                                     str(tmp_path / 'reference.log'))
    saved = lambda: checkpoints.saved_iterations(models, 5)
    generator = lambda iteration: checkpoints.checkpoint_path(models, 5, iteration)
    resumed_from = []
    try:
        # 1. A fresh run, killed while committing iteration 4: its optimiser state and its generator
        #    data are in place, the generator index (the commit) is not.
        killed_run(train_command(tmp_path, models, False, ('before', 2, GENERATOR_INDEX)), str(tmp_path / 'run1.log'))
        assert saved() == [2]
        assert os.path.exists(generator(4) + '.data-00000-of-00001') and not os.path.exists(generator(4) + '.index')
        assert os.path.exists(os.path.join(models, 'training_state', 'level_5_iteration_4.ckpt.index'))
        # 2. Resumed (from 2), commits 4, killed in the middle of saving 6: the state's files are
        #    written under temporary names and not yet renamed.
        before = saved()
        text = killed_run(train_command(tmp_path, models, True, ('before', 2, STATE_DATA)), str(tmp_path / 'run2.log'))
        resumed_from.append((re.search(r'resuming from (\S+)', text).group(1), before))
        assert saved() == [2, 4] and temporaries(models)
        # 3. Resumed (from 4), killed as soon as it says so, before its first step.
        before = saved()
        text = killed_run(train_command(tmp_path, models, True, ('printed', 1, 'resuming from')),
                          str(tmp_path / 'run3.log'))
        resumed_from.append((re.search(r'resuming from (\S+)', text).group(1), before))
        assert saved() == [2, 4]
        # 4. Resumed (from 4), commits 6 and is killed right after, before that iteration's log line.
        before = saved()
        text = killed_run(train_command(tmp_path, models, True, ('after', 1, GENERATOR_INDEX)), str(tmp_path / 'run4.log'))
        resumed_from.append((re.search(r'resuming from (\S+)', text).group(1), before))
        assert saved() == [2, 4, 6] and 'iteration 6:' not in open(os.path.join(models, 'logs.txt')).read()
        # 5. Resumed to the end.
        before = saved()
        proc, log = start(train_command(tmp_path, models, True), str(tmp_path / 'final.log'))
        with log:
            assert proc.wait(timeout=300) == 0, open(log.name).read()[-2000:]
        resumed_from.append((re.search(r'resuming from (\S+)', open(log.name).read()).group(1), before))
        with reference_log:
            assert reference.wait(timeout=300) == 0, open(reference_log.name).read()[-2000:]
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()

    # Each restart continued from the last committed checkpoint.
    for got, before in resumed_from:
        assert before and got == checkpoints.checkpoint_path(models, 5, before[-1])
    # Every checkpoint is complete and readable; the generator ones hold the generator alone.
    assert saved() == list(range(EVAL_STEP, ITERATIONS + 1, EVAL_STEP))
    for iteration in saved():
        _, names = read_every_tensor(checkpoints.checkpoint_path(models, 5, iteration))
        assert len(names) == 437 and not any('Adam' in n for n in names)
    states = glob.glob(os.path.join(models, 'training_state', '*.index'))
    assert states
    for state in states:
        read_every_tensor(state[:-len('.index')])
    assert not temporaries(models)
    # Whole log lines, each iteration once, in order, the last one of the last iteration.
    with open(os.path.join(models, 'logs.txt')) as f:
        text = f.read()
    assert text.endswith('\n')
    iterations = [int(LOG_LINE.match(line).group(1)) for line in text.splitlines()]
    assert iterations == sorted(set(iterations)) and iterations[-1] == ITERATIONS
    # Optimiser state, iteration count and batch sequence carried over: the weights, and the
    # logged test losses, are those of the run that was never interrupted.
    with open(os.path.join(reference_models, 'logs.txt')) as f:
        reference_lines = f.read().splitlines()
    assert set(text.splitlines()) <= set(reference_lines)
    final, _ = read_every_tensor(checkpoints.checkpoint_path(models, 5, ITERATIONS))
    expected, names = read_every_tensor(checkpoints.checkpoint_path(reference_models, 5, ITERATIONS))
    for name in names:
        np.testing.assert_allclose(final.get_tensor(name), expected.get_tensor(name), atol=1e-6)
    shutil.rmtree(str(tmp_path), ignore_errors=True)     # a few GB of checkpoints
