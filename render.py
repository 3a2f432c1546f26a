"""The rendering engine: PyNET restored from a checkpoint, turning packed RAW images of any size into RGB.

    with Renderer('models/original/pynet_level_0.ckpt', level=0) as renderer:
        rgb = renderer.render(packed)      # float32 [h, w, 4] -> float32 [2h, 2w, 3], not clipped

Any size: the packed image is padded at the bottom and right to a multiple of 16 by reflection
and the output cropped back.

One piece (tile=0, or an image of at most tile x tile packed pixels): the published graph,
model.PyNET, on the whole image.

Streamed (larger images): PyNET evaluated in bands of rows holding about tile x tile packed
pixels each, from the same description of the network, model.LAYOUT, with memory bounded by the
band, not the image, and every convolution computed once except, in float32, e2's:
  - Instance norm needs the mean and variance of a convolution's output over the whole image
    before anything can use it. So each instance-normalised block at S/2 and S/4 (e2, e3, levels 2
    and 3) takes three passes over the image (_block_passes): its first convolutions, stored with
    their statistics; its second convolutions, stored in place with theirs; then its output (both
    norms, leaky ReLU, plus its input if residual), stored in place. In float32, e2, which depends on
    the packed input alone, is never stored: once its statistics are known, the passes that read it
    (e3's first and four of level 2's) compute it again from the input (0.19 GB less at 12 MP for
    1.8% more arithmetic: e1 and e2 are 0.36% of the network). In bfloat16 it is stored, which
    costs half as much and saves more time.
  - Passes that store maps at S/4 (e3, level 3) take bands 4x as tall, and in bfloat16 those at S/2
    (e2, level 2) 2x (_Stream.band_factor): as many of their stored pixels per band as a pass at S,
    so that their convolutions are not cut into many small runs.
  - A pass writes a new stored array into one that an earlier pass is done with, where one has its
    shape (_take): the first writes to a new array fault its pages in, which costs seconds at 12 MP.
  - With precision=bfloat16, the passes compute in bfloat16 (their weights cast in their graphs) and
    keep their stored and carried maps in it (Renderer.stored_dtype): half the memory, half the
    copying into and out of every band, and no casts around every convolution. The packed input,
    the statistics and the output image stay float32.
  - Layers at S/8 and below (e4, levels 5 and 4) are small: they run in one piece on the stored e3
    (_LowPass).
  - Every other layer (e1, the poolings and upsamplings, levels 1 and 0 with the published
    instance_norm_level_1=False) needs no whole-image statistics: it is computed inside the pass
    that reads it, band after band, never stored.
A pass is a _Stream: a graph (its own, with its own session: _Pass) that takes the next band of
rows of its stored inputs and, for every feature map, carries over from the previous band the rows
its consumers still need (a convolution's halo, or the delay that lines up the inputs of a
concatenation). Each feature map lags behind the band by the rows its convolutions look ahead, and
rows outside the image are zeroed, which is what SAME padding does; so every band equals the same
rows of the one-piece graph, up to float rounding.

The weights are read from the checkpoint once, as numpy arrays, and fed to every graph that reads them
(_FedWeights): one copy serves the one-piece graph and all the passes.
"""

import contextlib
import ctypes
import sys

import numpy as np
import tensorflow.compat.v1 as tf

import checkpoints
import devices
import mixed_precision
import model
import utils
from utils import UserError

LOW_SCALE = 3               # feature maps at S/8 and below are computed in one piece
# bfloat16 against float32 as this project measured it (BENCHMARKS.md and its history), per CPU flag:
# (speed-up per 12 MP photo against the published graph in float32, PSNR against float32 on trained weights,
# machine). AVX512-BF16: precision=bfloat16 with the default tile (bench/render.py, 2026-12-06); AMX: the
# published graph in one piece (the rendering issue's figures; not yet measured with bands).
BFLOAT16_MEASURED = {
    'amx_bf16': (2.6, 58, 'an Intel Xeon with AMX, 2026-11-30'),
    'avx512_bf16': (1.97, 58, 'an AMD EPYC with AVX512-BF16, 2026-12-06'),
}
BAND_ALIGN = 8              # band heights in packed rows are multiples of this (S/2 maps need even ones)
# glibc's malloc_trim and mallopt, where there are (Linux; not musl, macOS or Windows).
_LIBC = ctypes.CDLL(None) if sys.platform.startswith('linux') else None
_MALLOC_TRIM = getattr(_LIBC, 'malloc_trim', None)
_MALLOPT = getattr(_LIBC, 'mallopt', None)
_M_MMAP_THRESHOLD = -3      # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD = 1 << 20    # bytes: with low_memory, allocations at least this large get pages of their own


def padded_size(h, w, multiple=model.SIZE_MULTIPLE):
    """(h, w) rounded up to multiples of `multiple`: the size PyNET runs at."""
    return h + -h % multiple, w + -w % multiple


def pad_to_multiple(packed, multiple=model.SIZE_MULTIPLE):
    """Pads [h, w, c] at the bottom and right by reflection up to a multiple of `multiple`."""
    h, w = packed.shape[:2]
    padded_h, padded_w = padded_size(h, w, multiple)
    pad_h, pad_w = padded_h - h, padded_w - w
    if not pad_h and not pad_w:
        return packed
    # numpy's 'reflect' keeps reflecting when the pad is longer than the image (1 2 3 2 1 2 ...),
    # so tiny images work too.
    return np.pad(packed, ((0, pad_h), (0, pad_w), (0, 0)), mode='reflect')


def output_size(h, w, level):
    """Output (height, width) of `level` for a packed h x w input: 2h x 2w at level 0, h x w at
    level 1, then halving, rounded up so that every packed pixel is covered."""
    return -(-h * 2 // 2 ** level), -(-w * 2 // 2 ** level)


def band_height(tile, width):
    """Packed rows per band: about tile x tile packed pixels over the image's width."""
    return max(BAND_ALIGN, tile * tile // width // BAND_ALIGN * BAND_ALIGN)


def bfloat16_advice():
    """A note on what precision=bfloat16 would gain on this CPU, from this project's measurements; None where
    the CPU has no native bfloat16."""
    flag = utils.cpu_bfloat16_flag()
    if flag is None:
        return None
    speedup, psnr, where = BFLOAT16_MEASURED[flag]
    return ('note: this CPU has native bfloat16 (%s): precision=bfloat16 renders about %.1fx faster at about %d dB '
            'PSNR against float32 (measured on %s; pixels differ from float32 by a few levels in 255)'
            % (flag, speedup, psnr, where))


def map_large_allocations():
    """Makes glibc give every allocation of at least MMAP_THRESHOLD bytes pages of its own, returned to the
    system when it is freed (low_memory). glibc otherwise raises that threshold to the largest block freed so
    far (up to 32 MB), and the bands' tensors, tens of MB each and of ever different sizes, are then carved
    from heaps that fragment (3.9-4.4 GB at packed 736x992 with TensorFlow's heap allocator, against
    1.85 GB with this). Process-wide and kept."""
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def small_pages_for_arrays():
    """Makes numpy stop asking Linux for transparent huge pages for its large arrays (NUMPY_MADVISE_HUGEPAGE=0,
    set after import). Why: with the kernel's default `defrag=madvise`, faulting in a huge page can stall
    on memory compaction, and the passes' new stored arrays are written right after a pass freed others:
    their first writes took 5.5 s of 53 s of bfloat16 passes up to level 2 at 12 MP with huge pages, 2.2 s
    without (AMD EPYC, 2026-12-06). Process-wide and kept; where numpy has no such switch, nothing changes."""
    switch = getattr(getattr(getattr(np, '_core', None), 'multiarray', None), '_set_madvise_hugepage', None)
    if switch is not None:
        switch(False)


def release_free_memory():
    """Returns freed heap memory to the system (glibc), so that what one pass freed is not counted again in the
    peak of the next: the passes' arrays and feeds come and go in sizes that leave the heap fragmented."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def combine_moments(parts):
    """Mean and variance of a whole image from (pixel count, mean, variance) of its disjoint parts."""
    parts = [p for p in parts if p[0] > 0]
    counts = np.array([n for n, _, _ in parts], np.float64)[:, None]
    means = np.array([m for _, m, _ in parts], np.float64)
    variances = np.array([v for _, _, v in parts], np.float64)
    mean = (counts * means).sum(0) / counts.sum()
    variance = (counts * (variances + (means - mean) ** 2)).sum(0) / counts.sum()
    return mean.astype(np.float32), variance.astype(np.float32)


def unit(scale):
    """Rows of the finest map (2S, level 0) per row of a map at `scale` (0 = S, 1 = S/2, -1 = 2S)."""
    return 2 ** (scale + 1)


# ----------------------------------------------------------------------------------------
# Streams: feature maps evaluated band by band

class _Feature:
    """One feature map inside a _Stream: how each band's new rows are made, and how far they lag.

    Positions are counted in rows of the finest map (2S). A feature's band holds its rows from
    (position - lag) / unit(scale) on; `lookback`/`lookahead` are the rows of its inputs it reads
    before and after its own (a convolution's radius; one row before for the transposed convolution).
    """

    def __init__(self, inputs, scale, channels, make=None, lookback=0, lookahead=0, trim=False):
        self.inputs, self.scale, self.channels = inputs, scale, channels
        self.make = make            # function(input windows) -> this band's rows; None: rows of a stored array
        self.lookback, self.lookahead = lookback, lookahead
        self.trim = trim            # make only the rows inside the image (a convolution: worth skipping)
        self.consumers = []
        lag = max([i.lag + lookahead * unit(i.scale) for i in inputs], default=0)
        self.lag = -(-lag // unit(scale)) * unit(scale)       # whole rows of its own
        for i in inputs:
            i.consumers.append(self)

    def carried(self):
        """Rows of this map that its consumers still need from earlier bands."""
        return max([(c.lag - self.lag) // unit(self.scale) + c.lookback for c in self.consumers], default=0)

    def padded(self):
        """Whether a consumer reads past the rows it makes, so that rows outside the image must be zeros."""
        return self.make is not None and not self.trim and any(c.lookback or c.lookahead for c in self.consumers)


class _Pass:
    """A pass over the image, with a graph and a session of its own. Why its own: TensorFlow prunes a session's
    whole graph each time it builds an executor for a new set of fetches, and one graph holding every pass
    (16,000 operations at level 0) made that 0.22 s per pass, 10 of the 15 s that a render's first photo
    spent building them (AMD EPYC, 2026-12-06)."""

    def __init__(self):
        self.tf_graph = tf.Graph()
        self.sess = None
        self.weight_feed = {}
        self.rename = None          # (array, new name): the stored array that takes another name once the pass is done

    def open(self, weights, config):
        """A session on the pass's graph, fed `weights` (a _FedWeights) at every run."""
        self.sess = tf.Session(graph=self.tf_graph, config=config)
        self.weight_feed = weights.feed(self.tf_graph)

    def close(self):
        if self.sess is not None:
            self.sess.close()


class _Stream(_Pass):
    """One pass over the image in bands of rows, from stored arrays into stored arrays.

    Its feature maps are declared first (source, op, cat, sum, sink), then graph() adds the graph
    of one band, which run() feeds band after band.
    """

    def __init__(self, name, stored_dtype=tf.float32):
        super().__init__()
        self.name = name
        # Of the arrays it reads and writes (the packed input is float32), and what its graph computes in.
        self.stored_dtype = stored_dtype
        self.features = []          # in the order declared: inputs before their consumers
        self.sources = {}           # stored array read -> _Feature
        self.sinks = []             # (_Feature, stored array written, statistics key or None)
        self.sink_dtypes = []       # the dtype each sink's array is stored in
        self.norms = []             # (mean placeholder, variance placeholder, statistics key)
        self.memo = {}              # LAYOUT name -> _Feature (for _Plan.feature)

    def reads(self):
        return list(self.sources)

    # -- declaring feature maps

    def _add(self, feature):
        self.features.append(feature)
        return feature

    def source(self, array, scale, channels):
        """The rows of a stored [H, W, C] array."""
        if array not in self.sources:
            self.sources[array] = self._add(_Feature([], scale, channels))
        return self.sources[array]

    def op(self, x, make, channels=None, lookback=0, lookahead=0, scale=None, trim=False):
        """make(window of x) -> this band's rows, reading `lookback`/`lookahead` rows of x beyond them;
        with trim, make is only asked for the band's rows inside the image."""
        return self._add(_Feature([x], x.scale if scale is None else scale, channels or x.channels,
                                  lambda windows: make(windows[0]), lookback, lookahead, trim))

    def cat(self, maps):
        """Concatenation on channels, the inputs lined up with the latest of them."""
        if len(maps) == 1:
            return maps[0]
        return self._add(_Feature(list(maps), maps[0].scale, sum(m.channels for m in maps), model.concat))

    def sum(self, a, b):
        return self._add(_Feature([a, b], a.scale, a.channels, lambda windows: windows[0] + windows[1]))

    def sink(self, feature, array, statistics=None, dtype=None):
        """Stores the feature's rows into `array` (in the stream's stored dtype unless `dtype` is given); with a
        key, its per-channel whole-image moments too."""
        self.sinks.append((feature, array, statistics))
        self.sink_dtypes.append(dtype or self.stored_dtype)

    def statistics(self, key, channels):
        """Placeholders of whole-image (mean, variance) that an earlier pass computed under `key` (in graph())."""
        mean, variance = tf.placeholder(tf.float32, [channels]), tf.placeholder(tf.float32, [channels])
        self.norms.append((mean, variance, key))
        return mean, variance

    # -- the graph of one band

    def graph(self):
        """Builds the graph of one band, in the stream's own graph."""
        with self.tf_graph.as_default():
            self._build()

    def _build(self):
        self.position = tf.placeholder(tf.int32, [])        # the band's first row, in 2S rows
        self.height = tf.placeholder(tf.int32, [])          # the image's height, in 2S rows
        self.band = tf.placeholder(tf.int32, [])            # the band's height, in 2S rows
        self.carries = []                                   # (_Feature, rows, placeholder, next value)
        windows = {}
        self.source_rows = {}                               # source _Feature -> its placeholder
        for f in self.features:
            if f.make is None:
                dtype = tf.float32 if f is self.sources.get(model.INPUT) else self.stored_dtype
                self.source_rows[f] = tf.placeholder(dtype, [1, None, None, f.channels])
                f.rows = tf.cast(self.source_rows[f], self.stored_dtype)
            elif f.trim:
                f.rows = self._inside_only(f, self._read(f, f.inputs[0], windows[f.inputs[0]]))
            else:
                f.rows = f.make([self._read(f, i, windows[i]) for i in f.inputs])
            if f.padded():
                f.rows = self._zero_outside(f)
            windows[f] = self._window(f)
        self.valid = [(tf.placeholder(tf.int32, []), tf.placeholder(tf.int32, [])) for _ in self.sinks]
        # Statistics summed in float32 whatever the maps are computed in: a bfloat16 sum over a band's pixels would
        # keep 8 bits of its mean.
        self.moments = [tf.nn.moments(tf.cast(f.rows[:, first:first + count], tf.float32), [0, 1, 2]) if key else None
                        for (f, _, key), (first, count) in zip(self.sinks, self.valid)]
        self.stored_rows = [tf.cast(f.rows, dtype) for (f, _, _), dtype in zip(self.sinks, self.sink_dtypes)]

    def _zero_outside(self, f):
        """f's rows with those outside the image set to zero (a copy only in bands that cross an edge)."""
        count = tf.shape(f.rows)[1]
        above, below = self._outside(f, count)
        return _zero_pad_rows(f.rows[:, above:count - below], above, below)

    def _inside_only(self, f, window):
        """f's rows made from its window only inside the image, zeros outside (what SAME padding reads there):
        at the first and last bands, a convolution skips the rows that lie outside."""
        count = self.band // unit(f.scale)
        above, below = self._outside(f, count)
        inside = count - above - below
        # At least one row: TensorFlow's oneDNN kernels (on by default on CPUs with AVX-512) return a wrong
        # shape for a convolution with no output rows instead of an empty tensor.
        start = tf.minimum(above, count - 1)
        made = f.make([_row_slice(window, start, start + tf.maximum(inside, 1) + f.lookback + f.lookahead)])
        return _zero_pad_rows(made[:, :inside], above, below)

    def _outside(self, f, count):
        """(above, below): how many of the `count` rows of f's band lie above and below the image."""
        first = (self.position - f.lag) // unit(f.scale)
        above = tf.clip_by_value(-first, 0, count)
        return above, tf.clip_by_value(first + count - self.height // unit(f.scale), 0, count - above)

    def _window(self, f):
        """The rows of f that its consumers read: those carried over from earlier bands, then this band's."""
        rows = f.carried()
        if not rows:
            return f.rows
        carry = tf.placeholder(self.stored_dtype, [1, None, None, f.channels])
        window = tf.concat([carry, f.rows], axis=1)
        # A copy (a slice along rows, not the aliasing _row_slice): the window itself can then be freed.
        self.carries.append((f, rows, carry, window[:, -rows:]))
        return window

    def _read(self, consumer, f, window):
        """The part of f's window that `consumer` reads for its band."""
        start = f.carried() - (consumer.lag - f.lag) // unit(f.scale) - consumer.lookback
        if start == 0 and consumer.lookback + consumer.lookahead == f.carried():
            return window       # all of it (no copy)
        return _row_slice(window, start, start + tf.shape(f.rows)[1] + consumer.lookback + consumer.lookahead)

    # -- running

    def band_factor(self):
        """How many times taller than `band` packed rows this pass's bands are. A pass whose sinks are at S/4 (e3,
        level 3) takes as many of its sinks' pixels per band as one at S does, 4x the rows (the few rows at S
        or S/2 it may compute are cheap). At S/2 (e2, level 2), 2x the rows in bfloat16 only: there it took a
        12 MP photo from 118.0 to 115.6 s, while in float32 the level-2 passes took as long either way and the
        taller bands added 0.09 GB to the default's peak, 2.94 GB against 2.85 (AMD EPYC, 2026-12-06)."""
        finest = min(f.scale for f, _, _ in self.sinks)
        if finest == 1 and self.stored_dtype != tf.bfloat16:
            return 1
        return 2 ** finest if finest >= 1 else 1

    def steps(self, height, band):
        """(position, rows) of the bands, in 2S rows, that bring every sink past the end of the image."""
        total = 2 * height + max(f.lag for f, _, _ in self.sinks)
        band, align = 2 * band * self.band_factor(), 2 * BAND_ALIGN
        return [(p, min(band, -(-(total - p) // align) * align)) for p in range(0, total, band)]

    def run(self, store, statistics, height, width, band, bar, spare):
        """The pass over a padded image of height x width packed pixels, `band` packed rows at a time:
        reads and writes the arrays of `store`, adds the sinks' whole-image moments to `statistics`.
        A new stored array is one of `spare` (arrays earlier passes are done with) where one has its shape;
        the rest of `spare` is then let go."""
        for (f, array, _), dtype in zip(self.sinks, self.sink_dtypes):
            if array not in store:
                store[array] = _take(spare, (2 * height // unit(f.scale), 2 * width // unit(f.scale), f.channels),
                                     dtype.as_numpy_dtype)
        spare.clear()
        carried = [np.zeros((1, rows, 2 * width // unit(f.scale), f.channels), self.stored_dtype.as_numpy_dtype)
                   for f, rows, _, _ in self.carries]
        feed = dict(self.weight_feed)
        feed[self.height] = 2 * height
        for mean, variance, key in self.norms:
            feed[mean], feed[variance] = statistics[key]
        parts = [[] for _ in self.sinks]            # (pixels, mean, variance) of each band, per sink
        for position, rows in self.steps(height, band):
            spans = [self._span(f, len(store[array]), position, rows) for f, array, _ in self.sinks]
            feed.update(self._band_feed(store, position, rows, carried, spans))
            # The same fetches in every band (moments of no rows are NaN, and dropped here): one
            # executor per pass, which the Renderer builds before the first photo.
            out = self.sess.run({'rows': self.stored_rows, 'carried': [c[3] for c in self.carries],
                                 'moments': {i: m for i, m in enumerate(self.moments) if m is not None}}, feed)
            carried = out['carried']
            for (f, array, _), value, (top, lo, hi) in zip(self.sinks, out['rows'], spans):
                store[array][lo:hi] = value[0, lo - top:hi - top]
            for i, (mean, variance) in out['moments'].items():
                _, lo, hi = spans[i]
                if hi > lo:
                    parts[i].append(((hi - lo) * store[self.sinks[i][1]].shape[1], mean, variance))
            bar.step()
        for (_, _, key), p in zip(self.sinks, parts):
            if key:
                statistics[key] = combine_moments(p)

    @staticmethod
    def _span(f, height, position, rows):
        """(first row of f's band, first and end row of it inside the image) for a band at `position`."""
        top = (position - f.lag) // unit(f.scale)
        lo = max(top, 0)
        return top, lo, max(lo, min(top + rows // unit(f.scale), height))

    def _band_feed(self, store, position, rows, carried, spans):
        """The feed of one band: its place, the sources' new rows, the carried rows, the sinks' rows in the image."""
        feed = {self.position: position, self.band: rows}
        for array, f in self.sources.items():
            first, end = position // unit(f.scale), (position + rows) // unit(f.scale)
            feed[self.source_rows[f]] = _rows(store[array], first, end)
        feed.update((placeholder, value) for (_, _, placeholder, _), value in zip(self.carries, carried))
        for (first, count), (top, lo, hi) in zip(self.valid, spans):
            feed[first], feed[count] = lo - top, hi - lo
        return feed


def _take(spare, shape, dtype=np.float32):
    """An array of `shape` and `dtype`: one of `spare` if one has them, else a new one. Why: the first writes to a new
    array fault its pages in, one by one: 1.5-2.2 s of 49 s of bfloat16 passes up to level 2 at 12 MP (AMD
    EPYC, 2026-12-06; see small_pages_for_arrays), against 0.3 s for writing as many rows in place."""
    for i, array in enumerate(spare):
        if array.shape == shape and array.dtype == dtype:
            return spare.pop(i)
    return np.empty(shape, dtype)


def _row_slice(x, start, stop):
    """x[:, start:stop] of a batch of one, sliced as x[0][start:stop], which TensorFlow does without a copy."""
    return tf.expand_dims(tf.squeeze(x, 0)[start:stop], 0)


def _zero_pad_rows(x, above, below):
    """x with `above` rows of zeros before its rows and `below` after. Not a tf.cond: TensorFlow's Pad and
    StridedSlice hand their input on uncopied when they pad or cut nothing, as in every band inside the image,
    and the conditionals they replaced made level 0's passes slow to build and to prepare (with them and a
    graph shared by all passes: 5.6 s and 15.6 s; without and with a graph per pass: 3.5 s and 2.5 s; AMD
    EPYC, 2026-12-06)."""
    return tf.pad(x, [[0, 0], [above, below], [0, 0], [0, 0]])


def _rows(array, start, stop):
    """array[start:stop] as a batch of one, with zero rows past its end."""
    data = array[start:stop]
    if len(data) < stop - start:
        data = np.concatenate([data, np.zeros((stop - start - len(data),) + array.shape[1:], array.dtype)])
    return data[None]


class _LowPass(_Pass):
    """The layers at LOW_SCALE and below in one piece (model.build), from the stored maps they read."""

    name = 'S/8 and below'

    def __init__(self, weights, layers, needed, target, norms, stored_dtype=tf.float32):
        super().__init__()
        with self.tf_graph.as_default():
            self._build(weights, layers, needed, target, norms, stored_dtype)

    def _build(self, weights, layers, needed, target, norms, stored_dtype):
        names = {l.name for l in layers}
        channels = model.channels()
        self.inputs = sorted({i for l in layers for i in model.layer_inputs(l) if i not in names})
        read_above = {i for l in needed if l.name not in names for i in model.layer_inputs(l)}
        self.targets = sorted(names & (read_above | {target}))
        self.placeholders = {n: tf.placeholder(stored_dtype, [1, None, None, channels[n]]) for n in self.inputs}
        maps = model.build(weights, {n: tf.cast(p, tf.float32) for n, p in self.placeholders.items()},
                           self.targets, norms)
        # Stored like the streams' arrays, but for the level's output (a float32 image).
        self.outputs = [tf.cast(maps[n], tf.float32 if n == target else stored_dtype) for n in self.targets]

    def reads(self):
        return self.inputs

    def run(self, store, bar):
        feed = dict(self.weight_feed)
        feed.update((self.placeholders[n], store[n][None]) for n in self.inputs)
        values = self.sess.run(self.outputs, feed)
        for name, value in zip(self.targets, values):
            store[name] = value[0]
        bar.step()


# ----------------------------------------------------------------------------------------
# The plan of a level: which passes, reading which layers of model.LAYOUT

class _Plan:
    """The passes that render one level, in order, with the arrays they keep."""

    def __init__(self, weights, level, norms, stored_dtype=tf.float32):
        self.fed_weights, self.norms, self.stored_dtype = weights, norms, stored_dtype
        # The streams compute in the dtype they store, their weights cast to it in their graphs: in bfloat16,
        # rather than leaving it to oneDNN's rewrite, which keeps a float32 copy of every fed and carried map and
        # casts it back for each convolution (12 MP, AMD EPYC, 2026-12-06: 2.4 s less for levels 1 and 0's
        # pass, 62.5 s against 64.9).
        self.weights = weights if stored_dtype == tf.float32 else mixed_precision.CastWeights(weights, stored_dtype)
        self.scales, self.channels = model.scales(), model.channels()
        self.target = model.OUTPUTS[level]
        needed = model.needed_layers([self.target])
        low = [l for l in needed if self.scales[l.name] >= LOW_SCALE]
        self.low = _LowPass(weights, low, needed, self.target, norms, stored_dtype) if low else None
        self.stored = set()         # maps kept whole: normalised blocks' outputs (before `append`), low maps
        self.recomputed = set()     # normalised blocks computed again from the input by the passes that read them
        self.low_reads = set(self.low.reads()) if self.low else set()
        self.passes = []
        for layer in needed:
            if self.scales[layer.name] < LOW_SCALE and model.normalised(layer, norms):
                self.passes += self._block_passes(layer)
        if self.scales[self.target] >= LOW_SCALE:
            self._need_low()
        else:
            output = _Stream('output', stored_dtype)
            output.sink(self.feature(output, self.target), self.target, dtype=tf.float32)
            self.passes.append(output)
        for p in self.passes:
            if isinstance(p, _Stream):
                p.graph()
        self.last_reader = {array: i for i, p in enumerate(self.passes) for array in p.reads()}

    def open(self, config):
        """A session for every pass."""
        for p in self.passes:
            p.open(self.fed_weights, config)

    def close(self):
        for p in self.passes:
            p.close()

    def _need_low(self):
        """Schedules the low pass now, if it has not run yet."""
        if self.low is not None and self.low not in self.passes:
            self.passes.append(self.low)
            self.stored.update(self.low.targets)

    def _block_passes(self, layer):
        """Streams for an instance-normalised block: its first convolutions, its second ones, then its output,
        stored whole (for a block that its readers recompute, only if the low pass reads it)."""
        y, scale = 'conv:' + layer.name, self.scales[layer.name]
        width = layer.filters * len(model.branch_sizes(layer))

        first = _Stream(layer.name + ' conv1', self.stored_dtype)
        x = first.cat([self.feature(first, name) for name in layer.inputs])
        first.sink(self._first_convs(first, layer, x), y, (y, 1))

        second = _Stream(layer.name + ' conv2', self.stored_dtype)
        # In place: rows are written after they are read.
        second.sink(self._second_convs(second, layer, second.source(y, scale, width)), y, (y, 2))
        # In float32 only: in bfloat16 e2 stored is half the memory (0.09 GB at 12 MP), and the passes that
        # recompute it then took about 3 s longer per 12 MP photo than with it stored (e3's first convolutions
        # 0.8 s against 0.2, level 2/a's 2.1 against 1.5, 2/g's 3.3 against 2.4; AMD EPYC, 2026-12-06).
        if self.stored_dtype == tf.float32 and self._from_input(layer):
            self.recomputed.add(layer.name)
            if layer.name not in self.low_reads:
                return [first, second]

        third = _Stream(layer.name + ' output', self.stored_dtype)
        third.sink(self._block_output(third, layer, third.source(y, scale, width)), y)
        third.rename = (y, layer.name)
        if layer.name not in self.recomputed:
            self.stored.add(layer.name)
        return [first, second, third]

    def _from_input(self, layer):
        """Whether a normalised block is cheap to recompute from the packed input in every pass that reads it,
        once its statistics are known, instead of being stored (e2 in float32: 0.19 GB at 12 MP for 1.8% more
        arithmetic): every map it reads is computed from the input without a normalised block."""
        return all(name == model.INPUT or
                   (not model.normalised(model.LAYERS[name], self.norms) and
                    self.scales[name] < LOW_SCALE and self._from_input(model.LAYERS[name]))
                   for name in model.layer_inputs(layer))

    def _first_convs(self, stream, layer, x):
        """A block's first convolutions of every branch, concatenated, before their norm."""
        return stream.cat([self.conv(stream, x, model.conv_key(layer, k, 1), layer.filters, k, act=False)
                           for k in model.branch_sizes(layer)])

    def _second_convs(self, stream, layer, y):
        """A block's second convolutions, concatenated, before their norm, from its first ones (`y`)."""
        z = self.norm(stream, y, layer, 1, ('conv:' + layer.name, 1))
        convs = []
        for i, k in enumerate(model.branch_sizes(layer)):
            branch = stream.op(z, lambda w, i=i: w[..., i * layer.filters:(i + 1) * layer.filters], layer.filters)
            convs.append(self.conv(stream, branch, model.conv_key(layer, k, 2), layer.filters, k, act=False))
        return stream.cat(convs)

    def _block_output(self, stream, layer, y):
        """A block's output before `append`, from its second convolutions (`y`): their norm, plus the
        block's input if residual."""
        out = self.norm(stream, y, layer, 2, ('conv:' + layer.name, 2))
        if layer.residual:
            out = stream.sum(out, stream.cat([self.feature(stream, name) for name in layer.inputs]))
        return out

    def norm(self, stream, y, layer, which, key):
        """Leaky ReLU of the instance norm of a block's stored convolutions (which: 1 or 2), with the
        whole-image statistics `key`."""
        def make(window):
            mean, variance = stream.statistics(key, y.channels)
            params = [model.norm_params(self.fed_weights, model.conv_key(layer, k, which), layer.filters)
                      for k in model.branch_sizes(layer)]
            scale, shift = (tf.concat(p, 0) for p in zip(*params))
            # With the statistics given, the norm is x * slope + offset per channel: both worked out in float32
            # from model.normalize itself and only then cast to the band's dtype, which in bfloat16 rounds once
            # instead of at each step (+1.0 dB against float32 at packed 736x992, 56.0 against 55.0; in float32
            # within 2.4e-7 of the formula; AMD EPYC, 2026-12-06).
            offset = model.normalize(tf.zeros_like(mean), mean, variance, scale, shift)
            slope = model.normalize(tf.ones_like(mean), mean, variance, scale, shift) - offset
            return model.leaky_relu(window * tf.cast(slope, window.dtype) + tf.cast(offset, window.dtype))
        return stream.op(y, make)

    def conv(self, stream, x, key, filters, size, act=True):
        """A convolution with bias (and leaky ReLU) of x, reading its radius in rows beyond the band."""
        def make(window):
            y = model.conv_bias(self.weights, key, window, filters, size, pad_rows=False)
            return model.leaky_relu(y) if act else y
        return stream.op(x, make, filters, size // 2, size // 2, trim=True)

    def feature(self, stream, name):
        """A LAYOUT feature map inside `stream`: read if stored, else computed there from its inputs."""
        if name not in stream.memo:
            stream.memo[name] = self._feature(stream, name)
        return stream.memo[name]

    def _feature(self, stream, name):
        scale = self.scales[name]
        if name == model.INPUT:
            return stream.source(name, scale, model.INPUT_CHANNELS)
        layer = model.LAYERS[name]
        append = layer.append if isinstance(layer, model.Block) else ()
        if scale >= LOW_SCALE:
            self._need_low()
        if name in self.stored:
            core = stream.source(name, scale, self.channels[name] - sum(self.channels[a] for a in append))
            return stream.cat([core] + [self.feature(stream, a) for a in append])
        if not isinstance(layer, model.Block):
            x = self.feature(stream, layer.input)
        if isinstance(layer, model.Pool):
            return stream.op(x, model.max_pool, scale=scale)
        if isinstance(layer, model.Upsample):
            # Output rows 2m and 2m+1 read input rows m-1 and m: one row before the band, whose own two
            # output rows are dropped.
            return stream.op(x, lambda w: model.upsample(self.weights, name, w, layer.filters)[:, 2:],
                             layer.filters, lookback=1, scale=scale)
        if isinstance(layer, model.Output):
            # In float32 whatever the passes compute in: in bfloat16 the image itself would keep 8 bits.
            return stream.op(x, lambda w: model.output_image(self.fed_weights, name, tf.cast(w, tf.float32),
                                                             pad_rows=False), 3, 1, 1)
        x = stream.cat([self.feature(stream, i) for i in layer.inputs])
        if name in self.recomputed:
            y = self._first_convs(stream, layer, x)
            y = self._block_output(stream, layer, self._second_convs(stream, layer, y))
        else:
            assert not model.normalised(layer, self.norms), 'render.py: %s should have been stored' % name
            branches = []
            for k in model.branch_sizes(layer):
                y = self.conv(stream, x, model.conv_key(layer, k, 1), layer.filters, k)
                branches.append(self.conv(stream, y, model.conv_key(layer, k, 2), layer.filters, k))
            y = stream.cat(branches)
            if layer.residual:
                y = stream.sum(y, x)
        return stream.cat([y] + [self.feature(stream, a) for a in append])


# ----------------------------------------------------------------------------------------
# The renderer

class _FedWeights:
    """PyNET's weights as numpy values, handed to model's layers as placeholders of the graph being built and fed
    at every run: one copy of them serves the one-piece graph and every pass's graph (see _Pass)."""

    def __init__(self, values):
        self.values = values        # key (model's weight keys) -> float32 array
        self.placeholders = {}      # graph -> {key: placeholder}

    def get(self, key, shape, initial_value):
        """model's weights interface: the placeholder of `key` in the default graph."""
        value = self.values[key]
        if list(value.shape) != list(shape):
            raise ValueError('weight %s has shape %s, the network needs %s' % (key, list(value.shape), list(shape)))
        placeholders = self.placeholders.setdefault(tf.get_default_graph(), {})
        if key not in placeholders:
            placeholders[key] = tf.placeholder(tf.float32, value.shape)
        return placeholders[key]

    def feed(self, graph):
        """The feed of the weights that `graph` reads."""
        return {placeholder: self.values[key] for key, placeholder in self.placeholders.get(graph, {}).items()}


def read_weights(checkpoint_path, instance_norm_level_1=False):
    """A _FedWeights holding every PyNET weight of the checkpoint at `checkpoint_path` (checked by name and
    shape: UserError otherwise)."""
    with tf.Graph().as_default():
        variables = model.create_weights(trainable=False, instance_norm_level_1=instance_norm_level_1).variables
        shapes = {var.op.name: var.shape.as_list() for var in variables.values()}
    values = checkpoints.read_variables(checkpoint_path, shapes)
    return _FedWeights({key: values[var.op.name] for key, var in variables.items()})


class _Progress:
    """Steps of one render: a tqdm bar (progress=None, several steps), nothing (False) or a callback."""

    def __init__(self, progress, total):
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        self.bar = None
        if progress is None and total > 1:
            self.bar = utils.progress(total=total, desc='render', unit='band', leave=False)

    def step(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Renderer:
    """A session holding PyNET restored from a checkpoint, rendering packed RAW images of any size.

    `level` may be changed between render() calls.
    """

    def __init__(self, checkpoint_path, level=0, use_gpu=True, precision='float32', tile=utils.DEFAULT_TILE,
                 instance_norm_level_1=False, largest=None, low_memory=False):
        """largest: (h, w) of the largest packed image that will be rendered, if known; the streamed passes
        (6 s of graph building and warm-up at level 0 on a 2-core AMD EPYC) are then prepared only if it
        needs them.
        low_memory: large allocations get pages of their own, returned to the system when freed
        (map_large_allocations); with TensorFlow's heap allocator (utils.import_tensorflow(heap_allocator=True),
        before the first session) the peak is then what the passes hold, not what allocators kept."""
        if level not in utils.LEVELS:
            raise UserError('level=%s: must be one of %s' % (level, ', '.join(map(str, utils.LEVELS))))
        if precision not in utils.RENDER_PRECISIONS:
            raise UserError('precision=%s: must be float32 or bfloat16' % precision)
        tile = int(tile or 0)
        if tile < 0 or 0 < tile < model.SIZE_MULTIPLE:
            raise UserError('tile=%d: must be 0 (one piece) or at least %d packed pixels'
                            % (tile, model.SIZE_MULTIPLE))
        if precision == 'bfloat16' and not utils.cpu_supports_bfloat16():
            print('note: this CPU has no native bfloat16 (AVX512-BF16 or AMX); rendering in float32',
                  file=sys.stderr)
            precision = 'float32'
        if tile and instance_norm_level_1:
            # Instance norm on level 1 takes statistics over the whole full-resolution image.
            print('note: instance_norm_level_1 makes level 1 depend on the whole image; rendering in one piece',
                  file=sys.stderr)
            tile = 0
        if use_gpu and not devices.gpu_available():
            use_gpu = False     # run on the CPU, as TensorFlow would do anyway
        self.level, self.precision, self.tile = level, precision, tile
        # The maps that streamed passes store between them, in the precision they are computed in: in bfloat16,
        # half the memory and half the copying in and out of each band.
        self.stored_dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32
        self.norms = {'instance_norm': True, 'instance_norm_level_1': instance_norm_level_1}
        self.plans = {}             # level -> _Plan, built when first needed
        self.weights = read_weights(checkpoint_path, instance_norm_level_1)
        self.config = mixed_precision.configure_session(devices.session_config(use_gpu), precision)
        self.graph = tf.Graph()     # the one-piece graph and its session, built when first needed
        self.sess = self.input = self.outputs = None
        if low_memory:
            map_large_allocations()
        if tile and (largest is None or self.streams(*largest)):
            self._plan()        # graph building is paid here, once, not by the first photo

    def render(self, packed, progress=None, pass_hook=None):
        """float32 [h, w, 4] packed RAW (any h, w >= 1) -> float32 [2h/2**level, 2w/2**level, 3] (see
        output_size), in the model's range, not clipped.

        progress: None shows a bar over the bands when there are several, False shows nothing, a
        callable is called as progress(steps_done, steps_total) after every band.
        pass_hook: in bands, each pass runs inside `with pass_hook(pass_name):` (bench/render_passes.py
        times and measures the passes with it).
        """
        packed = np.asarray(packed, dtype=np.float32)
        if packed.ndim != 3 or packed.shape[2] != 4 or packed.shape[0] < 1 or packed.shape[1] < 1:
            raise UserError('packed RAW must be [h, w, 4] with h, w >= 1, got %s' % (packed.shape,))
        h, w = packed.shape[:2]
        out_h, out_w = output_size(h, w, self.level)
        padded = pad_to_multiple(packed)
        if self.streams(h, w):
            result = self._render_streamed(padded, progress, pass_hook=pass_hook)
        else:
            result = self._render_one_piece(padded)
        result = result[:out_h, :out_w]
        assert result.shape == (out_h, out_w, 3), result.shape
        return result

    def streams(self, h, w):
        """Whether a packed h x w image is rendered in bands (else in one piece)."""
        padded_h, padded_w = padded_size(h, w)
        return bool(self.tile) and padded_h * padded_w > self.tile * self.tile

    def _render_one_piece(self, padded):
        """The published graph on the whole image."""
        if self.outputs is None:
            with self.graph.as_default():
                self.input = tf.placeholder(tf.float32, [1, None, None, model.INPUT_CHANNELS], name='packed_raw')
                self.outputs = model.PyNET(self.input, instance_norm_level_1=self.norms['instance_norm_level_1'],
                                           weights=self.weights)
            self.sess = tf.Session(graph=self.graph, config=self.config)
        feed = self.weights.feed(self.graph)
        feed[self.input] = padded[None]
        return self.sess.run(self.outputs[self.level], feed)[0]

    def _plan(self):
        """The passes of the current level, built on first use."""
        if self.level not in self.plans:
            small_pages_for_arrays()    # for the stored arrays the passes write
            self.plans[self.level] = _Plan(self.weights, self.level, self.norms, self.stored_dtype)
            self.plans[self.level].open(self.config)
            # TensorFlow builds a pass's executor at its first run (seconds for all passes, whatever the
            # image): a small blank image, in as few bands as its lags allow, pays that here, once, not
            # the first photo.
            side = 2 * model.SIZE_MULTIPLE
            self._render_streamed(np.zeros((side, side, model.INPUT_CHANNELS), np.float32), False, side)
        return self.plans[self.level]

    def _render_streamed(self, padded, progress, band=None, pass_hook=None):
        """The level's passes in order, each stored array freed after the last pass that reads it;
        `band` packed rows at a time (default: from the tile size)."""
        plan = self._plan()
        height, width = padded.shape[:2]
        band = band or band_height(self.tile, width)
        bar = _Progress(progress, sum(len(p.steps(height, band)) if isinstance(p, _Stream) else 1
                                      for p in plan.passes))
        store, statistics = {model.INPUT: padded}, {}
        spare = []                  # stored arrays no pass reads any more, for the next pass to write into
        try:
            for i, p in enumerate(plan.passes):
                with pass_hook(p.name) if pass_hook else contextlib.nullcontext():
                    if isinstance(p, _LowPass):
                        spare.clear()
                        p.run(store, bar)
                    else:
                        p.run(store, statistics, height, width, band, bar, spare)
                if p.rename:
                    store[p.rename[1]] = store.pop(p.rename[0])
                for array in [a for a, last in plan.last_reader.items() if last == i and a != plan.target]:
                    done = store.pop(array, None)
                    if done is not None and array != model.INPUT:      # the input may be the caller's
                        spare.append(done)
                release_free_memory()
            return store[plan.target]
        finally:
            bar.close()

    def close(self):
        if self.sess is not None:
            self.sess.close()
        for plan in self.plans.values():
            plan.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
