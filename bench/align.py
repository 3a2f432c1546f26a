"""Camera alignment benchmark: make_camera_dataset.py on synthetic 12 MP pairs with a known answer
(synthetic_pairs.py): residual misalignment of the kept windows, which windows are rejected and why,
time and peak memory per pair, for the keypoint detectors and window refinements.

    python bench/align.py                 # its section of BENCHMARKS.md (a few minutes)
    python bench/align.py run=false       # only rewrite the section from <work_dir>/results.json

Each configuration runs make_camera_dataset.build in a fresh process (its own peak RSS) on the same pairs.
"""
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402
from utils import Key  # noqa: E402
from bench import report  # noqa: E402

KEYS = {
    'work_dir': Key('/tmp/pynet-align-bench', str, 'pairs (made if missing) and the datasets built'),
    'pairs': Key(3, int, 'synthetic pairs (scenes)'),
    'mosaic_size': Key('3000x4000', str, 'HxW of the RAW mosaics (12 MP)'),
    'photo_scale': Key(1.2, float, 'photo pixels per mosaic pixel (the photos are ~17 MP)'),
    'patch_size': Key(448, int, 'window side, mosaic pixels'),
    'configs': Key('sift+phase,sift+ecc,orb+phase', str, 'detector+refine combinations measured (the first: '
                   'the one whose rejections are detailed)'),
    'timeout': Key(1800, int, 'seconds before one configuration is stopped and reported as failed'),
    'seed': Key(0, int, 'seed of the synthetic pairs'),
    'write': Key(True, bool, 'write the report into BENCHMARKS.md (## Camera alignment) as well as printing it'),
    'run': Key(True, bool, 'false: measure nothing, write the report from <work_dir>/results.json'),
    'mode': Key('report', str, 'report (parent), or measure (one configuration; internal)', choices=('report', 'measure')),
    'config': Key('sift+phase', str, 'the configuration of one measurement (internal)'),
}
USAGE = 'usage: python bench/align.py [key=value ...]'
TITLE = 'Camera alignment'
RESULTS_FILE = 'results.json'
KINDS = ('clean', 'partial', 'flat', 'moved', 'outside photo')


def make_pairs(config):
    """The synthetic pairs in work_dir/pairs (made once; pairs.json marks them complete)."""
    import synthetic_pairs
    folder = os.path.join(config['work_dir'], 'pairs')
    truth_path = os.path.join(folder, synthetic_pairs.TRUTH_FILE)
    wanted = dict(pairs=config['pairs'], mosaic_size=config['mosaic_size'], photo_scale=config['photo_scale'],
                  seed=config['seed'])
    if os.path.isfile(truth_path):
        with open(truth_path) as f:
            stored = json.load(f)
        if stored.get('bench') == wanted:
            return folder, stored['pairs']
    shape = report.parse_size(config['mosaic_size'], 'mosaic_size')
    started = time.time()
    records = synthetic_pairs.write_pairs(folder, config['pairs'], shape, config['photo_scale'], config['seed'])
    with utils.atomic_path(truth_path) as tmp:      # remember how they were made
        with open(tmp, 'w') as f:
            json.dump({'bench': wanted, 'pairs': records}, f)
    print('made %d pairs in %.0f s' % (len(records), time.time() - started))
    return folder, records


def peak_rss_mb():
    """This process's peak resident memory, MB: VmHWM, which starts afresh at exec (ru_maxrss does not: on
    Linux it keeps the parent's peak at fork, here the making of the pairs)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(config):
    """One configuration: build the dataset, score every window against the truth; a JSON line."""
    import make_camera_dataset as mcd
    import synthetic_pairs
    folder, truth = make_pairs(config)
    detector, refine = config['config'].split('+')
    out = os.path.join(config['work_dir'], 'dataset_' + config['config'].replace('+', '_'))
    keys = utils.parse_args(['raw_dir=%s/raw' % folder, 'photo_dir=%s/photos' % folder, 'output_dir=%s' % out,
                             'patch_size=%d' % config['patch_size'], 'detector=' + detector, 'refine=' + refine,
                             'overwrite=true'], mcd.KEYS)
    started = time.time()
    info = mcd.build(keys, say=lambda *a, **k: None)
    seconds = time.time() - started
    size = config['patch_size']
    residuals, global_residuals, kinds, rejected_by_kind = [], [], {}, {}
    for pair in info['pairs']:
        name = mcd.stem(pair['raw'])
        true_map = np.array(truth[name]['mosaic_to_photo'])
        for window in info['windows'][name]:
            kind = synthetic_pairs.window_truth(truth[name], window['top'], window['left'], size, pair['photo_size'])
            kinds[kind] = kinds.get(kind, 0) + 1
            if window['rejected']:
                key = '%s|%s' % (kind, window['rejected'])
                rejected_by_kind[key] = rejected_by_kind.get(key, 0) + 1
        for patch in info['train'] + info['test']:
            if patch['pair'] == name:
                residuals.append(synthetic_pairs.residual(np.array(patch['patch_to_photo']), true_map,
                                                          patch['top'], patch['left'], size))
                global_residuals.append(synthetic_pairs.residual(
                    np.array(pair['homography']) @ mcd.translation(patch['left'], patch['top']), true_map,
                    patch['top'], patch['left'], size))
    return {'config': config['config'], 'seconds': seconds, 'pairs': len(info['pairs']), 'failed': len(info['failed']),
            'align_seconds': [p['align_seconds'] for p in info['pairs']],
            'global_seconds': [p['global_seconds'] for p in info['pairs']],
            'pair_seconds': [p['seconds'] for p in info['pairs']],
            'windows': sum(p['windows'] for p in info['pairs']), 'kept': len(residuals),
            'inliers': [p['inliers'] for p in info['pairs']], 'matches': [p['matches'] for p in info['pairs']],
            'residuals': residuals, 'global_residuals': global_residuals, 'kinds': kinds,
            'rejected_by_kind': rejected_by_kind,
            'peak_rss_mb': peak_rss_mb()}


def rejected(result, kind, reason=None):
    """Windows truly of `kind` that were rejected (for `reason`, or any)."""
    return sum(n for key, n in result['rejected_by_kind'].items()
               if key.split('|')[0] == kind and reason in (None, key.split('|')[1]))


def describe(result):
    """One table row of a measured configuration."""
    if 'error' in result:
        return '| %s | failed: %s |||||||||' % (result['config'], result['error'])
    r, g = np.array(result['residuals']), np.array(result['global_residuals'])
    cells = ['%d/%d' % (rejected(result, kind), result['kinds'].get(kind, 0)) for kind in KINDS]
    return ('| %s | %d of %d | %.3f / %.3f / %.3f | %.3f | %s | %.1f | %.1f | %.1f | %.0f MB |'
            % (result['config'], result['kept'], result['windows'], np.median(r), np.percentile(r, 90), r.max(),
               np.median(g), ' | '.join(cells), np.mean(result['pair_seconds']), np.mean(result['align_seconds']),
               np.mean(result['global_seconds']), result['peak_rss_mb']))


def reasons(result, kind):
    """'n texture, m correlation' for the rejected windows of one kind."""
    found = sorted((n, key.split('|')[1]) for key, n in result['rejected_by_kind'].items() if key.split('|')[0] == kind)
    return ', '.join('%d %s' % (n, why) for n, why in reversed(found)) or 'none'


def findings(config, results):
    """The 'What the figures show' bullets, from the numbers."""
    ok = [r for r in results if 'error' not in r]
    if not ok:
        return []
    height, width = report.parse_size(config['mosaic_size'], 'mosaic_size')
    median = lambda r, key: float(np.median(r[key]))
    lines = ['', 'What the figures show:',
             '- **Accuracy.** Median residual of the kept windows (target: at most 0.5 px): %s; after the global '
             'homography alone: %s. %s' % (
                 ', '.join('%s %.3f px' % (r['config'], median(r, 'residuals')) for r in ok),
                 ', '.join('%.3f px' % median(r, 'global_residuals') for r in ok),
                 'Every configuration meets the target.' if all(median(r, 'residuals') <= 0.5 for r in ok) else
                 'Not every configuration meets the target.')]
    default = ok[0]
    lines.append('- **Rejections** (%s, why): flat windows %s; moved %s; outside the photo %s; clean windows '
                 'lost: %d of %d (%s); partial windows lost: %d of %d.' % (
                     default['config'], reasons(default, 'flat'), reasons(default, 'moved'),
                     reasons(default, 'outside photo'), rejected(default, 'clean'), default['kinds'].get('clean', 0),
                     reasons(default, 'clean'), rejected(default, 'partial'), default['kinds'].get('partial', 0)))
    missed = [(r['config'], kind) for r in ok for kind in ('flat', 'moved', 'outside photo')
              if rejected(r, kind) < r['kinds'].get(kind, 0)]
    lines.append('- Every flat, moved and outside window is rejected in every configuration.' if not missed else
                 '- Not rejected by every configuration: %s.' % ', '.join('%s in %s' % (k, c) for c, k in missed))
    lines.append('- **Time** per %.0f MP pair, mean over the pairs: %s (the global alignment alone: %s), on this '
                 'shared 2-core machine.' % (height * width / 1e6,
                                             ', '.join('%s %.1f s' % (r['config'], np.mean(r['pair_seconds'])) for r in ok),
                                             ', '.join('%.1f s' % np.mean(r['global_seconds']) for r in ok)))
    lines.append('- Limits: the synthetic pairs have no parallax, lens distortion, motion blur or exposure difference '
                 'between the two cameras; real pairs will align less well and lose more windows.')
    return lines


def write_report(config, results, loads):
    """Prints the section and writes it into BENCHMARKS.md; loads: [(note, 1-minute load)] before and after."""
    import cv2
    import make_camera_dataset as mcd
    height, width = report.parse_size(config['mosaic_size'], 'mosaic_size')
    lines = [
        '## %s' % TITLE, '',
        '`bench/align.py` runs `make_camera_dataset.py` on synthetic pairs with a known answer '
        '(`synthetic_pairs.py`): %d scenes, each a collage of the bundled scikit-image photographs enlarged ~2x. '
        'The RAW side is a %dx%d mosaic (%.0f MP) unprocessed as `make_synthetic_dataset.py` does, written as a '
        '12-bit GRBG DNG; the "DSLR" side is the same scene at %.1f photo pixels per mosaic pixel under a random '
        'homography (corners moved by up to 2.5%%, rotated up to 4 degrees), with another gamma, colour gains and '
        'saturation, as a quality-90 JPEG. Its field of view misses the RAW\'s left 12%% and extends beyond the other '
        'edges; a rectangle of the RAW\'s view shows another photograph in the photo (something that moved); the '
        'scene holds a flat sky-like rectangle. Windows: %dx%d, default keys otherwise (min_correlation %.1f, '
        'min_texture %.1f, search_radius %g).'
        % (config['pairs'], height, width, height * width / 1e6, config['photo_scale'], config['patch_size'],
           config['patch_size'], mcd.KEYS['min_correlation'].default, mcd.KEYS['min_texture'].default,
           mcd.KEYS['search_radius'].default), '',
        'Residual: for each kept window, the mean distance (mosaic pixels, over a 9x9 grid of its pixels) between '
        'where its photo crop was taken from and where the true homography puts it. "Global only": the same with '
        'the global homography alone, before the window refinement. Rejected windows are counted against what '
        'they truly are: clean (neither sky nor moved region in it), partial (some of either), flat (wholly sky), '
        'moved (half or more moved), outside photo (not wholly in the photo\'s view). Seconds per pair: the whole '
        'pair (reading the DNG and JPEG, aligning, writing the patches), the alignment, and its global part '
        '(keypoints, matching, homography).', '',
        'Command: `python bench/align.py` (configs %s).' % config['configs'], '',
        'Machine: %s. %s to %s.%s' % (
            report.machine('OpenCV %s' % cv2.__version__), loads[0][0], loads[-1][0],
            ' The machine was busy (load above its %d cores): the times are longer than on an idle machine, '
            'the residuals and rejections are not affected.' % os.cpu_count()
            if max(load for _, load in loads) > os.cpu_count() else ''), '',
        '| detector+refine | kept windows | residual median / p90 / max (px) | global only, median | '
        'rejected: clean | partial | flat | moved | outside photo | s per pair | align | global | peak RSS |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    lines += [describe(r) for r in results]
    lines += findings(config, results)
    text = '\n'.join(lines) + '\n'
    print(text)
    if config['write']:
        report.write_section(TITLE, text)
        print('wrote the "%s" section of %s' % (TITLE, report.BENCHMARKS))


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    if config['mode'] == 'measure':
        print(json.dumps(measure(config)))
        return
    saved = os.path.join(config['work_dir'], RESULTS_FILE)
    if not config['run']:
        if not os.path.isfile(saved):
            raise utils.UserError('%s not found: run python bench/align.py first (run=true)' % saved)
        with open(saved) as f:
            run = json.load(f)
        write_report(run['config'], run['results'], run['loads'])
        return
    make_pairs(config)
    loads = [(report.load_note(), os.getloadavg()[0])]
    results = []
    for name in [c.strip() for c in config['configs'].split(',') if c.strip()]:
        args = [sys.executable, os.path.abspath(__file__), 'mode=measure', 'config=' + name] + \
            ['%s=%s' % (k, config[k]) for k in ('work_dir', 'pairs', 'mosaic_size', 'photo_scale', 'patch_size', 'seed')]
        result = report.run_worker(args, timeout=config['timeout'])
        result.setdefault('config', name)
        print(describe(result), flush=True)
        results.append(result)
    loads.append((report.load_note(), os.getloadavg()[0]))
    with utils.atomic_path(saved) as tmp:
        with open(tmp, 'w') as f:
            json.dump({'config': config, 'results': results, 'loads': loads}, f)
    write_report(config, results, loads)


if __name__ == '__main__':
    utils.run_main(main)
