"""Runs a top-level script in this process and kills the process with SIGKILL at a chosen moment,
for tests of crash-safe resumption (tests/test_resume.py).

    python tests/kill_at.py before|after <n> <glob> <script.py> [key=value ...]
    python tests/kill_at.py printed <n> <text> <script.py> [key=value ...]

before/after: just before (or just after) the n-th os.replace onto a path matching the glob, i.e.
the commit of a checkpoint or training-state file (checkpoints.save_variables renames a checkpoint's
files into place, data first, index last). printed: right after the n-th write to stdout that
contains the text. SIGKILL runs no Python cleanup, as when the OOM killer strikes; the moment is the
same in every run, unlike a kill sent from outside at a polled moment.
"""
import fnmatch
import os
import runpy
import signal
import sys


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfterText:
    """Stands in for sys.stdout: writes through, and dies after the n-th write containing `text`."""

    def __init__(self, stream, count, text):
        self.stream, self.count, self.text, self.seen = stream, count, text, 0

    def write(self, data):
        written = self.stream.write(data)
        if self.text in data:
            self.seen += 1
            if self.seen == self.count:
                die()
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)


def kill_at_replace(when, count, pattern):
    """Patches os.replace to die before or after its count-th call onto a path matching `pattern`."""
    replace, matches = os.replace, []

    def replace_then_maybe_die(src, dst, **kwargs):
        hit = fnmatch.fnmatch(os.fspath(dst), pattern)
        matches.extend([dst] if hit else [])
        if hit and len(matches) == count and when == 'before':
            die()
        replace(src, dst, **kwargs)
        if hit and len(matches) == count and when == 'after':
            die()

    os.replace = replace_then_maybe_die


def main(argv):
    when, count, what, script = argv[0], int(argv[1]), argv[2], os.path.abspath(argv[3])
    if when == 'printed':
        sys.stdout = KillAfterText(sys.stdout, count, what)
    else:
        assert when in ('before', 'after'), when
        kill_at_replace(when, count, what)
    sys.argv = [script] + argv[4:]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main(sys.argv[1:])
