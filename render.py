"""The rendering engine: PyNET restored from a checkpoint, turning packed RAW images of any size into RGB.

    with Renderer('models/original/pynet_level_0.ckpt', level=0) as renderer:
        rgb = renderer.render(packed)      # float32 [h, w, 4] -> float32 [2h, 2w, 3], not clipped

Any size: the packed image is padded at the bottom and right to a multiple of 16 by
reflection and the output cropped back.

Exact tiles (`tile=N`): PyNET's levels 2-5 use instance normalisation, whose statistics
span the whole image, while levels 1 and 0 (with the published instance_norm_level_1=False)
are purely local. So the image is rendered in three stages:
  1. pooled e1 (S/2, 32 channels), computed in strips (e1 is two 3x3 convolutions: local);
  2. levels 2-5 on the whole image at S/2 and below, keeping only h, the last level-2
     feature map (S/2, 64 channels), and the low-resolution outputs;
  3. levels 1 and 0 tile by tile: each tile recomputes e1 from the packed RAW and the two
     level-2 upsamplings from h, with a halo of HALO packed pixels on every side that
     touches another tile; only the tile's core is kept.
The halo covers the whole receptive field of stage 3, so tiles give the one-piece result
(up to float rounding), seams included. Nothing at full resolution is kept except the
input and the output, which bounds memory.
"""

import ctypes
import math
import os
import sys

import numpy as np

import utils
from utils import UserError

# Memory: TensorFlow's oneDNN CPU allocator keeps every region it ever grew (a BFC pool), so a
# render's peak is the sum of its stages' worst moments; the system allocator gives freed tensors
# back. Must be set before TensorFlow makes its first allocation; a user's own setting wins.
os.environ.setdefault('TF_ONEDNN_USE_SYSTEM_ALLOCATOR', '1')
if os.environ['TF_ONEDNN_USE_SYSTEM_ALLOCATOR'] == '1':
    try:    # glibc: map blocks above 256 KiB directly, so that freeing them returns them to the system
        _libc = ctypes.CDLL('libc.so.6')
        _libc.mallopt(-3, 256 * 1024)       # M_MMAP_THRESHOLD
        _libc.mallopt(-1, 1024 * 1024)      # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass

DEFAULT_TILE = 768          # packed-pixel tile size (core, without halo); 0 renders in one piece
PRECISIONS = ('float32', 'bfloat16')
SIZE_MULTIPLE = 16          # the network pools four times
# Receptive-field radius of levels 1 and 0, in packed pixels, from the packed RAW (through e1)
# and from h: the level-1 chain of convolutions (5x5 block 4, 7x7 6, four 9x9 blocks 32, 7x7 6,
# 5x5 4, 3x3 2, output or level-0 upsampling 1) is 55, e1's two 3x3 convolutions add 2. Rounded
# up to an even number so tiles stay aligned with h (S/2); measured by gradients: 57.
HALO = 58
E1_HALO = 2                 # e1 = two 3x3 convolutions
LOW_TILE = 192              # largest tile (at S/2) of the streamed instance-normalised blocks
# The instance-normalised blocks at S/2 evaluated in tiles, in order (see Renderer._render_tiled):
# model.py key, largest kernel, channels of the stored arrays whose concatenation is the block's
# input, and whether the block adds its input (residual).
STREAMED_BLOCKS = (
    ('encoder/e2', 3, (32,), False),        # pooled e1
    ('level2/a', 5, (64, 64), False),       # cat(e2, u2a)
    ('level2/b', 7, (192,), True),
    ('level2/c', 7, (192,), True),
    ('level2/d', 7, (192,), True),
    ('level2/f', 7, (192,), False),
    ('level2/g', 5, (192, 64), False),      # cat(block f, e2)
    ('level2/h', 3, (128, 64), False),      # cat(block g, u2b)
)


def pad_to_multiple(packed, multiple=SIZE_MULTIPLE):
    """Pads [h, w, c] at the bottom and right by reflection up to a multiple of `multiple`."""
    h, w = packed.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return packed
    # numpy's 'reflect' keeps reflecting when the pad is longer than the image (1 2 3 2 1 2 ...),
    # so tiny images work too.
    return np.pad(packed, ((0, pad_h), (0, pad_w), (0, 0)), mode='reflect')


def output_size(h, w, level):
    """Output (height, width) of `level` for a packed h x w input: 2h x 2w at level 0, h x w at
    level 1, then halving, rounded up so that every packed pixel is covered."""
    return -(-h * 2 // 2 ** level), -(-w * 2 // 2 ** level)


def split_axis(length, tile, align=2):
    """Boundaries [0, ..., length] cutting `length` into near-equal parts of at most ~`tile`, on multiples of `align`."""
    parts = max(1, math.ceil(length / tile))
    cuts = [int(round(length * i / parts / align)) * align for i in range(parts + 1)]
    cuts[-1] = length
    return sorted(set(cuts))


def tile_boxes(height, width, tile, align=2):
    """Core boxes (y0, y1, x0, x1) of the tiles covering a height x width image."""
    ys, xs = split_axis(height, tile, align), split_axis(width, tile, align)
    return [(y0, y1, x0, x1) for y0, y1 in zip(ys, ys[1:]) for x0, x1 in zip(xs, xs[1:])]


def with_halo(box, halo, height, width):
    """The box grown by `halo` on every side, clipped to the image (the image border needs no halo)."""
    y0, y1, x0, x1 = box
    return max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo)


def combine_moments(parts):
    """Mean and variance of a whole image from (pixel count, mean, variance) of its disjoint parts."""
    counts = np.array([n for n, _, _ in parts], np.float64)[:, None]
    means = np.array([m for _, m, _ in parts], np.float64)
    variances = np.array([v for _, _, v in parts], np.float64)
    mean = (counts * means).sum(0) / counts.sum()
    variance = (counts * (variances + (means - mean) ** 2)).sum(0) / counts.sum()
    return mean.astype(np.float32), variance.astype(np.float32)


def _conv_using(ops, variable):
    """The one convolution among `ops` whose kernel is `variable`."""
    found = [op for op in ops if op.type in ('Conv2D', 'Conv2DBackpropInput')
             and op.inputs[1].op.inputs[0].op is variable.op]
    assert len(found) == 1, 'model.py changed: render.py cannot find the convolution of %s' % variable.op.name
    return found[0]


class _Progress:
    """Steps of one render: a tqdm bar (progress=None, several steps), nothing (False) or a callback."""

    def __init__(self, progress, total):
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        self.bar = None
        if progress is None and total > 1:
            self.bar = utils.progress(total=total, desc='render', unit='step', leave=False)

    def step(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _StreamedBlock:
    """Tile graphs evaluating one instance-normalised model.multi_conv_block in three passes over the image.

    pass1: first convolutions of every branch (pre-norm), kept, and their moments on the tile core;
    pass2: norm + leaky ReLU with the whole-image statistics, second convolutions, their moments;
    pass3: both norms applied, branches concatenated (+ residual): the block output on the core.
    """

    def __init__(self, tf, model, weights, key, kmax, in_channels, residual):
        sizes = list(range(3, kmax + 1, 2))
        filters = weights.variables['%s/3x3/conv1/bias' % key].shape.as_list()[0]
        self.channels = filters * len(sizes)
        self.halo = kmax // 2       # one convolution's radius: pass1 and pass2/3 each convolve once
        self.core = tf.placeholder(tf.int32, [4])              # top, left, height, width in the tile
        top, left, height, width = tf.unstack(self.core)

        def crop(x):
            return tf.slice(x, tf.stack([0, top, left, 0]), tf.stack([1, height, width, -1]))

        def moments(x):
            return tf.nn.moments(crop(x), [0, 1, 2])

        # The block input may be a concatenation of stored arrays: one placeholder each.
        self.sources = [tf.placeholder(tf.float32, [1, None, None, c]) for c in in_channels]
        x = self.sources[0] if len(self.sources) == 1 else tf.concat(self.sources, 3)
        y = tf.concat([model.conv(weights, '%s/%dx%d/conv1' % (key, k, k), x, filters, k, activation=False)
                       for k in sizes], 3)
        self.pass1 = [crop(y)] + list(moments(y))
        self.y1 = tf.placeholder(tf.float32, [1, None, None, self.channels])
        self.stats = [tf.placeholder(tf.float32, [self.channels]) for _ in range(4)]
        y2, z2 = [], []
        for i, k in enumerate(sizes):
            part = slice(i * filters, (i + 1) * filters)
            z1 = self._norm(model, weights, '%s/%dx%d/conv1' % (key, k, k), self.y1[..., part],
                            self.stats[0][part], self.stats[1][part])
            conv2 = '%s/%dx%d/conv2' % (key, k, k)
            y2.append(model.conv(weights, conv2, z1, filters, k, activation=False))
            z2.append(self._norm(model, weights, conv2, y2[-1], self.stats[2][part], self.stats[3][part]))
        self.pass2 = list(moments(tf.concat(y2, 3)))
        out = crop(tf.concat(z2, 3))
        if residual:
            self.residual = tf.placeholder(tf.float32, [1, None, None, self.channels])
            out = out + self.residual
        self.pass3 = out

    @staticmethod
    def _norm(model, weights, key, y, mean, variance):
        """model.instance_norm with given statistics, then leaky ReLU."""
        scale, shift = weights.variables[key + '/scale'], weights.variables[key + '/shift']
        return model.leaky_relu(model.normalize(y, mean, variance, scale, shift))


class Renderer:
    """A session holding PyNET restored from a checkpoint, rendering packed RAW images of any size.

    `level` may be changed between render() calls: every level's graph is there.
    """

    def __init__(self, checkpoint_path, level=0, use_gpu=True, precision='float32', tile=DEFAULT_TILE,
                 instance_norm_level_1=False):
        import tensorflow.compat.v1 as tf
        import model
        if level not in utils.LEVELS:
            raise UserError('level=%s: must be one of %s' % (level, ', '.join(map(str, utils.LEVELS))))
        if precision not in PRECISIONS:
            raise UserError('precision=%s: must be float32 or bfloat16' % precision)
        tile = int(tile or 0)
        if tile < 0 or 0 < tile < SIZE_MULTIPLE:
            raise UserError('tile=%d: must be 0 (one piece) or at least %d packed pixels' % (tile, SIZE_MULTIPLE))
        if precision == 'bfloat16' and not utils.cpu_supports_bfloat16():
            print('note: this CPU has no native bfloat16 (AVX512-BF16 or AMX); rendering in float32',
                  file=sys.stderr)
            precision = 'float32'
        if tile and instance_norm_level_1:
            # Instance norm on level 1 takes statistics over the whole full-resolution image.
            print('note: instance_norm_level_1 makes level 1 depend on the whole image; rendering in one piece',
                  file=sys.stderr)
            tile = 0
        if use_gpu and not utils.gpu_available():
            use_gpu = False     # run on the CPU, as TensorFlow would do anyway
        self.level, self.precision, self.tile = level, precision, tile
        # Tiles of the instance-normalised S/2 blocks: the same area as a full-resolution tile, but
        # at most LOW_TILE (their halo is only 2-3 pixels, and smaller tiles keep temporaries small).
        self.low_tile = max(8, min(LOW_TILE, tile // 2) // 2 * 2)
        self.instance_norm_level_1 = instance_norm_level_1

        self.graph = tf.Graph()
        with self.graph.as_default():
            weights = model.PyNETWeights(trainable=False)
            packed = tf.placeholder(tf.float32, [1, None, None, 4], name='packed_raw')
            if not tile:
                # The published graph, in one piece.
                self.input = packed
                self.outputs = model.PyNET(packed, instance_norm_level_1=instance_norm_level_1, weights=weights)
            else:
                self._build_tiled(tf, model, weights, packed)
            variables = weights.in_creation_order()
        self.sess = tf.Session(graph=self.graph, config=utils.session_config(use_gpu, precision))
        utils.restore_variables(self.sess, variables, checkpoint_path)

    def _build_tiled(self, tf, model, weights, packed):
        """The stage graphs, sharing one set of weights (see the module docstring)."""
        # Stage 1: pooled e1 of a strip of the packed RAW.
        self.strip_input = packed
        self.pooled_e1 = model.max_pool(model.encoder_level_1(weights, packed))
        # Stage 3 uses the published lower_levels graph, fed with e2 and fetching level 3's last
        # feature map (what the two level-2 upsamplings read) and the low-resolution outputs.
        first = len(self.graph.get_operations())
        _, _, low = model.lower_levels(weights, tf.placeholder(tf.float32, [1, None, None, 32]))
        lower_ops = self.graph.get_operations()[first:]
        e3_conv = _conv_using(lower_ops, weights.variables['encoder/e3/3x3/conv1/kernel'])
        assert e3_conv.inputs[0].op.type == 'MaxPool', 'model.lower_levels changed: update render.py'
        self.e2 = e3_conv.inputs[0].op.inputs[0]
        self.level3 = _conv_using(lower_ops, weights.variables['level3/up_a/kernel']).inputs[2]
        self.low_outputs = low                  # out2 .. out5
        # Stage 4: the level-2 upsamplings and level 2's output, whole-image (cheap, local).
        self.level3_input = tf.placeholder(tf.float32, [1, None, None, 128], name='level3_e')
        self.u2 = [model.upsample(weights, 'level3/up_%s' % ab, self.level3_input, 64) for ab in 'ab']
        self.h_input = tf.placeholder(tf.float32, [1, None, None, 64], name='h')
        self.out2 = model.output_image(weights, 'level2/out', self.h_input)
        # Stages 2 and 5: e2 and level 2, block by block in tiles (_StreamedBlock).
        self.blocks = {key: _StreamedBlock(tf, model, weights, key, kmax, channels, residual)
                       for key, kmax, channels, residual in STREAMED_BLOCKS}
        # Stage 6: levels 1 and 0 of one tile, from the packed RAW tile and h of the same area.
        self.tile_input = tf.placeholder(tf.float32, [1, None, None, 4], name='packed_tile')
        self.tile_h = tf.placeholder(tf.float32, [1, None, None, 64], name='h_tile')
        tile_e1 = model.encoder_level_1(weights, self.tile_input)
        tile_u1a = model.upsample(weights, 'level2/up_a', self.tile_h, 32)
        tile_u1b = model.upsample(weights, 'level2/up_b', self.tile_h, 32)
        self.tile_outputs = model.upper_levels(weights, tile_e1, tile_u1a, tile_u1b)   # out0, out1
        # Same variables, same creation order as model.PyNET: the checkpoint restores unchanged,
        # and no stage made variables of its own (a renamed key in model.py would).
        assert len(weights.variables) == 437, 'render.py uses weight keys model.py no longer has'

    def render(self, packed, progress=None):
        """float32 [h, w, 4] packed RAW (any h, w >= 1) -> float32 [2h/2**level, 2w/2**level, 3] (see
        output_size), in the model's range, not clipped.

        progress: None shows a bar over the tiles when there are several, False shows nothing, a
        callable is called as progress(tiles_done, tiles_total) after every tile.
        """
        packed = np.asarray(packed, dtype=np.float32)
        if packed.ndim != 3 or packed.shape[2] != 4 or packed.shape[0] < 1 or packed.shape[1] < 1:
            raise UserError('packed RAW must be [h, w, 4] with h, w >= 1, got %s' % (packed.shape,))
        h, w = packed.shape[:2]
        out_h, out_w = output_size(h, w, self.level)
        padded = pad_to_multiple(packed)
        if self.tile:
            result = self._render_tiled(padded, progress)
        else:
            result = self.sess.run(self.outputs[self.level], {self.input: padded[None]})[0]
        result = result[:out_h, :out_w]
        assert result.shape == (out_h, out_w, 3), result.shape
        return result

    def _render_tiled(self, padded, progress):
        """The stages of the module docstring, on a padded [H, W, 4] image."""
        H, W = padded.shape[:2]
        run = self.sess.run
        strips = split_axis(H, max(2, self.tile * self.tile // W // 2 * 2))
        low_boxes = tile_boxes(H // 2, W // 2, self.low_tile)
        boxes = tile_boxes(H, W, self.tile)
        steps = len(strips)             # the e1 strips (len(strips) - 1 of them) and levels 5-3
        steps += 3 * len(low_boxes) * (len(STREAMED_BLOCKS) if self.level <= 2 else 1)
        if self.level <= 1:
            steps += len(boxes)
        bar = _Progress(progress, steps)
        try:
            # Stage 1: pooled e1 in strips of rows (even boundaries keep the 2x2 pooling aligned).
            pooled = np.empty((H // 2, W // 2, 32), np.float32)
            for y0, y1 in zip(strips, strips[1:]):
                a, b = max(0, y0 - E1_HALO), min(H, y1 + E1_HALO)
                out = run(self.pooled_e1, {self.strip_input: padded[None, a:b]})[0]
                pooled[y0 // 2:y1 // 2] = out[(y0 - a) // 2:(y0 - a) // 2 + (y1 - y0) // 2]
                bar.step()
            # Stage 2: e2, streamed. Big arrays live in `store` so that _stream can drop the ones a
            # block reads last as soon as its first pass is done (np.empty pages cost nothing until written).
            half = (H // 2, W // 2)
            store = {'pooled': pooled}
            del pooled
            store['e2'] = np.empty(half + (64,), np.float32)
            self._stream('encoder/e2', store, ['pooled'], store['e2'], bar, free=['pooled'])
            # Stage 3: levels 5-3 on the whole image (S/4 and below).
            if self.level >= 3:
                result = run(self.low_outputs[self.level - 2], {self.e2: store['e2'][None]})[0]
                bar.step()
                return result
            level3 = run(self.level3, {self.e2: store['e2'][None]})
            bar.step()
            # Stage 5: level 2 block by block, mirroring model.lower_levels. r is the 192-channel running
            # tensor: a, then b, c, d in place, then f's block output.
            store['u2a'] = run(self.u2[0], {self.level3_input: level3})[0]
            r = store['r'] = np.empty(half + (192,), np.float32)
            self._stream('level2/a', store, ['e2', 'u2a'], r[..., :128], bar, free=['u2a'])   # cat(block, e2)
            r[..., 128:] = store['e2']
            for key in ('level2/b', 'level2/c', 'level2/d'):                                  # block(x) + x
                self._stream(key, store, ['r'], r, bar, residual=r)
            self._stream('level2/f', store, ['r'], r, bar)                                     # cat(block, e2)
            del r
            store['g'] = np.empty(half + (128,), np.float32)
            self._stream('level2/g', store, ['r', 'e2'], store['g'], bar, free=['r', 'e2'])  # cat(block, u2b)
            store['u2b'] = run(self.u2[1], {self.level3_input: level3})[0]
            h = np.empty(half + (64,), np.float32)
            self._stream('level2/h', store, ['g', 'u2b'], h, bar, free=['g', 'u2b'])
            del store, level3
            if self.level == 2:
                return run(self.out2, {self.h_input: h[None]})[0]
            # Stage 6: levels 1-0 tile by tile.
            scale = 2 if self.level == 0 else 1
            fetch = self.tile_outputs[self.level]
            result = np.empty((H * scale, W * scale, 3), np.float32)
            for box in boxes:
                y0, y1, x0, x1 = box
                a, b, c, d = with_halo(box, HALO, H, W)
                out = run(fetch, {self.tile_input: padded[None, a:b, c:d],
                                  self.tile_h: h[None, a // 2:b // 2, c // 2:d // 2]})[0]
                result[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                    out[(y0 - a) * scale:(y1 - a) * scale, (x0 - c) * scale:(x1 - c) * scale]
                bar.step()
            return result
        finally:
            bar.close()

    def _stream(self, key, store, names, out, bar, residual=None, free=()):
        """out = block(concat(store[names])) [+ residual], exactly, in tiles: instance-norm statistics
        are gathered over the whole image in one pass per convolution of the branches, then applied.
        The arrays named in `free` leave the store once read for the last time."""
        block = self.blocks[key]
        sources = [store[name] for name in names]
        H2, W2 = sources[0].shape[:2]
        boxes = tile_boxes(H2, W2, self.low_tile)
        y1 = np.empty((H2, W2, block.channels), np.float32)     # pre-norm first convolutions
        stats = []
        for phase in range(3):
            moments = []
            for box in boxes:
                y0, yb, x0, xb = box
                a, b, c, d = with_halo(box, block.halo, H2, W2)
                feed = {block.core: [y0 - a, x0 - c, yb - y0, xb - x0]}
                if phase == 0:
                    feed.update({p: s[None, a:b, c:d] for p, s in zip(block.sources, sources)})
                    core, mean, var = self.sess.run(block.pass1, feed)
                    y1[y0:yb, x0:xb] = core[0]
                    moments.append((core.size // block.channels, mean, var))
                else:
                    feed[block.y1] = y1[None, a:b, c:d]
                    feed.update(zip(block.stats[:2 * phase], stats))
                    if phase == 1:
                        mean, var = self.sess.run(block.pass2, feed)
                        moments.append(((yb - y0) * (xb - x0), mean, var))
                    else:
                        if residual is not None:
                            feed[block.residual] = residual[None, y0:yb, x0:xb]
                        out[y0:yb, x0:xb] = self.sess.run(block.pass3, feed)[0]
                bar.step()
            if phase == 0:
                del sources
                for name in free:
                    del store[name]
            if phase < 2:
                stats.extend(combine_moments(moments))

    def close(self):
        self.sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
