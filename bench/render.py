"""Benchmarks rendering as users run it: whole `test_model.py` processes, configurations side by side.

    python bench/render.py                                  # every size and configuration, into BENCHMARKS.md
    python bench/render.py sizes=224x224 configs=published,default write=false

Every configuration renders one RAW of each size in its own `test_model.py` process (peak memory is that
process's own), and the same command over a folder of two tiny RAWs is run once per configuration: the
difference is the time *per photo* (import, checkpoint restore, graph building and the streamed engine's
warm-up are paid once per folder of photos). The baseline is the published graph in one piece, float32
(`tile=0 precision=float32`); every output is compared with the baseline's (16-bit PNGs). Weights: the
briefly trained checkpoint of `bench/export.py stage=weights` (made once, on the synthetic dataset), or
models_dir=; input: the synthetic dataset's full-resolution test RAW, centre-cropped or mirrored out to each
size.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import image_io  # noqa: E402
import utils  # noqa: E402
from utils import Key, UserError  # noqa: E402
from bench import report  # noqa: E402

# configuration -> test_model.py keys
CONFIGS = {
    'published': ['tile=0', 'precision=float32'],       # the baseline
    'default': [],                                      # test_model.py as it runs without tile/precision keys
    'one-bfloat16': ['tile=0', 'precision=bfloat16'],
    'streamed-bfloat16': ['precision=bfloat16'],
    'low-memory': ['low_memory=true'],
}
BASELINE = 'published'
FELL_BACK = 'no native bfloat16'     # in test_model.py's note where precision=bfloat16 runs in float32
TINY = (32, 32)             # packed size of the tiny RAW whose run is subtracted
# The keys models_dir() reads, shared by the rendering benchmarks (bench/render_passes.py, bench/ceiling.py).
WEIGHTS_KEYS = {
    'models_dir': Key('', str, 'models_dir whose last level-0 checkpoint renders; empty: bench/export.py '
                               'stage=weights trains one (once)'),
    'weights_dir': Key('/tmp/pynet-export-bench/', str, 'work_dir of bench/export.py (dataset and trained weights)'),
}
KEYS = {
    'sizes': Key('224x224,736x992,1472x1984', str, 'packed input sizes HxW, comma-separated'),
    'configs': Key(','.join(CONFIGS), str, 'comma-separated, of: %s (%s is the baseline)'
                   % (', '.join(CONFIGS), BASELINE)),
    **WEIGHTS_KEYS,
    'work_dir': Key('/tmp/pynet-render-bench/', str, 'inputs, outputs and results.json go here'),
    'timeout': Key(3600, int, 'seconds after which one run is stopped and reported as failed'),
    'write': Key(True, bool, 'write the results into BENCHMARKS.md (## Rendering)'),
    'run': Key(True, bool, 'false: measure nothing, only write the results already in work_dir/results.json'),
    'note': Key('', str, 'a sentence added to the BENCHMARKS.md section (e.g. how busy the machine was)'),
}
USAGE = 'python bench/render.py [key=value ...]   times test_model.py configurations side by side'


def models_dir(cfg):
    """The models folder to render with: given, or bench/export.py's briefly trained one (made if missing)."""
    if cfg['models_dir']:
        return cfg['models_dir']
    utils.import_tensorflow()   # deferred: `help` and bad keys answer without TensorFlow's start-up
    import checkpoints
    models = os.path.join(cfg['weights_dir'], 'models')
    if not checkpoints.saved_iterations(models, 0):
        subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'export.py'), 'stage=weights',
                        'work_dir=' + cfg['weights_dir']], check=True)
    return models


def write_input(cfg, height, width):
    """A Zurich RAW PNG whose packed size is height x width: the synthetic test RAW, centre-cropped or mirrored."""
    path = os.path.join(cfg['work_dir'], 'inputs', '%dx%d.png' % (height, width))
    if os.path.exists(path):
        return path
    folder = os.path.join(cfg['weights_dir'], 'raw_images', 'test', 'huawei_full_resolution')
    files = sorted(f for f in os.listdir(folder) if f.endswith('.png')) if os.path.isdir(folder) else []
    if not files:
        raise UserError('no synthetic test RAW in %s: run python bench/export.py stage=weights' % folder)
    packed = image_io.bayer_planes(image_io.read_raw_png(os.path.join(folder, files[0])))
    h, w = packed.shape[:2]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    packed = packed[top:top + height, left:left + width]
    pad_h, pad_w = height - packed.shape[0], width - packed.shape[1]
    packed = np.pad(packed, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                    mode='symmetric')
    image_io.save_raw_png(path, image_io.mosaic_from_planes(packed))
    return path


def tiny_folder(cfg):
    """A folder of two tiny RAWs: test_model.py prepares its engine for a folder as for any photo in it,
    so that the tiny run pays the start-up a big photo's run pays."""
    folder = os.path.join(cfg['work_dir'], 'inputs', 'tiny')
    if not os.path.isdir(folder):
        os.makedirs(folder + '.tmp', exist_ok=True)
        for name in ('a.png', 'b.png'):
            shutil.copyfile(write_input(cfg, *TINY), os.path.join(folder + '.tmp', name))
        os.rename(folder + '.tmp', folder)
    return folder


def run(cfg, config, size, models):
    """One test_model.py process: wall and CPU seconds, peak RSS (GB), page faults, its note lines, where it wrote.
    size: packed (h, w); TINY: the folder of two tiny RAWs; 'one': one tiny RAW."""
    output_dir = os.path.join(cfg['work_dir'], 'out', config, '%dx%d' % size if size != 'one' else 'tiny-one')
    args = [sys.executable, os.path.join(REPO, 'test_model.py'), 'level=0', 'use_gpu=false', 'bits=16',
            'models_dir=' + models, 'input=' + (tiny_folder(cfg) if size == TINY else
                                  write_input(cfg, *(TINY if size == 'one' else size))),
            'output_dir=' + output_dir]
    with tempfile.TemporaryFile('w+') as err:
        start = time.time()
        process = subprocess.Popen(args + CONFIGS[config], stdout=subprocess.DEVNULL, stderr=err)
        # Reaped here with wait4, for the child's own peak RSS, CPU time and page faults (this process imports no
        # TensorFlow, so nothing of it inflates the child's figures).
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.time() - start > cfg['timeout']:
                process.kill()
                os.wait4(process.pid, 0)
                return {'error': 'stopped after %d s' % cfg['timeout']}
            time.sleep(0.2)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - start
        err.seek(0)
        lines = [l for l in err.read().splitlines() if l.strip()]
    if process.returncode:
        return {'error': (lines[-1] if lines else 'exit status %d' % process.returncode)[:300]}
    # Minor page faults: pages the kernel handed the process, zeroed, one by one (low_memory=true's cost).
    return {'wall': wall, 'cpu': usage.ru_utime + usage.ru_stime, 'peak_gb': usage.ru_maxrss * 1024 / 1e9,
            'faults': usage.ru_minflt, 'output_dir': output_dir, 'notes': [l for l in lines if l.startswith('note:')]}


def output_of(result):
    """The 16-bit photo a run wrote, as float in [0, 1]."""
    folder = result['output_dir']
    return image_io.read_rgb16_png(os.path.join(folder, sorted(os.listdir(folder))[0])) / 65535.0


def streams(config, size):
    """Whether test_model.py renders a photo of this packed size in bands under `config` (else in one piece)."""
    tile = next((int(k.split('=', 1)[1]) for k in CONFIGS[config] if k.startswith('tile=')), utils.DEFAULT_TILE)
    h, w = (-(-n // 16) * 16 for n in size)       # padded to a multiple of 16, as render.py does
    return tile > 0 and h * w > tile * tile


def tiny_key(config, size):
    """The tiny run subtracted from a photo's: a folder of two tiny RAWs (the streamed engine prepared, as for a
    photo in bands), or for a photo rendered in one piece a single tiny RAW (test_model.py then skips it)."""
    return '%s@tiny' % config if streams(config, size) else '%s@tiny-one' % config


def measure(cfg, results, configs, sizes, models):
    """Runs the tiny runs once per configuration, then every size. Why the tiny runs too, every time: a
    photo's time is its run's less its tiny run's, and a tiny run kept from an earlier run of this script
    was measured with other code, on a machine that may have run at another speed."""
    for config in configs:
        for key, input_size in [('%s@tiny' % config, TINY)] + \
                [('%s@tiny-one' % config, 'one')] * any(not streams(config, s) for s in sizes):
            print('%s, %s ...' % (config, 'tiny RAWs' if input_size == TINY else 'one tiny RAW'), end=' ', flush=True)
            results[key] = run(cfg, config, input_size, models)
            print(results[key].get('error') or '%.1f s' % results[key]['wall'], flush=True)
    for size in sizes:
        for config in configs:
            key = '%s@%dx%d' % ((config,) + size)
            print('%s, packed %dx%d ...' % ((config,) + size), end=' ', flush=True)
            r = results[key] = run(cfg, config, size, models)
            per_photo(results, config, size)
            print(r.get('error') or '%.1f s per photo, peak %.2f GB' % (r['per_photo'], r['peak_gb']), flush=True)
            save(cfg, results)


def per_photo(results, config, size):
    """A run's time, CPU time and page faults less its tiny run's (tiny_key)."""
    r, tiny = results['%s@%dx%d' % ((config,) + size)], results.get(tiny_key(config, size), {})
    if 'wall' in r and 'wall' in tiny:
        r['per_photo'] = r['wall'] - tiny['wall']
        r['cpu_per_photo'] = r['cpu'] - tiny['cpu']
        if 'faults' in r and 'faults' in tiny:
            r['faults_per_photo'] = r['faults'] - tiny['faults']


def compare(results, configs, size):
    """Speed-up and difference of every configuration against the baseline at `size`."""
    base = results.get('%s@%dx%d' % ((BASELINE,) + size), {})
    if 'per_photo' not in base:
        return
    import losses       # TensorFlow: only after every measurement, so that no child inherits its memory
    reference = output_of(base)
    for config in configs:
        r = results.get('%s@%dx%d' % ((config,) + size), {})
        if 'per_photo' not in r or config == BASELINE:
            continue
        out = output_of(r)
        r['speedup'] = base['per_photo'] / r['per_photo']
        r['max_abs_diff'] = float(np.abs(out - reference).max())
        r['psnr_db'] = float(losses.psnr(np.mean((out - reference) ** 2)))


def save(cfg, results):
    with utils.atomic_path(os.path.join(cfg['work_dir'], 'results.json')) as tmp:
        with open(tmp, 'w') as f:
            json.dump(results, f, indent=1)


def table(results, configs, sizes):
    lines = []
    for size in sizes:
        h, w = size
        lines += ['', '**Packed %dx%d** (output %dx%d, %.1f MP)' % (h, w, 2 * h, 2 * w, 4 * h * w / 1e6), '',
                  '| configuration | keys | per photo s | vs published | CPU s per photo | page faults per photo, '
                  'millions | peak RSS GB | PSNR vs published dB | max abs diff |',
                  '|---|---|---|---|---|---|---|---|---|']
        for config in configs:
            r = results.get('%s@%dx%d' % ((config,) + size))
            keys = ' '.join(CONFIGS[config]) or '(none)'
            if r is None:
                continue
            if 'error' in r:
                lines.append('| %s | `%s` | failed: %s |  |  |  |  |  |  |' % (config, keys, r['error']))
                continue
            fell_back = any(FELL_BACK in n for n in r.get('notes', []))
            lines.append('| %s%s | `%s` | %.1f | %s | %.1f | %s | %.2f | %s | %s |' % (
                config, ' (fell back to float32)' if fell_back else '', keys, r['per_photo'],
                '%.2fx' % r['speedup'] if 'speedup' in r else '(baseline)', r['cpu_per_photo'],
                '%.1f' % (r['faults_per_photo'] / 1e6) if 'faults_per_photo' in r else '', r['peak_gb'],
                ('%.1f' % r['psnr_db'] if r['max_abs_diff'] else 'identical') if 'psnr_db' in r else '',
                '%.2g' % r['max_abs_diff'] if 'max_abs_diff' in r else ''))
    return lines


def targets(results):
    """The rendering issue's targets at 12 MP, as measured here."""
    size = '1472x1984'
    get = lambda config: results.get('%s@%s' % (config, size), {})
    base, default = get(BASELINE), get('default')
    if 'per_photo' not in base or 'per_photo' not in default:
        return []
    ratio = default['per_photo'] / base['per_photo']
    lines = ['12 MP targets, as measured in this run:',
             '- the default (`test_model.py` without tile/precision keys: streamed, float32) takes %.2fx the '
             'published graph\'s time per photo (target: at most 1.10x): %s; its peak RSS is %.2f GB (target: at '
             'most 3 GB): %s. Streamed against one piece in float32 (target: at most 1.15x): %.2fx, %s; largest '
             'difference from the one-piece output %.2g (target: within 1/255 = 0.0039).' % (
                 ratio, 'met' if ratio <= 1.10 else 'NOT met', default['peak_gb'],
                 'met' if default['peak_gb'] <= 3 else 'NOT met', ratio, 'met' if ratio <= 1.15 else 'NOT met',
                 default.get('max_abs_diff', float('nan')))]
    low = get('low-memory')
    if 'per_photo' in low:
        ratio = low['per_photo'] / base['per_photo']
        lines.append('- `low_memory=true` (streamed, float32, memory returned to the system): %.2fx the published '
                     'graph\'s time per photo (target for the default: at most 1.10x): %s; peak RSS %.2f GB (target: '
                     'at most 3 GB): %s.' % (ratio, 'met' if ratio <= 1.10 else 'NOT met', low['peak_gb'],
                                              'met' if low['peak_gb'] <= 3 else 'NOT met'))
    one, streamed = get('one-bfloat16'), get('streamed-bfloat16')
    ran = [r for r in (one, streamed) if 'per_photo' in r]
    if any(FELL_BACK in n for r in ran for n in r['notes']):
        lines.append('- bfloat16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so `precision=bfloat16` '
                     'falls back to float32 here; the bfloat16 targets (4x on AMX, 1.8x on AVX512-BF16) cannot be '
                     'measured on it.')
    elif 'per_photo' in streamed:
        line = ('- bfloat16: streamed (`precision=bfloat16`, what the README recommends on such CPUs) %.2fx the '
                'published graph\'s speed per photo (target: at least 4x with AMX, 1.8x with AVX512-BF16 alone), '
                'peak RSS %.2f GB (target: at most 3 GB): %s; PSNR against float32 %.1f dB (target: at least 40)' % (
                    streamed['speedup'], streamed['peak_gb'], 'met' if streamed['peak_gb'] <= 3 else 'NOT met',
                    streamed['psnr_db']))
        if 'per_photo' in one:
            line += '; one piece %.2fx; streamed against one piece %.2fx' % (
                one['speedup'], streamed['per_photo'] / one['per_photo'])
        lines.append(line + '.')
    return lines


def write_benchmarks(cfg, results, configs, sizes, command, load):
    text = '\n'.join([
        '## Rendering',
        '',
        '`%s` on %s. %s. Run-to-run noise is about 6%%: compare the ratios, which come from one run.' % (
            command, report.machine(), 'Measured from %s to %s' % tuple(load) if cfg['run'] else
            'Written from the measurements already in `work_dir`'),
        '',
        'Each configuration is a whole `test_model.py level=0 bits=16 use_gpu=false` process rendering one RAW; '
        '"per photo" is its wall time minus that of the same command over a folder of two %dx%d-packed RAWs '
        '(import, restore, graph building and the streamed engine\'s warm-up are paid once per folder of photos; '
        'test_model.py prepares the streamed engine for a folder, or for a single photo that needs it), or, for a '
        'photo rendered in one piece (at most tile x tile packed pixels), over one such RAW. '
        '"CPU s" is the same difference in CPU time (user + system). Peak RSS is the whole process\'s '
        'high-water mark in 10^9 bytes. PSNR and max abs diff compare the 16-bit output PNG with the published '
        'configuration\'s. `default` is the streamed engine (render.py, tile=%d) in float32; `published` the '
        'published graph in one piece.' % (
            TINY[0], TINY[1], utils.DEFAULT_TILE),
        '',
        'Weights: the level-0 checkpoint of `%s` (`bench/export.py stage=weights`: briefly trained on the '
        'synthetic dataset). Input: its full-resolution test RAW (scikit-image\'s astronaut through '
        'make_synthetic_dataset.py), centre-cropped or mirrored out to each size.' % models_dir(cfg),
    ] + table(results, configs, sizes) + [''] + targets(results) + ['', cfg['note'], ''])
    report.write_section('Rendering', re.sub(r'\n{3,}', '\n\n', text))


def main(argv):
    cfg = utils.parse_args(argv, KEYS, USAGE)
    sizes = [report.parse_size(s) for s in cfg['sizes'].split(',')]
    configs = cfg['configs'].split(',')
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise UserError('configs: unknown %s; known: %s' % (', '.join(unknown), ', '.join(CONFIGS)))
    if BASELINE not in configs:
        configs.insert(0, BASELINE)
    os.makedirs(cfg['work_dir'], exist_ok=True)
    path = os.path.join(cfg['work_dir'], 'results.json')
    results = json.load(open(path)) if os.path.exists(path) else {}
    load = [report.load_note()]
    if cfg['run']:
        measure(cfg, results, configs, sizes, models_dir(cfg))
    for size in sizes:
        for config in configs:
            if '%s@%dx%d' % ((config,) + size) in results:
                per_photo(results, config, size)
        compare(results, configs, size)
    save(cfg, results)
    print('\n'.join(table(results, configs, sizes) + [''] + targets(results)))
    if cfg['write']:
        load.append(report.load_note())
        command = ' '.join(['python bench/render.py'] + [a for a in argv if not a.startswith('note=')])
        write_benchmarks(cfg, results, configs, sizes, command, load)


if __name__ == '__main__':
    utils.run_main(main)
