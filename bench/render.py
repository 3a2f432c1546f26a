"""Benchmarks the rendering engine (render.py): time and peak memory of one-piece and tiled rendering in
float32 and bfloat16, against the published one-piece float32 graph measured in the same run, and the
accuracy of each configuration against that baseline.

    python bench/render.py                                   # every size and configuration, into BENCHMARKS.md
    python bench/render.py sizes=224x224 configs=one-float32,tiled-bfloat16 write=false

Every configuration at every size runs in its own subprocess, so its peak RSS is its own. Weights: a
briefly trained checkpoint (bench/export.py stage=weights makes it once, on the synthetic dataset), or
checkpoint=<path>. Input: the synthetic dataset's full-resolution test RAW, mirrored out to each size.
"""
import json
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import utils  # noqa: E402
from utils import Key, UserError  # noqa: E402
from bench import report  # noqa: E402

CONFIGS = ('one-float32', 'one-bfloat16', 'tiled-float32', 'tiled-bfloat16')
BASELINE = 'one-float32'
KEYS = {
    'sizes': Key('224x224,736x992,1472x1984', str, 'packed input sizes HxW, comma-separated'),
    'configs': Key(','.join(CONFIGS), str, 'one|tiled-float32|bfloat16, comma-separated; %s is the baseline'
                   % BASELINE),
    'repeats': Key(1, int, 'renders per configuration in its process; the time reported is the best one'),
    'tile': Key(0, int, 'tile size of the tiled configurations; 0: render.DEFAULT_TILE'),
    'checkpoint': Key('', str, 'checkpoint to render with; empty: the one bench/export.py stage=weights trains'),
    'weights_dir': Key('/tmp/pynet-export-bench/', str, 'work_dir of bench/export.py (dataset and trained weights)'),
    'work_dir': Key('/tmp/pynet-render-bench/', str, 'outputs (.npy) and results.json go here'),
    'timeout': Key(3600, int, 'seconds after which one configuration is stopped and reported as failed'),
    'write': Key(True, bool, 'write the results into BENCHMARKS.md (## Rendering)'),
    'run': Key(True, bool, 'false: measure nothing, only write the results already in work_dir/results.json'),
    'note': Key('', str, 'a sentence added to the BENCHMARKS.md section (e.g. how busy the machine was)'),
    # worker keys
    'worker': Key('', str, 'internal: run one configuration (config@size) and print its measurements'),
}
USAGE = 'python bench/render.py [key=value ...]   times rendering configurations, one subprocess each'


def checkpoint(cfg):
    """The checkpoint to measure: given, or the briefly trained one of bench/export.py (made if missing)."""
    if cfg['checkpoint']:
        return cfg['checkpoint']
    models = os.path.join(cfg['weights_dir'], 'models')
    if not utils.saved_iterations(models, 0):
        subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'export.py'), 'stage=weights',
                        'work_dir=' + cfg['weights_dir']], check=True)
    return utils.find_checkpoint(models, 0)[0]


def bench_input(cfg, height, width):
    """The synthetic full-resolution test RAW, packed, centre-cropped or mirrored out to height x width."""
    import glob
    import image_io
    files = sorted(glob.glob(os.path.join(cfg['weights_dir'], 'raw_images', 'test', 'huawei_full_resolution',
                                          '*.png')))
    if not files:
        raise UserError('no synthetic test RAW in %s: run bench/export.py stage=weights' % cfg['weights_dir'])
    packed = image_io.pack_raw(image_io.read_raw_png(files[0]))
    h, w = packed.shape[:2]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    packed = packed[top:top + height, left:left + width]
    pad_h, pad_w = height - packed.shape[0], width - packed.shape[1]
    return np.pad(packed, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                  mode='symmetric')


def output_path(cfg, config, size):
    return os.path.join(cfg['work_dir'], '%s_%s.npy' % (config, size))


def worker(cfg):
    """One configuration at one size: build, render `repeats` times, save the output, print a JSON line."""
    import render
    config, size = cfg['worker'].split('@')
    mode, precision = config.split('-')
    height, width = report.parse_size(size)
    x = bench_input(cfg, height, width)
    start = time.time()
    renderer = render.Renderer(checkpoint(cfg), level=0, use_gpu=False, precision=precision,
                               tile=(cfg['tile'] or render.DEFAULT_TILE) if mode == 'tiled' else 0)
    setup = time.time() - start
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    times = []
    for _ in range(cfg['repeats']):
        start = time.time()
        out = renderer.render(x, progress=False)
        times.append(time.time() - start)
    renderer.close()
    np.save(output_path(cfg, config, size), out)
    print(json.dumps({'seconds': min(times), 'first_seconds': times[0], 'setup_seconds': setup,
                      'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                      'rss_after_setup_gb': base_rss, 'precision': renderer.precision}))


def run_worker(cfg, config, size):
    args = [sys.executable, os.path.abspath(__file__), 'worker=%s@%s' % (config, size)]
    args += ['%s=%s' % (k, cfg[k]) for k in ('repeats', 'tile', 'checkpoint', 'weights_dir', 'work_dir')]
    # One-piece configurations run as the published graph would: TensorFlow's default (BFC) allocator;
    # the tiled ones with render.py's choice (system allocator, which returns freed tensors).
    env = dict(os.environ, TF_ONEDNN_USE_SYSTEM_ALLOCATOR='1' if config.startswith('tiled-') else '0')
    return report.run_worker(args, cfg['timeout'], env)


def psnr(a, b):
    """PSNR in dB of a against b, both clipped to [0, 1] as they would be saved."""
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float('inf') if mse == 0 else 10 * np.log10(1.0 / mse)


def compare(cfg, results, size, configs):
    """Speed-up, max abs difference and PSNR of every configuration against the baseline at `size`."""
    base = results.get('%s@%s' % (BASELINE, size), {})
    if 'seconds' not in base:
        return
    reference = np.load(output_path(cfg, BASELINE, size))
    for config in configs:
        r = results.get('%s@%s' % (config, size), {})
        if 'seconds' not in r or config == BASELINE:
            continue
        out = np.load(output_path(cfg, config, size))
        r['speedup'] = base['seconds'] / r['seconds']
        r['max_abs_diff'] = float(np.abs(out - reference).max())
        r['psnr_db'] = psnr(out, reference)


def table(results, sizes, configs):
    lines = []
    for size in sizes:
        h, w = report.parse_size(size)
        lines += ['', '**Packed %s** (output %dx%d, %.1f MP)' % (size, 2 * h, 2 * w, 4 * h * w / 1e6), '',
                  '| configuration | render s | vs one-piece float32 | peak RSS GB | PSNR vs baseline dB '
                  '| max abs diff |',
                  '|---|---|---|---|---|---|']
        for config in configs:
            r = results.get('%s@%s' % (config, size))
            if r is None:
                continue
            if 'error' in r:
                lines.append('| %s | failed: %s |  |  |  |  |' % (config, r['error']))
                continue
            lines.append('| %s | %.1f | %s | %.2f | %s | %s |' % (
                config, r['seconds'], '%.2fx' % r['speedup'] if 'speedup' in r else '(baseline)',
                r['peak_rss_gb'], '%.1f' % r['psnr_db'] if 'psnr_db' in r else '',
                '%.2g' % r['max_abs_diff'] if 'max_abs_diff' in r else ''))
    return lines


def summary(results):
    """The issue's targets for the 12 MP photo, measured or not."""
    r, size = results.get('tiled-bfloat16@1472x1984', {}), '1472x1984'
    if 'speedup' not in r:
        return ''
    f = results.get('tiled-float32@%s' % size, {})
    return ('12 MP targets: tiled bfloat16 renders %.2fx as fast as the one-piece float32 baseline (target: at '
            'least 4x): %s; its peak RSS is %.2f GB and tiled float32\'s %s (target: at most 3 GB). bfloat16 keeps '
            '%.1f dB PSNR against float32 (target: at least 40 dB).' % (
                r['speedup'], 'met' if r['speedup'] >= 4 else 'NOT met', r['peak_rss_gb'],
                '%.2f GB' % f['peak_rss_gb'] if 'peak_rss_gb' in f else 'not measured', r['psnr_db']))


def write_benchmarks(cfg, results, sizes, configs, command, weights, load):
    import render
    text = '\n'.join([
        '## Rendering',
        '',
        '`%s` on %s. %s; run-to-run noise is about 6%%: compare the ratios, which come from the same run.' % (
            command, report.machine(), 'Measured from %s to %s' % tuple(load) if cfg['run'] else
            'Written from the measurements already in `work_dir` (when they were made: see the note below)'),
        '',
        'Each configuration renders level 0 of one image (batch 1) in its own process: `one` is the published '
        'graph in one piece (`tile=0`; the baseline in float32), `tiled` render.py\'s exact tiling with tile=%d '
        '(halo %d); float32, or bfloat16 through oneDNN auto mixed precision. `one` runs with TensorFlow\'s '
        'default allocator, `tiled` with '
        'render.py\'s (`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`, glibc returning freed blocks). "render s" is the best '
        'of %d render call(s) after the session is built and restored (the first call included). Peak RSS is the '
        'whole process\'s high-water mark in 10^9 bytes, TensorFlow\'s import (about 0.58 GB) and the weights '
        'included. PSNR and max abs diff compare the output, clipped to [0, 1], with the baseline\'s output of '
        'the same run.' % (cfg['tile'] or render.DEFAULT_TILE, render.HALO, cfg['repeats']),
        '',
        'Weights: %s. Input: the synthetic dataset\'s full-resolution test RAW (scikit-image\'s astronaut '
        'through make_synthetic_dataset.py), centre-cropped or mirrored out to each size.' % weights,
    ] + table(results, sizes, configs) + ['', summary(results), '', cfg['note'], ''])
    report.write_section('Rendering', re.sub(r'\n{3,}', '\n\n', text))


def main(argv):
    cfg = utils.parse_args(argv, KEYS, USAGE)
    if cfg['worker']:
        return worker(cfg)
    sizes = cfg['sizes'].split(',')
    for size in sizes:
        report.parse_size(size)
    configs = cfg['configs'].split(',')
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise UserError('configs: unknown %s; known: %s' % (', '.join(unknown), ', '.join(CONFIGS)))
    if cfg['repeats'] < 1:
        raise UserError('repeats=%d: must be at least 1' % cfg['repeats'])
    os.makedirs(cfg['work_dir'], exist_ok=True)
    weights = checkpoint(cfg)
    cfg['checkpoint'] = weights
    results_path = os.path.join(cfg['work_dir'], 'results.json')
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    load = [report.load_note()]
    for size in sizes if cfg['run'] else []:
        for config in configs:
            print('%s @ %s ...' % (config, size), end=' ', flush=True)
            r = results['%s@%s' % (config, size)] = run_worker(cfg, config, size)
            print(r.get('error') or '%.1f s, peak %.2f GB' % (r['seconds'], r['peak_rss_gb']), flush=True)
        compare(cfg, results, size, configs)
        with utils.atomic_path(results_path) as tmp:
            with open(tmp, 'w') as f:
                json.dump(results, f, indent=1)
    print('\n'.join(table(results, sizes, configs)))
    if cfg['write']:
        note = ('`%s`' % weights if not weights.startswith(cfg['weights_dir']) else
                '`%s`, briefly trained by `bench/export.py stage=weights` (see its section: a short Adam run '
                'on the synthetic dataset, all six levels\' MSE; trained, though far from the published model)'
                % weights)
        load.append(report.load_note())
        command = ' '.join(['python bench/render.py'] + [a for a in argv if not a.startswith('note=')])
        write_benchmarks(cfg, results, sizes, configs, command, note, load)


if __name__ == '__main__':
    utils.run_main(main)
