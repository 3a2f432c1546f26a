"""Crash-safe resumption: train_model.py is killed with SIGKILL at several moments
(mid-checkpoint included) and restarted with resume=true; checkpoints stay readable, log lines
stay whole and in order, and the iterations continue to the same weights as an
uninterrupted run."""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import checkpoints
import tiny_zurich
import vgg
from conftest import REPO

ITERATIONS, EVAL_STEP = 8, 2
LOG_LINE = re.compile(r'^level 5, iteration (\d+): train loss \S+ \| test loss \S+, .*psnr \S+$')


def train_command(tmp_path, models_dir, resume):
    return [sys.executable, os.path.join(REPO, 'train_model.py'), 'level=5', 'batch_size=2', 'train_size=4',
            'num_train_iters=%d' % ITERATIONS, 'eval_step=%d' % EVAL_STEP, 'resume=%s' % str(resume).lower(),
            'dataset_dir=' + str(tmp_path / 'data'), 'vgg_dir=' + str(tmp_path / 'vgg.mat'),
            'models_dir=' + models_dir, 'results_dir=' + str(tmp_path / 'results')]


def start(command, log_path):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0')
    log = open(log_path, 'w')
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log


def wait_for(condition, proc, timeout=150):
    """Polls until condition() holds; False if the process ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError('timed out')


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


def test_sigkill_at_any_moment_then_resume(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=4, n_test=1, side=64)
    vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    models, reference_models = str(tmp_path / 'models'), str(tmp_path / 'reference')
    reference, reference_log = start(train_command(tmp_path, reference_models, False),
                                     str(tmp_path / 'reference.log'))
    saved = lambda: checkpoints.saved_iterations(models, 5)
    # When to kill each run: right after a checkpoint is committed; in the middle of
    # writing one; before the first step of a resumed run.
    moments = [lambda n: (lambda: len(saved()) > n),
               lambda n: (lambda: bool(temporaries(models)) and len(saved()) > n),
               lambda n: (lambda: 'resuming from' in open(log.name).read())]
    resumed_from, proc = [], None
    try:
        for run, moment in enumerate(moments):
            before = saved()
            proc, log = start(train_command(tmp_path, models, run > 0), str(tmp_path / ('run%d.log' % run)))
            with log:
                hit = wait_for(moment(len(before)), proc)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            text = open(log.name).read()
            assert hit, 'run %d ended before its kill moment:\n%s' % (run, text[-2000:])
            if run > 0:
                resumed_from.append((re.search(r'resuming from (\S+)', text).group(1), before))
        before = saved()
        proc, log = start(train_command(tmp_path, models, True), str(tmp_path / 'final.log'))
        with log:
            assert proc.wait(timeout=200) == 0, open(log.name).read()[-2000:]
        resumed_from.append((re.search(r'resuming from (\S+)', open(log.name).read()).group(1), before))
        with reference_log:
            assert reference.wait(timeout=200) == 0, open(reference_log.name).read()[-2000:]
    finally:
        for p in (reference, proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

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
