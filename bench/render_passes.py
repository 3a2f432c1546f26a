"""Profiles the streamed renderer pass by pass, against the same layers in one piece, in one process.

    python bench/render_passes.py                                   # 12 MP, bfloat16, into BENCHMARKS.md
    python bench/render_passes.py size=736x992 precision=float32 write=false

Renders one random packed image of `size` with render.Renderer in bands (the default tile unless tile=), and
records for every pass its seconds, bands and peak resident memory (the process's high-water mark, reset
before each pass through /proc/self/clear_refs, Linux). Then, in the same process and precision, it times
PyNET's layers in one piece (model.build on the whole image) up to the end of each stage: the encoder and
levels 5-3 (up to level3/e), level 2 (up to level2/h) and the whole level. Each stage of passes is set against
the difference of those one-piece times: where bands lose time, and how much. bench/render.py measures
whole processes against the published graph; this says which passes to work on. With convolutions=true, each
stage is also set against its convolutions run one at a time (bench/ceiling.py's measure of the hardware).
Weights: as bench/render.py (bench/export.py's briefly trained checkpoint, or models_dir=); timings do not depend
on the picture.

TensorFlow, and the project's modules that import it, are imported inside the functions, after
utils.import_tensorflow() (as in bench/render.py): `help` and bad keys answer without TensorFlow's start-up.
"""
import collections
import contextlib
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import utils  # noqa: E402
from utils import Key  # noqa: E402
from bench import report  # noqa: E402
from bench.render import WEIGHTS_KEYS, models_dir  # noqa: E402

KEYS = {
    'size': Key('1472x1984', str, 'packed input size HxW (1472x1984: a 12 MP photo)'),
    'precision': Key('bfloat16', str, 'float32 or bfloat16 (falls back to float32 where the CPU has no bfloat16)',
                     choices=('float32', 'bfloat16')),
    'tile': Key(utils.DEFAULT_TILE, int, 'the renderer\'s tile (bands of about tile x tile packed pixels)'),
    'one_piece': Key(True, bool, 'false: passes only, no one-piece comparison (saves minutes at 12 MP)'),
    'convolutions': Key(True, bool, 'also each stage\'s convolutions one at a time, as bench/ceiling.py times them '
                                    '(minutes at 12 MP)'),
    **WEIGHTS_KEYS,
    'write': Key(True, bool, 'write the results into BENCHMARKS.md (## Rendering, pass by pass)'),
}
USAGE = 'python bench/render_passes.py [key=value ...]   the streamed renderer pass by pass'
SECTION = 'Rendering, pass by pass'
# Stages: the last layer of each (one-piece target) and which passes belong to it, by the start of their name.
STAGES = (('encoder and levels 5-3', 'level3/e', ('e2 ', 'e3 ', 'S/8', 'level3/')),
          ('level 2', 'level2/h', ('level2/',)),
          ('levels 1 and 0', None, ('output',)))


@contextlib.contextmanager
def peak_rss(record):
    """Sets record['peak_gb'] to the process's peak resident memory during the block (Linux; else nothing)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')                # resets VmHWM to the current resident size
    except OSError:
        yield
        return
    yield
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            record['peak_gb'] = int(line.split()[1]) * 1024 / 1e9


def profile_passes(renderer, packed):
    """{pass name: {'seconds', 'bands', 'peak_gb'}} of one streamed render, in pass order."""
    passes = collections.OrderedDict()

    @contextlib.contextmanager
    def hook(name):
        record = passes.setdefault(name, {'bands': 0})
        start = time.time()
        with peak_rss(record):
            yield
        record['seconds'] = time.time() - start

    def band(done, total):
        passes[next(reversed(passes))]['bands'] += 1      # the pass running now: the last one hooked

    renderer.render(packed, progress=band, pass_hook=hook)
    return passes


def one_piece_seconds(renderer, packed, target):
    """Seconds of PyNET's layers up to `target` on the whole image (second run), in the renderer's precision."""
    import tensorflow.compat.v1 as tf
    import model
    graph = tf.Graph()
    with graph.as_default():
        raw = tf.placeholder(tf.float32, [1, None, None, model.INPUT_CHANNELS])
        out = tf.reduce_sum(model.build(renderer.weights, {model.INPUT: raw}, [target], renderer.norms)[target])
    with tf.Session(graph=graph, config=renderer.config) as sess:
        feed = renderer.weights.feed(graph)
        feed[raw] = packed[None]
        sess.run(out, feed)     # builds the executor and oneDNN's kernels for this size
        start = time.time()
        sess.run(out, feed)
        return time.time() - start


def stage_convolutions():
    """{stage name: the model.Convolutions of level 0 that the stage adds to the stages before it}."""
    import model
    stages, before = {}, set()
    for name, target, _ in STAGES:
        convs = [c for c in model.convolutions([target or model.OUTPUTS[0]]) if c.key not in before]
        stages[name] = convs
        before.update(c.key for c in convs)
    return stages


def convolution_seconds(height, width, precision):
    """{stage name: seconds of its convolutions, each alone} at a packed height x width image, as
    bench/ceiling.py times them by default (the fastest of its `repeats` runs after a warm-up, operands in
    `precision`)."""
    from bench import ceiling
    seconds = ceiling.time_convolutions(height, width, precision, ceiling.KEYS['repeats'].default)
    return {name: sum(seconds[ceiling.shape_of(c)] for c in convs) for name, convs in stage_convolutions().items()}


def stages(passes, one_piece, alone=None):
    """Rows (stage, seconds in passes, seconds in one piece, seconds of its convolutions alone) from the per-pass
    records, the one-piece times up to each stage's end (cumulative) and convolution_seconds()."""
    rows, before = [], 0.0
    for name, target, prefixes in STAGES:
        in_passes = sum(r['seconds'] for n, r in passes.items() if n.startswith(prefixes))
        upto = one_piece.get(target or 'all')
        rows.append((name, in_passes, None if upto is None else upto - before, (alone or {}).get(name)))
        before = upto or 0.0
    return rows


def report_text(cfg, passes, stage_rows, render_seconds, header, load):
    lines = ['## %s' % SECTION, '',
             '`%s` on %s. Measured from %s to %s.' % (cfg['command'], header, load[0], load[1]), '',
             'One render of a random packed %s image in bands (`tile=%d`, `precision=%s`) in one process, after the '
             'Renderer prepared its passes; each pass\'s peak is the process\'s resident high-water mark during that '
             'pass (reset before it). Whole render: %.1f s.' % (cfg['size'], cfg['tile'], cfg['precision'],
                                                               render_seconds), '',
             '| pass | bands | s | peak RSS GB |', '|---|---|---|---|']
    for name, r in passes.items():
        peak = '%.2f' % r['peak_gb'] if 'peak_gb' in r else 'n/a'
        lines.append('| %s | %d | %.2f | %s |' % (name, r['bands'], r['seconds'], peak))
    if any(one is not None or alone is not None for _, _, one, alone in stage_rows):
        lines += ['', 'Stages against the same layers in one piece (model.build on the whole image, same process and '
                  'precision, second run; one-piece times are differences of cumulative runs) and against their '
                  'convolutions run one at a time (as bench/ceiling.py runs them: the time with nothing between '
                  'them):', '',
                  '| stage | passes s | one piece s | convolutions alone s | passes / one piece | '
                  'passes / convolutions alone |', '|---|---|---|---|---|---|']
        cell = lambda value: '' if value is None else '%.1f' % value
        ratio = lambda a, b: '' if not b else '%.2fx' % (a / b)
        for name, in_passes, one, alone in stage_rows:
            lines.append('| %s | %.1f | %s | %s | %s | %s |' % (name, in_passes, cell(one), cell(alone),
                                                                ratio(in_passes, one), ratio(in_passes, alone)))
    return '\n'.join(lines) + '\n'


def main(argv):
    cfg = utils.parse_args(argv, KEYS, USAGE)
    height, width = report.parse_size(cfg['size'], 'size')
    cfg['command'] = ' '.join(['python bench/render_passes.py'] + list(argv))
    models = models_dir(cfg)
    utils.import_tensorflow()
    import checkpoints
    import render
    load = [report.load_note()]
    checkpoint, _ = checkpoints.find_checkpoint(models, 0)
    renderer = render.Renderer(checkpoint, level=0, use_gpu=False, precision=cfg['precision'], tile=cfg['tile'],
                               largest=(height, width))
    if not renderer.streams(height, width):
        raise utils.UserError('size=%s fits in one tile of %d: nothing to stream; use a larger size or a smaller '
                              'tile' % (cfg['size'], cfg['tile']))
    cfg['precision'] = renderer.precision       # after any fallback to float32
    packed = np.random.default_rng(0).uniform(0, 0.5, (height, width, 4)).astype(np.float32)
    start = time.time()
    passes = profile_passes(renderer, packed)
    render_seconds = time.time() - start
    one_piece = {}
    if cfg['one_piece']:
        import model
        for _, target, _ in STAGES:
            one_piece[target or 'all'] = one_piece_seconds(renderer, packed, target or model.OUTPUTS[0])
            print('one piece up to %s: %.1f s' % (target or 'the output', one_piece[target or 'all']), flush=True)
    renderer.close()
    alone = convolution_seconds(height, width, cfg['precision']) if cfg['convolutions'] else None
    load.append(report.load_note())
    text = report_text(cfg, passes, stages(passes, one_piece, alone), render_seconds, report.machine(), load)
    print(text)
    if cfg['write']:
        report.write_section(SECTION, text)


if __name__ == '__main__':
    utils.run_main(main)
