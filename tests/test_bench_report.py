"""The benchmarks' shared report helpers: each rewrites only its own section of BENCHMARKS.md."""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import input_pipeline, report  # noqa: E402
from bench import render as render_bench  # noqa: E402

DOC = '# Benchmarks\n\nintro\n\n## Input pipeline\n\nold pipeline\n\n## Export\n\nold export\n\n## Rendering\n\nold render\n'


def test_write_section_replaces_only_its_own_section(tmp_path):
    path = str(tmp_path / 'BENCHMARKS.md')
    with open(path, 'w') as f:
        f.write(DOC)
    report.write_section('Export', '## Export\n\nnew export\nsecond line\n', path)
    text = open(path).read()
    assert text == DOC.replace('old export', 'new export\nsecond line')
    report.write_section('Rendering', '## Rendering\n\nnew render', path)     # last section, no newline given
    assert open(path).read().endswith('## Rendering\n\nnew render\n')
    assert 'old pipeline' in open(path).read()
    assert not [p for p in os.listdir(str(tmp_path)) if p != 'BENCHMARKS.md']    # no temporary left


def test_write_section_appends_a_new_section_and_creates_the_file(tmp_path):
    path = str(tmp_path / 'BENCHMARKS.md')
    report.write_section('Training', '## Training\n\nsteps\n', path)
    assert open(path).read() == '# Benchmarks\n\n## Training\n\nsteps\n'
    report.write_section('Export', '## Export\n\nsizes\n', path)
    assert open(path).read() == '# Benchmarks\n\n## Training\n\nsteps\n\n## Export\n\nsizes\n'


def test_write_section_refuses_text_without_its_heading(tmp_path):
    with pytest.raises(AssertionError):
        report.write_section('Export', 'no heading\n', str(tmp_path / 'B.md'))


def stream(rate):
    return {'patches_per_s': rate, 'cpu_ms_per_patch': 5.0, 'peak_rss_mb': 700.0}


def test_input_pipeline_section_reports_the_target_from_the_measurements():
    config = dict(level=0, batch_size=50, published_max=200)
    published = {'patches_per_s': 50.0, 'peak_rss_mb': 1000.0, 'load_seconds': 2.0,
                 'bytes_per_patch': 6 * 2 ** 20}
    rows = [(100, stream(390.0), published), (30000, stream(360.0), None)]
    text = input_pipeline.section(config, rows, [(5, stream(350.0))], 'start', 'end')
    assert text.startswith('## Input pipeline\n')
    assert '| 100 | 390 | 5.0 | 700 MB | 50 | 1000 MB | 2.0 s |' in text
    assert '| 30000 | 360 | 5.0 | 700 MB | not run | ~176 GB (arrays alone) | ~600 s |' in text
    assert '360-390 patches/s at level 0 (target: at least 150, met)' in text
    slow = input_pipeline.section(config, [(100, stream(120.0), published)], [], 'start', 'end')
    assert '(target: at least 150, NOT met)' in slow


WORKER = '''import json, os, signal, sys, time
case = sys.argv[1]
if case == 'ok':
    print('progress line')
    print(json.dumps({'seconds': 1.5}))
elif case == 'user_error':
    sys.exit('error: worker.py: width=30: not a multiple of 16')
elif case == 'killed':
    os.kill(os.getpid(), signal.SIGKILL)
else:
    time.sleep(30)
'''


@pytest.mark.parametrize('case, expected', [
    ('ok', {'seconds': 1.5}),
    ('user_error', 'width=30: not a multiple of 16'),
    ('killed', r'killed \(out of memory\?\) after \d+ s'),
    ('sleep', 'stopped after 1 s'),
])
def test_run_worker_returns_the_json_line_or_why_it_failed(tmp_path, case, expected):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    result = report.run_worker([sys.executable, str(script), case], timeout=1 if case == 'sleep' else 60)
    if isinstance(expected, dict):
        assert result == expected
    else:
        assert re.fullmatch(expected, result['error']) and result['wall_seconds'] >= 0


def test_input_pipeline_without_its_data_is_a_one_line_error(tmp_path):
    config = {name: key.default for name, key in input_pipeline.KEYS.items()}
    config['data_dir'] = str(tmp_path / 'missing')
    with pytest.raises(input_pipeline.utils.UserError, match=r'missing has no train/huawei_raw/: .*make_bench_data'):
        input_pipeline.measure_and_report(config)


def test_render_bench_subtracts_the_tiny_run_that_matches_the_photo():
    # A photo in bands is compared with a folder of tiny RAWs (which prepares the streamed engine, as the photo's
    # run does); one rendered in one piece, with a single tiny RAW (whose run skips it, as the photo's does).
    tile = render_bench.utils.DEFAULT_TILE
    assert not render_bench.streams('published', (1472, 1984))                  # tile=0
    assert not render_bench.streams('default', (tile, tile))
    assert render_bench.streams('default', (tile, tile + 16)) and render_bench.streams('default', (1472, 1984))
    assert render_bench.tiny_key('default', (224, 224)) == 'default@tiny-one'
    assert render_bench.tiny_key('default', (736, 992)) == 'default@tiny'
    results = {'default@736x992': {'wall': 50.0, 'cpu': 90.0, 'faults': 900},
               'default@tiny': {'wall': 20.0, 'cpu': 30.0, 'faults': 300},
               'default@224x224': {'wall': 9.0, 'cpu': 15.0}, 'default@tiny-one': {'wall': 6.0, 'cpu': 9.0}}
    render_bench.per_photo(results, 'default', (736, 992))
    render_bench.per_photo(results, 'default', (224, 224))
    assert results['default@736x992']['per_photo'] == 30.0 and results['default@224x224']['per_photo'] == 3.0
    assert results['default@224x224']['cpu_per_photo'] == 6.0
    assert results['default@736x992']['faults_per_photo'] == 600
    assert 'faults_per_photo' not in results['default@224x224']        # a run without the figure: none per photo


def test_render_bench_measures_the_tiny_runs_again_every_time(monkeypatch, tmp_path):
    # A tiny run kept from an earlier run of the script was measured with other code: every run measures its own.
    calls = []

    def fake_run(cfg, config, size, models):
        calls.append((config, size))
        return {'wall': 10.0 + len(calls), 'cpu': 1.0, 'peak_gb': 1.0}
    monkeypatch.setattr(render_bench, 'run', fake_run)
    monkeypatch.setattr(render_bench, 'save', lambda cfg, results: None)
    results = {'default@tiny': {'wall': 99.0, 'cpu': 99.0}, 'default@tiny-one': {'wall': 99.0, 'cpu': 99.0}}
    render_bench.measure({'work_dir': str(tmp_path)}, results, ['default'], [(224, 224), (736, 992)], 'models')
    assert calls == [('default', render_bench.TINY), ('default', 'one'), ('default', (224, 224)),
                     ('default', (736, 992))]
    assert results['default@tiny']['wall'] == 11.0 and results['default@tiny-one']['wall'] == 12.0
    assert results['default@736x992']['per_photo'] == 14.0 - 11.0


def test_render_bench_table_rows_match_its_header():
    results = {'published@736x992': {'per_photo': 40.0, 'cpu_per_photo': 80.0, 'faults_per_photo': 1.5e6,
                                     'peak_gb': 2.6},
               'low-memory@736x992': {'per_photo': 50.0, 'cpu_per_photo': 95.0, 'faults_per_photo': 2.3e7,
                                      'peak_gb': 1.5, 'speedup': 0.8, 'max_abs_diff': 1e-5, 'psnr_db': 108.0},
               'default@736x992': {'error': 'stopped after 10 s'}}
    lines = render_bench.table(results, ['published', 'low-memory', 'default'], [(736, 992)])
    rows = [l for l in lines if l.startswith('|')]
    assert len(rows) == 5 and len({l.count('|') for l in rows}) == 1, rows
    assert '| 1.5 | 2.60 |' in rows[2] and '| 23.0 | 1.50 | 108.0 | 1e-05 |' in rows[3]
