"""What every benchmark shares: the machine/version line, running one measurement in its own process, and
writing its own section of BENCHMARKS.md."""
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import utils  # noqa: E402

BENCHMARKS = os.path.join(REPO, 'BENCHMARKS.md')


VECTOR_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16')   # what decides float32 and bfloat16 speed


def machine(*extra):
    """'CPU, cores, memory, vector flags; Python, TensorFlow, NumPy versions' plus `extra`, for a report's header.
    Reads versions without importing TensorFlow, so a benchmark's parent process stays small."""
    try:
        lscpu = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ''
    field = lambda key: next((l.split(':', 1)[1].strip() for l in lscpu.splitlines() if l.startswith(key)), '')
    flags = field('Flags').split()
    memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30
    parts = ['%s, %d cores, %.0f GiB, CPU flags: %s (native bfloat16: %s)' % (
                 field('Model name') or '?', os.cpu_count(), memory,
                 ' '.join(f for f in VECTOR_FLAGS if f in flags) or 'none of ' + ' '.join(VECTOR_FLAGS),
                 'yes' if utils.cpu_supports_bfloat16() else 'no'),
             'Python %s, TensorFlow %s, NumPy %s' % (platform.python_version(), metadata.version('tensorflow'),
                                                      metadata.version('numpy'))]
    return '; '.join(parts + list(extra))


def parse_size(text, key='sizes'):
    """(height, width) from 'HxW'; `key` names the key it came from in the error."""
    try:
        height, width = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise utils.UserError('%s: %r is not HxW (e.g. 736x992)' % (key, text))
    return height, width


def run_worker(args, timeout=None, env=None):
    """Runs one measurement process (its own peak RSS); the JSON object on its last stdout line, or
    {'error': why, 'wall_seconds': ...} when it failed, was killed or ran out of time."""
    start = time.time()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {'error': 'stopped after %d s' % timeout, 'wall_seconds': time.time() - start}
    if done.returncode != 0:
        if done.returncode == -9:
            why = 'killed (out of memory?) after %.0f s' % (time.time() - start)
        else:
            tail = [l for l in done.stderr.splitlines() if l.strip()][-1:] or ['exit status %d' % done.returncode]
            why = re.sub(r'^error: \S+: ', '', tail[0])[:400]      # a UserError line, without its file name
        return {'error': why, 'wall_seconds': time.time() - start}
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_note():
    """How busy the machine is: the 1-minute load average against its cores, and the time."""
    return '%s, load average %.1f on %d cores' % (time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                                                  os.getloadavg()[0], os.cpu_count())


def write_section(title, text, path=BENCHMARKS):
    """Replaces (or appends) the `## title` section of BENCHMARKS.md with `text` (which starts with that heading)."""
    assert text.startswith('## %s\n' % title), 'a section starts with its own heading'
    text = text.rstrip('\n') + '\n'
    old = open(path).read() if os.path.exists(path) else '# Benchmarks\n'
    start = old.find('\n## %s\n' % title)
    if start < 0:
        new = old.rstrip('\n') + '\n\n' + text
    else:
        end = old.find('\n## ', start + 1)
        new = old[:start + 1] + text + ('' if end < 0 else '\n' + old[end + 1:])
    with utils.atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            f.write(new)
