"""Input pipeline benchmark: the streaming tf.data pipeline of train_model.py against the
published load-everything approach, on the same 448x448 data, for several train_size values.

    python bench/make_bench_data.py unique=400 total=30000      # once: data in /tmp/pynet-bench-data
    python bench/input_pipeline.py                              # prints a Markdown report

Each measurement runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.
- stream: load_dataset.train_dataset in a compat.v1 Session, as train_model.py runs it;
  patches/s = augmented patches delivered per second after a warm-up of 2 batches.
- published: our numpy re-implementation of the published loader: train_size random patches
  read, packed and resized into float64 arrays, then batches drawn from them and augmented.
  patches/s = patches loaded per second; the whole load is a stall repeated every 1000
  iterations. Its memory grows by ~6.4 MB per patch at level 0 (190 GB at train_size=30000).
"""
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402
from utils import Key  # noqa: E402

KEYS = {
    'data_dir': Key('/tmp/pynet-bench-data', str, 'dataset made by bench/make_bench_data.py'),
    'level': Key(0, int, 'training level (target size 448 >> level)', choices=utils.LEVELS),
    'batch_size': Key(50, int, 'patches per batch (published default 50)'),
    'train_sizes': Key('100,200,400,30000', str, 'comma-separated train_size values'),
    'published_max': Key(400, int, 'largest train_size run with the load-everything approach'),
    'batches': Key(30, int, 'batches timed per streaming measurement'),
    'extra_levels': Key('1,5', str, 'levels also streamed once at the largest train_size (empty: none)'),
    'mode': Key('report', str, 'report (parent), or stream/published (one measurement; internal)',
                choices=('report', 'stream', 'published')),
    'train_size': Key(100, int, 'train_size of one measurement (internal)'),
    'seed': Key(0, int, 'random seed'),
}
USAGE = 'usage: python bench/input_pipeline.py [key=value ...]'


def rss_mb():
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_stream(config):
    import load_dataset
    import tensorflow.compat.v1 as tf
    pairs = load_dataset.list_pairs(config['data_dir'], 'train')
    side = load_dataset.patch_side(pairs)
    batch, batches = config['batch_size'], config['batches']
    with tf.Graph().as_default():
        dataset = load_dataset.train_dataset(pairs, side, config['level'], batch, config['train_size'],
                                             num_iterations=batches + 2, seed=config['seed'])
        iterator = tf.data.make_initializable_iterator(dataset)
        planes, targets = iterator.get_next()
        with tf.Session() as sess:
            sess.run(iterator.initializer)
            base = current_rss_mb()
            for _ in range(2):                 # warm-up: thread pools, first decodes
                sess.run([planes.op, targets.op])
            start, cpu = time.time(), cpu_seconds()
            for _ in range(batches):
                sess.run([planes.op, targets.op])
            seconds, cpu = time.time() - start, cpu_seconds() - cpu
    n = batches * batch
    return {'patches_per_s': n / seconds, 'cpu_ms_per_patch': 1000 * cpu / n, 'peak_rss_mb': rss_mb(),
            'base_rss_mb': base, 'patches': n}


def measure_published(config):
    """Our numpy float64 re-implementation of the published load-everything approach."""
    import load_dataset
    import image_io
    rng = np.random.default_rng(config['seed'])
    pairs = load_dataset.list_pairs(config['data_dir'], 'train')
    side, level, size = load_dataset.patch_side(pairs), config['level'], config['train_size']
    t = load_dataset.target_side(side, level)
    base = current_rss_mb()
    start, cpu = time.time(), cpu_seconds()
    chosen = rng.choice(len(pairs), size, replace=False)
    inputs = np.zeros((size, side // 2, side // 2, 4))         # float64, as published
    targets = np.zeros((size, t, t, 3))
    for k, i in enumerate(chosen):
        planes, target = load_dataset.read_patch(*pairs[i], side, level)
        inputs[k] = planes.astype(np.float32) / image_io.RAW_SCALE
        targets[k] = target / 255.0
    load_seconds, load_cpu = time.time() - start, cpu_seconds() - cpu
    # then each iteration: a random batch from the arrays, augmented in numpy
    start = time.time()
    batch, batches = config['batch_size'], 10
    for _ in range(batches):
        idx = rng.integers(0, size, batch)
        out_x, out_y = [], []
        for i in idx:
            k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
            x, y = np.rot90(inputs[i], k), np.rot90(targets[i], k)
            out_x.append(x[::-1] if flip else x)
            out_y.append(y[::-1] if flip else y)
        np.stack(out_x), np.stack(out_y)
    batch_seconds = (time.time() - start) / batches
    return {'patches_per_s': size / load_seconds, 'cpu_ms_per_patch': 1000 * load_cpu / size,
            'load_seconds': load_seconds, 'batch_seconds': batch_seconds, 'peak_rss_mb': rss_mb(),
            'base_rss_mb': base, 'bytes_per_patch': (inputs[0].nbytes + targets[0].nbytes)}


def child(mode, config, **overrides):
    args = ['%s=%s' % (k, v) for k, v in dict(config, mode=mode, **overrides).items()]
    result = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True, text=True)
    if result.returncode:
        raise utils.UserError('%s measurement failed: %s' % (mode, (result.stderr.strip().splitlines() or ['?'])[-1]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine():
    model = 'unknown CPU'
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        model = next(l.split(':', 1)[1].strip() for l in out.splitlines() if l.startswith('Model name'))
    except (OSError, StopIteration):
        pass
    import PIL
    versions = 'Python %s, numpy %s, Pillow %s' % (platform.python_version(), np.__version__, PIL.__version__)
    try:
        import importlib.metadata as md
        versions = 'TensorFlow %s, ' % md.version('tensorflow') + versions
    except Exception:
        pass
    return '%s, %d cores; %s' % (model, os.cpu_count(), versions)


def report(config):
    sizes = [int(s) for s in config['train_sizes'].split(',') if s]
    level, batch = config['level'], config['batch_size']
    n = len(os.listdir(os.path.join(config['data_dir'], 'train', 'huawei_raw')))
    if max(sizes) > n:
        raise utils.UserError('train_size %d > %d patches in %s: make more with bench/make_bench_data.py total=%d'
                              % (max(sizes), n, config['data_dir'], max(sizes)))
    load_before = os.getloadavg()[0]
    rows = []
    for size in utils.progress(sizes, desc='train sizes'):
        stream = child('stream', config, train_size=size)
        published = child('published', config, train_size=size) if size <= config['published_max'] else None
        rows.append((size, stream, published))
    extra = []
    for extra_level in [int(l) for l in config['extra_levels'].split(',') if l]:
        extra.append((extra_level, child('stream', config, train_size=max(sizes), level=extra_level)))
    load_after = os.getloadavg()[0]

    lines = ['Command: `python bench/input_pipeline.py %s`' % ' '.join(sys.argv[1:]),
             '', 'Machine: %s. Load average (1 min) %.1f before, %.1f after.' % (machine(), load_before, load_after),
             '', 'Level %d (targets %d px), batch %d, 448x448 patches:' % (level, 448 >> level, batch), '',
             '| train_size | stream patches/s | stream CPU ms/patch | stream peak RSS | published load patches/s '
             '| published peak RSS | published stall per re-draw |',
             '|---|---|---|---|---|---|---|']
    per_patch = None
    for size, s, p in rows:
        if p:
            per_patch = p['bytes_per_patch']
            published = ('%.0f' % p['patches_per_s'], '%.0f MB' % p['peak_rss_mb'], '%.1f s' % p['load_seconds'])
        else:
            est = (per_patch or 0) * size / 2 ** 30
            published = ('not run', '~%.0f GB (arrays alone)' % est if per_patch else 'not run', '~%.0f s' % (
                size / rows[0][2]['patches_per_s']) if rows[0][2] else '')
        lines.append('| %d | %.0f | %.1f | %.0f MB | %s | %s | %s |' % (
            size, s['patches_per_s'], s['cpu_ms_per_patch'], s['peak_rss_mb'], *published))
    lines.append('')
    for extra_level, s in extra:
        lines.append('Stream at level %d (targets %d px), train_size %d: %.0f patches/s, %.1f CPU ms/patch, '
                     'peak RSS %.0f MB.' % (extra_level, 448 >> extra_level, max(sizes), s['patches_per_s'],
                                             s['cpu_ms_per_patch'], s['peak_rss_mb']))
    print('\n'.join(lines))


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    if config['mode'] == 'report':
        report(config)
    else:
        measure = measure_stream if config['mode'] == 'stream' else measure_published
        print(json.dumps(measure(config)))


if __name__ == '__main__':
    utils.run_main(main)
