"""Shared plumbing for every script: key=value arguments, one-line errors, atomic and durable
writes, C libraries' stderr, the quiet TensorFlow import, progress bars.

This module does not import TensorFlow: a script parses its arguments first, so that
`python <script>.py help` and argument errors answer at once, then calls import_tensorflow()
before it imports the modules that need TensorFlow.
"""

import contextlib
import os
import re
import subprocess
import sys
import tempfile

from tqdm import tqdm

DEFAULT_MODELS_DIR = 'models/'
DEFAULT_DATASET_DIR = 'raw_images/'
DEFAULT_VGG_PATH = 'vgg_pretrained/imagenet-vgg-verydeep-19.mat'
LEVELS = (0, 1, 2, 3, 4, 5)
# Rendering (render.py), here so that scripts list them before TensorFlow loads: bands of about
# DEFAULT_TILE x DEFAULT_TILE packed pixels (0: one piece), in one of RENDER_PRECISIONS.
DEFAULT_TILE = 384
RENDER_PRECISIONS = ('float32', 'bfloat16')


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
# files written atomically or durably

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


def sync_to_disk(path):
    """Waits until a file's contents, or a folder's list of names, are on disk (fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(path, line):
    """Appends one whole line and flushes it to disk, so a crash never leaves half a line."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    created = not os.path.exists(path)
    with open(path, 'a') as f:
        f.write(line.rstrip('\n') + '\n')
        f.flush()
        os.fsync(f.fileno())
    if created:
        sync_to_disk(folder)     # the new file's name


# ----------------------------------------------------------------------------------------
# what C and C++ libraries print, and the quiet TensorFlow import

@contextlib.contextmanager
def redirected_stderr(fd):
    """Points file descriptor 2, where C and C++ libraries write (bypassing sys.stderr), at `fd` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def captured_stderr():
    """Catches what is written on file descriptor 2 in the block; yields a list that receives its lines after it."""
    lines = []
    with tempfile.TemporaryFile() as capture:
        try:
            with redirected_stderr(capture.fileno()):
                yield lines
        finally:
            capture.seek(0)
            text = capture.read().decode('utf-8', 'replace')
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


# The process that holds TensorFlow's start-up output: it shows it unless the output ends with
# _LOADED, which import_tensorflow() adds once the import has succeeded.
_LOADED = b'\n[tensorflow loaded]\n'
_KEEPER = 'import sys; text = sys.stdin.buffer.read(); text.endswith(%r) or sys.stderr.buffer.write(text)' % _LOADED


def import_tensorflow(heap_allocator=False):
    """Imports TensorFlow with its C++ start-up notices held back; returns the tensorflow module.

    heap_allocator: TensorFlow's oneDNN kernels (on by default on CPUs with AVX-512) take large tensors from
    the C heap (TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1, unless the environment sets it) instead of a pool that keeps
    what it once held (about 1.2 GB through the streamed renderer's passes at 12 MP), so that memory can go back
    to the system (test_model.py low_memory=true). TensorFlow reads the setting at its first allocation.

    While it loads, TensorFlow's C++ layer prints CUDA, CPU-feature and oneDNN notices before it
    reads TF_CPP_MIN_LOG_LEVEL; they would turn every one-line error into several lines. A helper
    process keeps them and shows them after all unless the import succeeds, so a failure while
    TensorFlow loads (an ImportError, a missing CUDA library, an abort of the whole process)
    still reaches the user. Call it before importing any module that imports TensorFlow.
    TF_CPP_MIN_LOG_LEVEL=0 shows everything.
    """
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if heap_allocator:
        os.environ.setdefault('TF_ONEDNN_USE_SYSTEM_ALLOCATOR', '1')
    if 'tensorflow' in sys.modules or os.environ['TF_CPP_MIN_LOG_LEVEL'] == '0':
        import tensorflow
        return tensorflow
    read_end, write_end = os.pipe()
    keeper = subprocess.Popen([sys.executable, '-c', _KEEPER], stdin=read_end)
    os.close(read_end)
    loaded = False
    try:
        with redirected_stderr(write_end):
            import tensorflow
            # Probing for GPUs now keeps CUDA's 'failed call to cuInit' off stderr later.
            tensorflow.config.list_physical_devices('GPU')
        loaded = True
    finally:
        if loaded:
            os.write(write_end, _LOADED)
        os.close(write_end)
        keeper.wait()
    return tensorflow


# ----------------------------------------------------------------------------------------
# the CPU's bfloat16, progress bars

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
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=0.5, file=sys.stderr, **kwargs)

