"""The documentation describes the code as it is: every key table lists exactly its script's keys (and
their defaults), every relative link and picture exists, and the README stays a short front door.

A key table is a markdown table preceded by a marker line naming the script, relative to the repository:

    <!-- keys: train_model.py -->
    | key | default | what it does |
    |---|---|---|
    | `level` | required | ... |
    | `black_level`, `white_level` | `64`, `1023` | ... |

Its first column holds the key names in backticks (several per row allowed). In a `default` column a
backticked value is compared with the Key's default; defaults described in words (`None` defaults such as
"last saved" or "required") are not. An empty-string default must be called "empty". Nothing here starts
TensorFlow: the scripts import it only inside main().
"""
import glob
import importlib
import os
import re

import pytest

import utils
from conftest import REPO

README_MAX_LINES = 300
MARKER = re.compile(r'^<!--\s*keys:\s*(\S+)\s*-->\s*$')
FENCE = re.compile(r'^(```|~~~)')


def doc_files():
    return [os.path.join(REPO, 'README.md')] + sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))


def scripts_with_keys():
    """Scripts (paths relative to the repository) defining a module-level KEYS."""
    found = []
    for path in sorted(glob.glob(os.path.join(REPO, '*.py')) + glob.glob(os.path.join(REPO, 'bench', '*.py'))):
        with open(path) as f:
            if any(line.startswith('KEYS') for line in f):
                found.append(os.path.relpath(path, REPO))
    return found


def keys_of(script):
    module = importlib.import_module(script[:-3].replace('/', '.'))
    return {name: k if isinstance(k, utils.Key) else utils.Key(k) for name, k in module.KEYS.items()}


def cells(line):
    """The cells of a markdown table row (pipes inside backticks are not used in our tables)."""
    return [c.strip() for c in line.strip().strip('|').split('|')]


def key_tables():
    """[(doc, line number, script, header cells, rows of cells)] of every marked table."""
    tables = []
    for doc in doc_files():
        lines = open(doc).read().splitlines()
        for number, line in enumerate(lines):
            match = MARKER.match(line)
            if not match:
                continue
            at = number + 1
            while at < len(lines) and not lines[at].strip():
                at += 1
            rows = []
            while at < len(lines) and lines[at].lstrip().startswith('|'):
                rows.append(cells(lines[at]))
                at += 1
            where = '%s:%d' % (os.path.relpath(doc, REPO), number + 1)
            assert len(rows) >= 3, '%s: the marker must be followed by a table with a header and rows' % where
            assert all(re.fullmatch(r':?-+:?', c) for c in rows[1]), '%s: second row is not |---|' % where
            tables.append((where, match.group(1), rows[0], rows[2:]))
    return tables


TABLES = key_tables()


def test_every_script_with_keys_has_exactly_one_key_table():
    documented = [script for _, script, _, _ in TABLES]
    scripts = scripts_with_keys()
    assert scripts, 'no script with KEYS found'
    assert sorted(set(documented) - set(scripts)) == [], 'markers naming scripts without KEYS'
    assert [s for s in scripts if s not in documented] == [], 'scripts whose keys have no table in README/docs'
    assert sorted(s for s in set(documented) if documented.count(s) > 1) == [], 'scripts with several key tables'


def backticked(text):
    return re.findall(r'`([^`]*)`', text)


def matches_default(token, default):
    if isinstance(default, bool):
        return token.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(token) == pytest.approx(float(default), rel=1e-12)
        except ValueError:
            return False
    return token == default


def check_defaults(where, names, cell, keys):
    """Errors of one row's default cell against its keys' defaults."""
    wanted = {n: keys[n].default for n in names if n in keys and not keys[n].required}
    if '' in wanted.values() and 'empty' not in cell.lower():
        return ['%s: %s: default is the empty string, but the table says %r' % (where, names, cell)]
    checked = {n: d for n, d in wanted.items() if d is not None and d != '' and
               isinstance(d, (bool, int, float, str))}
    if not checked:
        return []
    tokens = backticked(cell)
    if len(tokens) == len(names):
        pairs = dict(zip(names, tokens))
    elif len(names) == 1 and tokens:
        pairs = {names[0]: tokens[0]}
    else:
        return ['%s: %s: the default cell %r should give `value` per key' % (where, names, cell)]
    return ['%s: %s: table says `%s`, the script %r' % (where, n, pairs[n], d)
            for n, d in checked.items() if not matches_default(pairs[n], d)]


@pytest.mark.parametrize('where,script,header,rows', TABLES, ids=[t[0] for t in TABLES])
def test_key_table_lists_exactly_the_scripts_keys(where, script, header, rows):
    assert os.path.isfile(os.path.join(REPO, script)), '%s: no script %s' % (where, script)
    keys = keys_of(script)
    listed = []
    errors = []
    default_column = next((i for i, h in enumerate(header) if h.lower() == 'default'), None)
    for row in rows:
        names = backticked(row[0])
        assert names, '%s: a row without a `key` in its first cell: %s' % (where, row)
        listed += names
        if default_column is not None:
            errors += check_defaults(where, names, row[default_column], keys)
    missing = [k for k in keys if k not in listed]
    extra = [k for k in listed if k not in keys]
    twice = sorted({k for k in listed if listed.count(k) > 1})
    assert (missing, extra, twice) == ([], [], []), \
        '%s (%s): keys missing from the table %s, not in the script %s, listed twice %s' % (
            where, script, missing, extra, twice)
    assert errors == []


# ----------------------------------------------------------------------------------------
# links

def without_code(text):
    """The text with fenced code blocks and inline code removed (links there are not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        out.append('' if fenced else re.sub(r'`[^`]*`', '', line))
    return '\n'.join(out)


def github_anchors(path):
    """The heading anchors GitHub makes for a markdown file."""
    anchors, seen, fenced = set(), {}, False
    for line in open(path).read().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        match = None if fenced else re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', match.group(1)).replace('`', '')   # as rendered
        slug = re.sub(r'[^\w\- ]', '', text.lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else '%s-%d' % (slug, count))
    return anchors


def links(path):
    """(line number, target) of every markdown link and image in a file, code excluded."""
    found = []
    for number, line in enumerate(without_code(open(path).read()).splitlines(), 1):
        for target in re.findall(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)', line):
            found.append((number, target))
    return found


@pytest.mark.parametrize('doc', doc_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_and_pictures_exist(doc):
    assert os.path.isfile(doc)
    broken = []
    for number, target in links(doc):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):      # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition('#')
        path = os.path.normpath(os.path.join(os.path.dirname(doc), file_part)) if file_part else doc
        where = '%s:%d %s' % (os.path.relpath(doc, REPO), number, target)
        if not os.path.exists(path):
            broken.append(where + ': no such file')
        elif anchor and path.endswith('.md') and anchor not in github_anchors(path):
            broken.append(where + ': no such heading')
    assert broken == []


def test_readme_is_a_short_front_door():
    with open(os.path.join(REPO, 'README.md')) as f:
        count = len(f.read().splitlines())
    assert count <= README_MAX_LINES, 'README.md has %d lines; move details into docs/' % count


def test_the_checks_can_fail(tmp_path):
    """The parsers find what they should: a wrong default, a missing key and a broken anchor are caught."""
    keys = {'a': utils.Key(5, int), 'b': utils.Key('x', str), 'c': utils.Key(None, int)}
    assert check_defaults('t', ['a'], '`5`', keys) == []
    assert check_defaults('t', ['a'], '`6`', keys) != []
    assert check_defaults('t', ['a', 'b'], '`5`, `x`', keys) == []
    assert check_defaults('t', ['c'], 'last saved', keys) == []
    page = tmp_path / 'page.md'
    page.write_text('# A `b` title\n\n## Same\n\n## Same\n\n[x](page.md#same-1) [y](#a-b-title) '
                    '[z](#nothing) ![p](missing.png)\n```\n[not](a-link.md)\n```\n')
    assert github_anchors(str(page)) == {'a-b-title', 'same', 'same-1'}
    assert [t for _, t in links(str(page))] == ['page.md#same-1', '#a-b-title', '#nothing', 'missing.png']
