"""Crash-safe resumption: a real training process is killed with SIGKILL at several moments
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

import utils
from conftest import REPO

STEPS, EVAL_STEP = 12, 2
LOG_LINE = re.compile(r'^step (\d+), loss \d+\.\d+$')


def train_command(models_dir, out, resume):
    return [sys.executable, os.path.join(REPO, 'tests', 'scale_worker.py'), 'out=' + out,
            'models_dir=' + models_dir, 'steps=%d' % STEPS, 'eval_step=%d' % EVAL_STEP,
            'optimizer=adam', 'learning_rate=1e-4', 'resume=%s' % str(resume).lower()]


def start(command, log_path):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0', TF_CPP_MIN_LOG_LEVEL='2')
    log = open(log_path, 'w')
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log


def wait_for(condition, proc, timeout=120):
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
    return shapes


def test_sigkill_at_any_moment_then_resume(tmp_path):
    models = str(tmp_path / 'models')
    reference = subprocess.Popen(train_command(str(tmp_path / 'reference'), str(tmp_path / 'reference.npz'),
                                               False), cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0'))
    saved = lambda: utils.saved_iterations(models, 5)
    # When to kill each run: right after a checkpoint is committed; in the middle of
    # writing one; before the first step of a resumed run.
    moments = [lambda n: (lambda: len(saved()) > n),
               lambda n: (lambda: bool(temporaries(models)) and len(saved()) > n),
               lambda n: (lambda: 'resuming from' in open(log.name).read())]
    kills, resumed_from = 0, []
    try:
        for run, moment in enumerate(moments):
            before = saved()
            proc, log = start(train_command(models, str(tmp_path / 'out.npz'), run > 0),
                              str(tmp_path / ('run%d.log' % run)))
            with log:
                hit = wait_for(moment(len(before)), proc)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            text = open(log.name).read()
            assert hit, 'run %d ended before its kill moment:\n%s' % (run, text[-2000:])
            kills += 1
            if run > 0:
                resumed_from.append((int(re.search(r'resuming from iteration (\d+)', text).group(1)),
                                     before[-1] if before else 0))
        before = saved()
        proc, log = start(train_command(models, str(tmp_path / 'out.npz'), True), str(tmp_path / 'final.log'))
        with log:
            assert proc.wait(timeout=180) == 0, open(log.name).read()[-2000:]
        assert reference.wait(timeout=180) == 0
    finally:
        for p in (reference, proc):
            if p.poll() is None:
                p.kill()
    text = open(log.name).read()
    resumed_from.append((int(re.search(r'resuming from iteration (\d+)', text).group(1)), before[-1]))

    assert kills == 3
    # Each restart continued from the last committed checkpoint.
    for got, expected in resumed_from:
        assert got == expected and got > 0
    # Every checkpoint is complete and readable; the generator ones hold the generator alone.
    assert saved() == list(range(EVAL_STEP, STEPS + 1, EVAL_STEP))
    for iteration in saved():
        names = read_every_tensor(utils.checkpoint_path(models, 5, iteration))
        assert len(names) == 437 and not any('Adam' in n for n in names)
    for state in glob.glob(os.path.join(models, 'training_state', '*.index')):
        read_every_tensor(state[:-len('.index')])
    assert not temporaries(models)
    # Whole log lines, each iteration once, in order.
    with open(os.path.join(models, 'logs.txt')) as f:
        lines = f.read().split('\n')
    assert lines[-1] == ''
    iterations = [int(LOG_LINE.match(line).group(1)) for line in lines[:-1]]
    assert iterations == sorted(set(iterations)) and iterations[-1] == STEPS
    assert set(iterations) >= {EVAL_STEP, STEPS}
    # Optimiser state and iteration count carried over: the same weights as without crashes.
    final, uninterrupted = np.load(str(tmp_path / 'out.npz')), np.load(str(tmp_path / 'reference.npz'))
    for name in uninterrupted.files:
        if name.startswith('v'):
            np.testing.assert_allclose(final[name], uninterrupted[name], atol=1e-6)
    shutil.rmtree(str(tmp_path), ignore_errors=True)     # about 3 GB of checkpoints
