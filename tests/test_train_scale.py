"""train_model.py at scale: two mirrored replicas (logical CPUs), two workers on 127.0.0.1
(TF_CONFIG, gRPC), float16 compute, and TensorBoard summaries, against a one-device run.

All runs start at once and train one iteration of batch 2 at level 5. Adam's first step is
lr * sign(gradient), so gradients that differ by rounding (replicas sum in another order) can
move a weight by 2 * lr the other way: weights are compared within that bound, losses tightly.
The exact equality of replica and single-device updates is shown with SGD in test_distribute.py.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import checkpoints
import summaries
import tiny_zurich
import vgg
from conftest import REPO, assert_one_line_error, fixture_folder, run_script
from test_distribute import read_event_tags, run_workers

# Whichever test first uses `runs` waits for all its processes: a longer limit (pytest-timeout).
SLOW = pytest.mark.timeout(1800)

LEARNING_RATE = 5e-5
LINE = re.compile(r'^level 5, iteration 1: train loss (\S+) \| test loss (\S+), .*psnr (\S+)$')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    with fixture_folder(tmp_path_factory, 'train_scale') as tmp:
        yield finished_runs(tmp)


def finished_runs(tmp):
    """Starts the runs side by side in `tmp`, waits for them; their results by name."""
    data, vgg_path = str(tmp / 'data'), str(tmp / 'vgg.mat')
    tiny_zurich.make_dataset(data, n_train=4, n_test=1, side=64)
    vgg.write_random_vgg(vgg_path)
    procs = {}

    def start(name, setup):
        models = str(tmp / ('workers' if name.startswith('worker') else name))
        args = ['level=5', 'batch_size=2', 'train_size=4', 'num_train_iters=1', 'eval_step=1',
                'learning_rate=%g' % LEARNING_RATE, 'dataset_dir=' + data, 'vgg_dir=' + vgg_path,
                'models_dir=' + models, 'results_dir=' + str(tmp / 'results' / name)]
        args += ['%s=%s' % (k, v) for k, v in setup.items() if k == 'precision']
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0')
        env.pop('TF_CONFIG', None)
        env.update({k: v for k, v in setup.items() if k != 'precision'})
        if name in procs:
            procs[name][1].close()      # a worker started again on new ports
        log = open(str(tmp / (name + '.log')), 'w')
        procs[name] = (subprocess.Popen([sys.executable, os.path.join(REPO, 'train_model.py')] + args, cwd=REPO,
                                        env=env, stdout=log, stderr=subprocess.STDOUT), log, models)
        return procs[name][0], log.name

    def start_workers(workers):
        config = lambda i: json.dumps({'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': i}})
        return [start('worker%d' % i, {'TF_CONFIG': config(i)}) for i in range(2)]

    results = {}
    try:
        for name, setup in {'single': {}, 'mirrored': {'PYNET_CPU_REPLICAS': '2'},
                            'float16': {'precision': 'mixed_float16'}}.items():
            start(name, setup)
        run_workers(start_workers)
        for name, (proc, log, models) in procs.items():
            code = proc.wait(timeout=400)
            log.close()
            with open(log.name) as f:
                results[name] = {'code': code, 'output': f.read(), 'models': models,
                                 'args': proc.args[2:]}
    finally:
        for proc, log, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return results


def finished(result):
    assert result['code'] == 0, result['output'][-3000:]
    return result


def logged(models):
    with open(os.path.join(models, 'logs.txt')) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]), lines
    return [float(v) for v in LINE.match(lines[0]).groups()]


def weights(models):
    import tensorflow.compat.v1 as tf
    reader = tf.train.load_checkpoint(checkpoints.checkpoint_path(models, 5, 1))
    return {name: reader.get_tensor(name) for name in sorted(reader.get_variable_to_shape_map())}


def assert_same_step(models, reference_models):
    """The same global batch (equal training loss) and the same Adam step (weights within rounding).

    (The test loss is not compared: at random initial weights a step that moves a few weights
    by 2 * lr the other way changes it by percents.)
    """
    assert logged(models)[0] == pytest.approx(logged(reference_models)[0], rel=1e-5)
    got, expected = weights(models), weights(reference_models)
    assert list(got) == list(expected) and len(got) == 437
    diffs = np.concatenate([np.abs(got[n] - expected[n]).ravel() for n in got])
    assert diffs.max() <= 2 * LEARNING_RATE * 1.01
    assert (diffs > 1e-6).mean() < 0.01     # only near-zero gradients flipped sign


@SLOW
def test_mirrored_replicas_train_like_one_device(runs):
    single, mirrored = finished(runs['single']), finished(runs['mirrored'])
    assert '2 replica(s)' in mirrored['output'] and 'one device' in single['output']
    assert_same_step(mirrored['models'], single['models'])


@SLOW
def test_two_workers_train_together_like_one_process(runs):
    chief, other = finished(runs['worker0']), finished(runs['worker1'])
    assert 'worker 0 of 2, 2 replica(s) in sync' in chief['output']
    assert 'worker 1 of 2, 2 replica(s) in sync' in other['output']
    # The chief alone evaluates and writes; both share models_dir here.
    assert 'saved ' in chief['output'] and 'saved ' not in other['output']
    assert_same_step(chief['models'], finished(runs['single'])['models'])


@SLOW
def test_float16_training_computes_in_float16_and_keeps_float32_weights(runs):
    import tensorflow.compat.v1 as tf
    result = finished(runs['float16'])
    train, test, psnr = logged(result['models'])
    assert np.isfinite([train, test, psnr]).all()
    assert len(weights(result['models'])) == 437
    # Iteration 1's training loss is computed at the initial weights, the same seeded ones as the
    # float32 run's, on the same batch: float16 rounding moves it far more than float32's would,
    # far less than a different computation would.
    reference = logged(finished(runs['single'])['models'])[0]
    assert 1e-4 < abs(train - reference) / reference < 0.05, (train, reference)
    reader = tf.train.load_checkpoint(checkpoints.checkpoint_path(result['models'], 5, 1))
    assert set(reader.get_variable_to_dtype_map().values()) == {tf.float32}


@SLOW
def test_tensorboard_next_to_the_checkpoints(runs):
    models = finished(runs['single'])['models']
    tags = read_event_tags(summaries.tensorboard_dir(models, 5))
    for tag in ('train/loss', 'test/loss', 'test/mse', 'test/psnr'):
        assert [step for step, _ in tags[tag]] == [1], tag
    assert tags['test/loss'][0][1] == pytest.approx(logged(models)[1], rel=1e-4)
    assert 'test/output_target/0' in tags


@SLOW
def test_resume_of_a_finished_level_says_so(runs):
    single = finished(runs['single'])
    result = run_script('train_model.py', *(single['args'] + ['resume=true']))
    assert result.returncode == 0, result.stderr
    assert 'already trained to iteration 1' in result.stdout


@SLOW
def test_wrong_scale_settings_are_one_line_errors(runs):
    single = finished(runs['single'])
    args = [a for a in single['args'] if not a.startswith('models_dir=')]
    args.append('models_dir=' + os.path.join(os.path.dirname(single['models']), 'errors'))
    assert_one_line_error(run_script('train_model.py', *(args + ['num_gpus=2', 'use_gpu=false'])),
                          'num_gpus=2', 'GPU')
    assert_one_line_error(run_script('train_model.py', *(args + ['precision=half'])), 'precision=half')
    assert_one_line_error(run_script('train_model.py', *(args + ['batch_size=3']),
                                     env={'PYNET_CPU_REPLICAS': '2'}), 'batch_size=3', 'multiple of 2')
