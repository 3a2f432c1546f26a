"""Shared fixtures. Every test makes its own data; nothing is downloaded.

The suite runs on the CPU even where a GPU is visible, since its tolerances are the CPU's:
CUDA_VISIBLE_DEVICES=-1 is set here, before TensorFlow loads, for this process and so for every
subprocess it starts. Tests of GPU behaviour take the `gpu` fixture, an environment for a
subprocess that sees the GPUs the suite was started with; where TensorFlow sees none they are
skipped, with the reason.
"""
import contextlib
import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
STARTED_WITH_CUDA_DEVICES = os.environ.get('CUDA_VISIBLE_DEVICES')
os.environ['CUDA_VISIBLE_DEVICES'] = '-1'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, 'tests', 'data')


def run_script(script, *args, cwd=None, env=None, timeout=600):
    """Runs a top-level script as a user would; returns the CompletedProcess. env: changes to this
    process's environment (a value of None removes the variable)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run([sys.executable, os.path.join(REPO, script)] + [str(a) for a in args],
                          cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """A failed run: non-zero exit, no traceback, one line on stderr naming the problem."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


@contextlib.contextmanager
def fixture_folder(tmp_path_factory, name):
    """A new folder for a module-scoped fixture, deleted when the fixture is torn down: what such a
    fixture writes (190 MB per checkpoint) would otherwise stay until the whole run ends."""
    folder = tmp_path_factory.mktemp(name)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def run():
    return run_script


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A folder for train_model.py runs: data/ (a tiny Zurich dataset: 6 training pairs, 3 test pairs,
    64x64 mosaics) and vgg.mat (a VGG-19 with random weights); one per test module."""
    import tiny_zurich      # these load TensorFlow: only after CUDA_VISIBLE_DEVICES is set above
    import vgg
    with fixture_folder(tmp_path_factory, 'workspace') as root:
        tiny_zurich.make_dataset(str(root / 'data'), n_train=6, n_test=3, side=64)
        vgg.write_random_vgg(str(root / 'vgg.mat'))
        yield root


def train(workspace, *args):
    """train_model.py in `workspace` on its tiny dataset, batch 2; args: further keys."""
    return run_script('train_model.py', 'dataset_dir=data', 'vgg_dir=vgg.mat', 'batch_size=2', *args,
                      cwd=str(workspace))


@pytest.fixture(scope='session')
def gpu():
    """(environment changes for run_script that un-hide the GPUs, their number); skips where there is none."""
    env = {'CUDA_VISIBLE_DEVICES': STARTED_WITH_CUDA_DEVICES,
           'NVIDIA_TF32_OVERRIDE': '0',          # float32 stays float32 on GPUs with TensorFloat-32
           'TF_DETERMINISTIC_OPS': '1'}          # the same sums in every run, as on the CPU
    probe = subprocess.run([sys.executable, '-c', 'import tensorflow as tf; '
                            'print(len(tf.config.list_physical_devices("GPU")))'],
                           env={k: v for k, v in dict(os.environ, **env).items() if v is not None},
                           capture_output=True, text=True, timeout=600)
    lines = probe.stdout.strip().splitlines()
    if probe.returncode != 0 or not lines or not lines[-1].isdigit():
        pytest.fail('cannot ask TensorFlow for GPUs:\n' + probe.stderr[-2000:])
    count = int(lines[-1])
    if not count:
        pytest.skip('no GPU visible to TensorFlow%s' % ('' if STARTED_WITH_CUDA_DEVICES is None else
                    ' (CUDA_VISIBLE_DEVICES=%s when the suite started)' % STARTED_WITH_CUDA_DEVICES))
    return env, count
