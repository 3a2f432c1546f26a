"""Data parallelism (devices.py), precision (mixed_precision.py), TensorBoard (summaries.py), and the
training state saved with a checkpoint (checkpoints.py).

Replica runs happen in subprocesses (tests/scale_worker.py): logical CPU devices must be set
up before TensorFlow starts, and workers are separate processes talking gRPC on 127.0.0.1.
All of them start at once in a module fixture, so they share the cores while we wait.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import utils
from conftest import REPO, fixture_folder

# Whichever test first uses `runs` waits for all its processes: a longer limit (pytest-timeout).
SLOW = pytest.mark.timeout(1800)

WORKER = os.path.join(REPO, 'tests', 'scale_worker.py')
TIMEOUT = 400


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


PORT_TAKEN = 'cannot start the gRPC server'     # devices.py's error when a worker's port is in use


def run_workers(start, count=2, attempts=3, timeout=TIMEOUT):
    """Runs `count` workers that talk gRPC on local ports until they end; start(addresses) starts them
    and returns [(process, log path)]. A port free when free_ports() chose it may be taken by another
    process before the worker binds it: then every worker is stopped and all start again on new ports."""
    for _ in range(attempts):
        group = start(['127.0.0.1:%d' % p for p in free_ports(count)])
        taken = lambda: any(proc.poll() not in (None, 0) and PORT_TAKEN in open(log).read() for proc, log in group)
        deadline = time.time() + timeout
        while any(proc.poll() is None for proc, _ in group) and not taken() and time.time() < deadline:
            time.sleep(1)       # the others wait for a worker that failed to start: look again soon
        stopped = taken()
        for proc, _ in group:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not stopped:
            return
    raise AssertionError('the workers found no free ports in %d attempts' % attempts)


class Runs:
    """Starts the subprocesses and hands out their results."""

    def __init__(self, folder):
        self.folder = folder
        self.procs = {}

    def start(self, name, *args, tf_config=None, onednn=False):
        """Starts scale_worker.py with `args` as run `name`; returns (process, log path)."""
        # Exact comparisons want Eigen's kernels; bfloat16 needs oneDNN's rewrite.
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='1' if onednn else '0', TF_CPP_MIN_LOG_LEVEL='2')
        env.pop('TF_CONFIG', None)
        if tf_config:
            env['TF_CONFIG'] = json.dumps(tf_config)
        if name in self.procs:
            self.procs[name][2].close()     # a worker started again on new ports
        out = os.path.join(self.folder, name + '.npz')
        log = open(os.path.join(self.folder, name + '.log'), 'w')
        self.procs[name] = (subprocess.Popen([sys.executable, WORKER, 'out=' + out] + list(args),
                                             cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), out, log)
        return self.procs[name][0], log.name

    def result(self, name):
        proc, out, log = self.procs[name]
        try:
            code = proc.wait(timeout=TIMEOUT)
        finally:
            log.close()
        with open(log.name) as f:
            text = f.read()
        assert code == 0, '%s failed:\n%s' % (name, text[-3000:])
        return dict(np.load(out))

    def stop_all(self):
        for proc, _, log in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    with fixture_folder(tmp_path_factory, 'scale') as folder:
        yield from started_runs(str(folder))


def started_runs(folder):
    """Starts every run in `folder`; yields them once started, stops them afterwards."""
    runs = Runs(folder)
    # The same 3 SGD steps on the same global batches of 4: one device, 2 mirrored replicas,
    # 2 workers (each feeding its half of every batch). SGD, unlike Adam, is not invariant to
    # the gradient's scale, so a wrong loss scaling would show.
    runs.start('single')
    runs.start('mirrored', 'replicas=2')
    # Adam on one fixed batch, per precision.
    for precision in ('float32', 'mixed_float16', 'bfloat16'):
        if precision == 'bfloat16' and not utils.cpu_supports_bfloat16():
            continue
        runs.start(precision, 'precision=' + precision, 'optimizer=adam', 'learning_rate=1e-4',
                   'steps=16', 'fixed_batch=true', onednn=True)
    try:
        run_workers(lambda workers: [runs.start('worker%d' % i, tf_config={
            'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': i}}) for i in range(2)])
    except BaseException:
        runs.stop_all()
        raise
    yield runs
    runs.stop_all()


def assert_same_variables(a, b, atol=1e-4):
    names = [k for k in a if k.startswith('v')]
    assert len(names) == 437 and names == [k for k in b if k.startswith('v')]
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in names)
    assert worst < atol, worst


@SLOW
def test_mirrored_replicas_equal_one_device_on_the_global_batch(runs):
    single, mirrored = runs.result('single'), runs.result('mirrored')
    assert int(mirrored['replicas']) == 2 and int(single['replicas']) == 1
    # Training moved the weights: the losses of the 3 steps differ a lot.
    assert np.ptp(single['losses']) > 0.05
    np.testing.assert_allclose(mirrored['losses'], single['losses'], rtol=1e-4)
    assert_same_variables(mirrored, single)


@SLOW
def test_two_workers_train_together_and_equal_one_process(runs):
    single = runs.result('single')
    results = [runs.result('worker%d' % i) for i in range(2)]
    for result in results:
        assert int(result['replicas']) == 2
        # The reported loss is the mean over both workers' halves: the global batch's.
        np.testing.assert_allclose(result['losses'], single['losses'], rtol=1e-4)
        assert_same_variables(result, single)


@SLOW
def test_every_precision_trains_on_a_fixed_batch(runs):
    reference = runs.result('float32')['losses']
    assert reference[-1] < 0.4 * reference[0]
    mixed = runs.result('mixed_float16')['losses']
    # Dynamic loss scaling starts high and skips the steps whose float16 gradients overflow,
    # then the loss falls as in float32.
    assert mixed[-1] < 0.4 * mixed[0]
    assert mixed[-1] < 2.0 * reference[-1]
    if utils.cpu_supports_bfloat16():
        bf16 = runs.result('bfloat16')['losses']
        assert bf16[-1] < 0.4 * bf16[0]
        assert bf16[-1] < 2.0 * reference[-1]
        assert abs(bf16[0] - reference[0]) > 1e-5     # the rewrite really computed in bfloat16


def test_bfloat16_refused_where_unsupported(monkeypatch):
    import mixed_precision
    monkeypatch.setattr(utils, 'cpu_supports_bfloat16', lambda: False)
    with pytest.raises(utils.UserError, match='bfloat16'):
        mixed_precision.check_precision('bfloat16', use_gpu=False)
    monkeypatch.setattr(utils, 'cpu_supports_bfloat16', lambda: True)
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    with pytest.raises(utils.UserError, match='oneDNN'):
        mixed_precision.check_precision('bfloat16', use_gpu=False)
    with pytest.raises(utils.UserError, match='precision=half'):
        mixed_precision.check_precision('half', use_gpu=False)
    assert mixed_precision.check_precision('float32', use_gpu=False) == 'float32'


def test_tf_config_is_read_and_checked():
    import devices
    cluster = {'worker': ['a:1', 'b:2']}
    config = lambda task: {'TF_CONFIG': json.dumps({'cluster': cluster, 'task': task})}
    assert devices.read_cluster({}) is None
    assert devices.read_cluster(config({'type': 'worker', 'index': 1})) == \
        {'workers': ['a:1', 'b:2'], 'index': 1}
    for bad in ({'TF_CONFIG': '{not json'}, config({'type': 'worker', 'index': 2}),
                config({'type': 'ps', 'index': 0})):
        with pytest.raises(utils.UserError, match='TF_CONFIG'):
            devices.read_cluster(bad)
    assert devices.cpu_replica_devices({}) is None
    assert devices.cpu_replica_devices({'PYNET_CPU_REPLICAS': '1'}) is None
    with pytest.raises(utils.UserError, match='PYNET_CPU_REPLICAS=two'):
        devices.cpu_replica_devices({'PYNET_CPU_REPLICAS': 'two'})


def read_event_tags(folder):
    """{tag: [(step, value or None for images)]} from the event files under `folder`."""
    import glob
    import tensorflow.compat.v1 as tf
    tags = {}
    for path in sorted(glob.glob(os.path.join(folder, 'events.out.tfevents.*'))):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                number = value.simple_value if value.HasField('simple_value') else None
                tags.setdefault(value.tag, []).append((event.step, number))
    return tags


def test_tensorboard_scalars_and_images(tmp_path):
    import summaries
    writer = summaries.SummaryWriter(str(tmp_path), 3)
    writer.scalars(10, {'loss': 1.5, 'psnr': 20.0, 'ms_ssim': 0.8})
    writer.images(10, 'output_vs_target', [np.zeros((8, 16, 3)), np.ones((8, 16, 3))])
    writer.scalars(20, {'loss': 1.0, 'psnr': 21.0, 'ms_ssim': 0.85})
    writer.close()
    folder = summaries.tensorboard_dir(str(tmp_path), 3)
    assert folder.startswith(str(tmp_path)) and os.path.isdir(folder)
    tags = read_event_tags(folder)
    assert tags['loss'] == [(10, 1.5), (20, 1.0)]
    assert [s for s, _ in tags['psnr']] == [10, 20]
    assert tags['output_vs_target/0'] == [(10, None)] and 'output_vs_target/1' in tags


def test_training_state_round_trip(tmp_path):
    """Adam's slots and step counters come back exactly; the generator checkpoint holds no slots."""
    import tensorflow.compat.v1 as tf
    import checkpoints
    models = str(tmp_path)

    def build():
        weights = [tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name='generator/Variable')]
        loss = tf.reduce_sum(tf.square(weights[0] - 1.0))
        train = tf.train.AdamOptimizer(0.1).minimize(loss, var_list=weights)
        return weights, train

    with tf.Graph().as_default():
        weights, train = build()
        state = checkpoints.TrainingState(weights)
        assert len(state.variables) == 4        # 2 slots, beta1_power, beta2_power
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(3):
                sess.run(train)
            for iteration in (10, 20, 30):
                state.save(sess, models, 5, iteration)
                checkpoints.save_variables(sess, tf.train.Saver(weights),
                                           checkpoints.checkpoint_path(models, 5, iteration))
            expected = sess.run(state.variables + weights)
    # Only the newest states are kept; each generator checkpoint holds the generator alone.
    assert checkpoints.saved_iterations(models, 5, checkpoints.training_state_path) == [20, 30]
    assert [n for n, _ in tf.train.list_variables(checkpoints.checkpoint_path(models, 5, 30))] == ['generator/Variable']
    iteration, generator, state_path = checkpoints.resume_point(models, 5)
    assert iteration == 30 and state_path == checkpoints.training_state_path(models, 5, 30)
    with tf.Graph().as_default():
        weights, train = build()
        state = checkpoints.TrainingState(weights)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            checkpoints.restore_variables(sess, weights, generator)
            state.restore(sess, state_path)
            got = sess.run(state.variables + weights)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert checkpoints.resume_point(os.path.join(models, 'none'), 5) == (0, None, None)
