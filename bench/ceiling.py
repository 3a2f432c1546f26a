"""How fast this CPU does PyNET's arithmetic, and how close rendering comes to it, in one process.

    python bench/ceiling.py                                 # packed 736x992, float32 and bfloat16, into BENCHMARKS.md
    python bench/ceiling.py size=368x496 precisions=float32 write=false

PyNET's level 0 is convolutions: 3,345 GFLOP per output megapixel (model.convolutions lists them; their count is
2 x kernel area x channels in x channels out per pixel read). This times every distinct convolution of level 0
alone, on its own random input of its size at `size`, in float32 and in bfloat16 (operands stored in bfloat16,
the CPU's native bfloat16 instructions), the fastest of `repeats` runs after one that builds oneDNN's kernels:
their sum is the time level 0 would take if every convolution ran as fast as it runs alone, with nothing between
them. Then, in the same process, it renders a random packed image of `size` as users do (render.Renderer, second
call: the published graph in one piece, tile=0, and in bands of `tile`), and reports each render's
rate in GFLOP/s and its time against that sum. Rendering in bfloat16 in one piece casts between float32 and
bfloat16 around the convolutions (oneDNN's rewrite); in bands it computes in bfloat16 with its moments and output
in float32; the sum has neither. Weights: as bench/render.py (bench/export.py's briefly
trained checkpoint, or models_dir=); timings do not depend on the picture.

TensorFlow, and the project's modules that import it, are imported inside the functions, after
utils.import_tensorflow() (as in bench/render.py): `help` and bad keys answer without TensorFlow's start-up.
"""
import collections
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
    'size': Key('736x992', str, 'packed input size HxW of the convolutions and the renders'),
    'precisions': Key('float32,bfloat16', str, 'comma-separated, of float32 and bfloat16 (bfloat16 only where '
                                               'the CPU has it natively)'),
    'repeats': Key(2, int, 'timed runs of each convolution after its first; the fastest counts'),
    'tile': Key(utils.DEFAULT_TILE, int, 'the tile of the render in bands (0: no render in bands)'),
    'renders': Key(True, bool, 'false: the convolutions only, no renders'),
    **WEIGHTS_KEYS,
    'write': Key(True, bool, 'write the results into BENCHMARKS.md (## The hardware\'s rate)'),
}
USAGE = 'python bench/ceiling.py [key=value ...]   PyNET\'s convolutions alone against rendering'
SECTION = 'The hardware\'s rate'
# Where a convolution's map lies, by the scale of the map it reads (model.scales: 0 = S, 1 = S/2, ...).
SCALE_NAMES = {0: 'S (e1, level 1; level 0\'s upsampling)', 1: 'S/2 (e2, level 2)', 2: 'S/4 (e3, level 3)',
               -1: '2S (level 0\'s output)'}
LOW = 'S/8 and below (e4, levels 5 and 4)'


def flops(conv, height, width):
    """Floating-point operations of one model.Convolution on a packed height x width input."""
    pixels = (height / 2 ** conv.scale) * (width / 2 ** conv.scale)
    return 2 * conv.size ** 2 * conv.in_channels * conv.filters * pixels


def network_flops(height, width, level=0):
    """Floating-point operations of PyNET's convolutions up to `level`'s output, packed height x width input."""
    import model
    return sum(flops(c, height, width) for c in model.convolutions([model.OUTPUTS[level]]))


def shape_of(conv):
    """What a convolution's speed depends on: (scale, kernel size, channels in, channels out, transposed)."""
    return conv.scale, conv.size, conv.in_channels, conv.filters, conv.transposed


def describe(shape):
    """'7x7, 192 -> 64 channels at S/2' for a shape_of() tuple."""
    scale, size, cin, cout, transposed = shape
    where = {-1: '2S', 0: 'S'}.get(scale, 'S/%d' % 2 ** scale)
    return '%dx%d%s, %d -> %d channels at %s' % (size, size, ' transposed' if transposed else '', cin, cout, where)


def time_convolution(shape, height, width, precision, repeats):
    """Fastest seconds of one convolution of `shape` alone on a random input at its scale of a packed
    height x width image, its operands in `precision`."""
    import tensorflow.compat.v1 as tf
    import devices
    scale, size, cin, cout, transposed = shape
    h, w = max(1, int(height / 2 ** scale)), max(1, int(width / 2 ** scale))
    dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32
    graph = tf.Graph()
    with graph.as_default():
        # Drawn inside the graph: numpy arrays would be embedded in it as constants, hundreds of MB at S.
        x = tf.Variable(tf.cast(tf.random.uniform((1, h, w, cin), seed=1), dtype))
        kernel_shape = (size, size, cout, cin) if transposed else (size, size, cin, cout)
        kernel = tf.Variable(tf.cast(tf.random.normal(kernel_shape, stddev=0.01, seed=2), dtype))
        if transposed:
            y = tf.nn.conv2d_transpose(x, kernel, [1, 2 * h, 2 * w, cout], [1, 2, 2, 1], 'SAME')
        else:
            y = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME')
        init = tf.global_variables_initializer()
    with tf.Session(graph=graph, config=devices.session_config(use_gpu=False)) as sess:
        sess.run(init)
        sess.run(y.op)              # oneDNN builds its kernel for this shape
        best = float('inf')
        for _ in range(repeats):
            start = time.perf_counter()
            sess.run(y.op)          # the output is made, not fetched
            best = min(best, time.perf_counter() - start)
    return best


def time_convolutions(height, width, precision, repeats):
    """{shape_of(conv): seconds} for every distinct convolution of level 0."""
    import model
    shapes = sorted({shape_of(c) for c in model.convolutions([model.OUTPUTS[0]])})
    return {shape: time_convolution(shape, height, width, precision, repeats)
            for shape in utils.progress(shapes, desc='convolutions (%s)' % precision, unit='shape')}


def by_scale(seconds, height, width):
    """Rows (where, GFLOP, seconds) of level 0's convolutions grouped by the scale they read, from the seconds of
    each distinct shape; every convolution of a shape counts its time."""
    import model
    rows = collections.OrderedDict()
    for conv in model.convolutions([model.OUTPUTS[0]]):
        where = SCALE_NAMES.get(conv.scale, LOW)
        gflop, s = rows.get(where, (0.0, 0.0))
        rows[where] = (gflop + flops(conv, height, width) / 1e9, s + seconds[shape_of(conv)])
    order = [SCALE_NAMES[-1], SCALE_NAMES[0], SCALE_NAMES[1], SCALE_NAMES[2], LOW]
    return [(where,) + rows[where] for where in order if where in rows]


def time_render(checkpoint, packed, precision, tile):
    """Seconds of render.Renderer's second render of `packed` (the first builds the graph and kernels)."""
    import render
    with render.Renderer(checkpoint, level=0, use_gpu=False, precision=precision, tile=tile,
                         largest=packed.shape[:2]) as renderer:
        renderer.render(packed, progress=False)
        start = time.perf_counter()
        renderer.render(packed, progress=False)
        return time.perf_counter() - start


def report_text(cfg, results, header, load):
    """The BENCHMARKS.md section: per precision, the convolutions' sum and each render against it."""
    height, width = report.parse_size(cfg['size'], 'size')
    total = network_flops(height, width) / 1e9
    precisions = list(results)
    lines = ['## %s' % SECTION, '',
             '`%s` on %s. Measured from %s to %s.' % (cfg['command'], header, load[0], load[1]), '',
             'Level 0 at packed %s: %.0f GFLOP of convolutions. "Convolutions alone" is the sum, over every '
             'convolution of level 0, of the fastest of %d runs of that convolution by itself (operands in the '
             'precision; bfloat16 on the CPU\'s native instructions): the time level 0 would take if nothing '
             'came between its convolutions. Renders: render.Renderer\'s second render of a random image of that '
             'size, in the same process.' % (cfg['size'], total, cfg['repeats']), '',
             '| | ' + ' | '.join(precisions) + ' |', '|---|' + '---|' * len(precisions)]
    conv_seconds = {p: sum(s for _, _, s in results[p]['scales']) for p in precisions}
    lines.append('| convolutions alone | ' + ' | '.join(
        '%.1f s (%.0f GFLOP/s)' % (conv_seconds[p], total / conv_seconds[p]) for p in precisions) + ' |')
    lines.append('| fastest convolution alone | ' + ' | '.join(
        '%.0f GFLOP/s (%s)' % results[p]['fastest'] for p in precisions) + ' |')
    for name in ('one piece (tile=0)', 'in bands (tile=%d)' % cfg['tile']):
        if all(name in results[p]['renders'] for p in precisions):
            lines.append('| render, %s | ' % name + ' | '.join(
                '%.1f s (%.0f GFLOP/s), %.2fx the convolutions alone'
                % (results[p]['renders'][name], total / results[p]['renders'][name],
                   results[p]['renders'][name] / conv_seconds[p]) for p in precisions) + ' |')
    lines += ['', 'Convolutions alone, by the scale of the map they read:', '',
              '| scale | GFLOP | ' + ' | '.join('%s s | %s GFLOP/s' % (p, p) for p in precisions) + ' |',
              '|---|---|' + '---|---|' * len(precisions)]
    for i, (where, gflop, _) in enumerate(results[precisions[0]]['scales']):
        cells = []
        for p in precisions:
            seconds = results[p]['scales'][i][2]
            cells += ['%.2f' % seconds, '%.0f' % (gflop / seconds)]
        lines.append('| %s | %.0f | %s |' % (where, gflop, ' | '.join(cells)))
    return '\n'.join(lines) + '\n'


def main(argv):
    cfg = utils.parse_args(argv, KEYS, USAGE)
    height, width = report.parse_size(cfg['size'], 'size')
    precisions = [p for p in cfg['precisions'].split(',') if p]
    unknown = [p for p in precisions if p not in utils.RENDER_PRECISIONS]
    if unknown or not precisions:
        raise utils.UserError('precisions=%s: give float32, bfloat16 or both, comma-separated' % cfg['precisions'])
    if cfg['repeats'] < 1:
        raise utils.UserError('repeats=%d: must be at least 1' % cfg['repeats'])
    if 'bfloat16' in precisions and not utils.cpu_supports_bfloat16():
        print('note: this CPU has no native bfloat16 (AVX512-BF16 or AMX): measuring float32 only', file=sys.stderr)
        precisions = [p for p in precisions if p != 'bfloat16'] or ['float32']
    cfg['command'] = ' '.join(['python bench/ceiling.py'] + list(argv))
    utils.import_tensorflow()
    import checkpoints
    import model
    if min(height, width) < model.SIZE_MULTIPLE:
        raise utils.UserError('size=%s: give at least %dx%d packed pixels (the coarsest maps are 1/%d of it)'
                              % ((cfg['size'],) + (model.SIZE_MULTIPLE,) * 3))
    models = models_dir(cfg) if cfg['renders'] else None
    load = [report.load_note()]
    checkpoint = checkpoints.find_checkpoint(models, 0)[0] if models else None
    packed = np.random.default_rng(0).uniform(0, 0.5, (height, width, 4)).astype(np.float32)
    results = {}
    for precision in precisions:
        seconds = time_convolutions(height, width, precision, cfg['repeats'])
        fastest = max((flops(c, height, width) / seconds[shape_of(c)] / 1e9, describe(shape_of(c)))
                      for c in model.convolutions([model.OUTPUTS[0]]))
        renders = collections.OrderedDict()
        if checkpoint:
            renders['one piece (tile=0)'] = time_render(checkpoint, packed, precision, 0)
            if cfg['tile']:
                renders['in bands (tile=%d)' % cfg['tile']] = time_render(checkpoint, packed, precision, cfg['tile'])
        results[precision] = {'scales': by_scale(seconds, height, width), 'fastest': fastest, 'renders': renders}
        print('%s: convolutions alone %.1f s; renders %s' % (
            precision, sum(s for _, _, s in results[precision]['scales']),
            ', '.join('%s %.1f s' % kv for kv in renders.items()) or 'not run'), flush=True)
    load.append(report.load_note())
    text = report_text(cfg, results, report.machine(), load)
    print(text)
    if cfg['write']:
        report.write_section(SECTION, text)


if __name__ == '__main__':
    utils.run_main(main)
