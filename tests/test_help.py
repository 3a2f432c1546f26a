"""`python <script> help` of every script lists each key of its KEYS with its default, and exits 0."""
import importlib
import os
import re
import subprocess
import sys

import utils
from conftest import REPO

SCRIPTS = ['train_model.py', 'evaluate_accuracy.py', 'test_model.py', 'dng_to_png.py', 'export_model.py',
           'make_synthetic_dataset.py', 'make_camera_dataset.py', 'synthetic_pairs.py', 'baseline.py', 'demo.py',
           'bench/align.py', 'bench/ceiling.py', 'bench/export.py', 'bench/input_pipeline.py',
           'bench/make_bench_data.py', 'bench/render.py', 'bench/render_passes.py']


def keys_of(script):
    """The script's KEYS as utils.Key objects."""
    module = importlib.import_module(script[:-3].replace('/', '.'))
    return {name: k if isinstance(k, utils.Key) else utils.Key(k) for name, k in module.KEYS.items()}


def test_every_script_with_keys_is_listed():
    found = [os.path.relpath(os.path.join(folder, name), REPO)
             for folder in (REPO, os.path.join(REPO, 'bench')) for name in sorted(os.listdir(folder))
             if name.endswith('.py') and 'KEYS = {' in open(os.path.join(folder, name)).read()]
    assert sorted(found) == sorted(SCRIPTS)


def test_help_lists_every_key_with_its_default():
    # All at once: most of the time is each process's start-up.
    procs = {script: subprocess.Popen([sys.executable, os.path.join(REPO, script), 'help'], cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for script in SCRIPTS}
    for script, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and err.strip() == '', (script, err[-2000:])
        # print_help's lines: two spaces, the key, its help, (its default); usage lines are indented further.
        lines = {m.group(1): m.group(0) for m in re.finditer(r'^  (\S+) .*$', out, re.M)}
        keys = keys_of(script)
        assert list(lines) == list(keys), (script, out)
        for name, key in keys.items():
            default = 'required' if key.required else 'default %s' % (key.default,)
            assert lines[name].endswith('(%s)' % default), (script, lines[name])
