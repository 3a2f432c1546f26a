"""Shared plumbing for every script: key=value arguments, one-line errors, checkpoint
naming and restoring, atomic writes, TensorFlow session settings, progress bars.

Importing this module does not import TensorFlow, so `python <script>.py help` and
argument errors answer at once.
"""

import contextlib
import glob
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Quieten TensorFlow's C++ start-up chatter; a user may still override it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


@contextlib.contextmanager
def quiet_native_stderr():
    """Sends file descriptor 2 to /dev/null for the block (C++ logs that bypass Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes the first `import tensorflow` silent on stderr.

    TensorFlow's C++ layer prints oneDNN and CUDA notices while importing, before it reads
    TF_CPP_MIN_LOG_LEVEL; they would turn every one-line error into several lines.
    """

    def find_spec(self, name, path, target=None):
        if name != 'tensorflow' or self not in sys.meta_path:
            return None
        sys.meta_path.remove(self)
        with quiet_native_stderr():
            self.module = importlib.import_module(name)
            # Probing for GPUs now keeps CUDA's 'failed call to cuInit' off stderr later.
            self.module.config.list_physical_devices('GPU')
        self.spec = self.module.__spec__
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec     # the real spec, not this stand-in's


if os.environ['TF_CPP_MIN_LOG_LEVEL'] != '0' and 'tensorflow' not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlowImport())

DEFAULT_MODELS_DIR = 'models/'
DEFAULT_DATASET_DIR = 'raw_images/'
DEFAULT_VGG_PATH = 'vgg_pretrained/imagenet-vgg-verydeep-19.mat'
ORIGINAL_CHECKPOINT = 'original/pynet_level_0.ckpt'   # under the models folder
LEVELS = (0, 1, 2, 3, 4, 5)


class UserError(Exception):
    """A problem with the user's input or files; printed as one line, without a traceback."""


# ----------------------------------------------------------------------------------------
# key=value arguments

class Key:
    """One command-line key: its default, how to read its value, and a line of help."""

    def __init__(self, default, kind=None, help='', choices=None, required=False):
        self.default = default
        self.kind = kind or type(default)
        self.help = help
        self.choices = choices
        self.required = required


def _parse_value(name, text, key):
    kind = key.kind
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ('true', 'false', '1', '0', 'yes', 'no'):
                raise ValueError
            value = lowered in ('true', '1', 'yes')
        elif kind is int:
            number = float(text)        # accepts 5000 and 5e3 alike
            if number != int(number):
                raise ValueError
            value = int(number)
        elif kind is float:
            value = float(text)
        else:
            value = text
    except ValueError:
        kind_name = 'true or false' if kind is bool else 'a number' if kind in (int, float) else 'text'
        raise UserError('%s=%s: expected %s' % (name, text, kind_name))
    if key.choices is not None and value not in key.choices:
        raise UserError('%s=%s: must be one of %s' % (name, text, ', '.join(map(str, key.choices))))
    return value


def parse_args(argv, keys, usage=''):
    """Values for `keys` (name -> Key or plain default) overridden by `key=value` words of argv."""
    keys = {name: k if isinstance(k, Key) else Key(k) for name, k in keys.items()}
    if any(word in ('help', '-h', '--help') for word in argv):
        print_help(keys, usage)
        sys.exit(0)
    config = {name: key.default for name, key in keys.items()}
    given = set()
    for word in argv:
        name, sep, text = word.partition('=')
        if not sep or not name:
            raise UserError("'%s' is not of the form key=value (try: help)" % word)
        if name not in keys:
            raise UserError("unknown key '%s'; known keys: %s" % (name, ', '.join(keys)))
        config[name] = _parse_value(name, text, keys[name])
        given.add(name)
    for name, key in keys.items():
        if key.required and name not in given:
            raise UserError('%s=... is required (one of %s)' % (name, ', '.join(map(str, key.choices or []))))
    return config


def print_help(keys, usage=''):
    """Prints every key with its default and help."""
    if usage:
        print(usage)
    for name, key in keys.items():
        default = 'required' if key.required else 'default %s' % (key.default,)
        print('  %-18s %s (%s)' % (name, key.help, default))


def run_main(main):
    """Runs main(argv); a UserError becomes one line on stderr and exit status 2."""
    try:
        sys.exit(main(sys.argv[1:]) or 0)
    except UserError as error:
        print('error: %s' % error, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------------------
# files written atomically

@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary name next to `path`; renames it to `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    handle, tmp = tempfile.mkstemp(prefix='.%s.' % base, suffix='.tmp' + ext, dir=folder)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; results are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def append_line(path, line):
    """Appends one whole line and flushes it to disk, so a crash never leaves half a line."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a') as f:
        f.write(line.rstrip('\n') + '\n')
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------------
# checkpoints: naming, finding, saving, restoring

def checkpoint_path(models_dir, level, iteration):
    """models/pynet_level_<L>_iteration_<i>.ckpt"""
    return os.path.join(models_dir, 'pynet_level_%d_iteration_%d.ckpt' % (level, iteration))


def original_checkpoint_path(models_dir):
    """models/original/pynet_level_0.ckpt, where the published model goes."""
    return os.path.join(models_dir, ORIGINAL_CHECKPOINT)


def checkpoint_exists(path):
    # A checkpoint is complete once its .index exists: saving renames the index last.
    return os.path.exists(path + '.index')


def saved_iterations(models_dir, level):
    """Iterations with a complete checkpoint for `level`, ascending."""
    pattern = os.path.join(models_dir, 'pynet_level_%d_iteration_*.ckpt.index' % level)
    found = []
    for index in glob.glob(pattern):
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


def restore_variables(sess, variables, path):
    """Restores `variables` from the checkpoint at `path`, checking names and shapes first."""
    import tensorflow.compat.v1 as tf
    try:
        stored = dict(tf.train.list_variables(path))
    except Exception as error:  # corrupt or unreadable files
        raise UserError('cannot read checkpoint %s (%s): it is damaged or not a TensorFlow checkpoint'
                        % (path, str(error).splitlines()[0][:120]))
    for var in variables:
        name = var.op.name
        if name not in stored:
            raise UserError('checkpoint %s has no variable %s: it was not saved from this PyNET graph'
                            % (path, name))
        if list(stored[name]) != var.shape.as_list():
            raise UserError('checkpoint %s: %s has shape %s, the graph needs %s: it is from another model'
                            % (path, name, list(stored[name]), var.shape.as_list()))
    try:
        with sess.graph.as_default():    # a Saver must be built in its variables' graph
            tf.train.Saver(var_list=variables).restore(sess, path)
    except tf.errors.OpError as error:   # e.g. a truncated .data file
        raise UserError('cannot restore checkpoint %s (%s): it is damaged; save or download it again'
                        % (path, error.message.splitlines()[0][:120]))


def save_variables(sess, saver, path):
    """Saves a checkpoint under a temporary prefix, then renames data first and index last."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp_prefix = os.path.join(folder, '.tmp-%d-%s' % (os.getpid(), os.path.basename(path)))
    saver.save(sess, tmp_prefix, write_meta_graph=False, write_state=False)
    written = glob.glob(glob.escape(tmp_prefix) + '.*')
    for tmp in sorted(written, key=lambda p: p.endswith('.index')):
        os.replace(tmp, path + tmp[len(tmp_prefix):])
    return path


# ----------------------------------------------------------------------------------------
# TensorFlow sessions

def gpu_available():
    import tensorflow as tf2
    with quiet_native_stderr():     # CUDA's 'failed call to cuInit' on machines without a GPU
        return bool(tf2.config.list_physical_devices('GPU'))


def session_config(use_gpu=True, precision='float32'):
    """A ConfigProto for CPU or GPU and float32 or bfloat16 (oneDNN auto mixed precision)."""
    import tensorflow.compat.v1 as tf
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
    config = tf.ConfigProto(allow_soft_placement=True)
    if not use_gpu:
        config.device_count['GPU'] = 0
    else:
        config.gpu_options.allow_growth = True
    if precision == 'bfloat16':
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = RewriterConfig.ON
    return config


def cpu_bfloat16_flag():
    """The CPU flag that gives oneDNN native bfloat16: 'amx_bf16' (preferred) or 'avx512_bf16'; None without."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return next((flag for flag in ('amx_bf16', 'avx512_bf16') if flag in flags), None)


def cpu_supports_bfloat16():
    """True where oneDNN has native bfloat16 (AVX512-BF16 or AMX)."""
    return cpu_bfloat16_flag() is not None


def progress(iterable=None, total=None, desc='', unit='it', **kwargs):
    """A tqdm progress bar on stderr."""
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=0.5, file=sys.stderr, **kwargs)
