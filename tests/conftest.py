"""Shared fixtures. Every test makes its own data; nothing is downloaded."""
import os
import subprocess
import sys

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, 'tests', 'data')


def run_script(script, *args, cwd=None, env=None, timeout=600):
    """Runs a top-level script as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
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


@pytest.fixture
def run():
    return run_script
