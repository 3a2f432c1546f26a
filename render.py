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

import math
import sys

import numpy as np

import utils
from utils import UserError

DEFAULT_TILE = 512          # packed-pixel tile size (core, without halo); 0 renders in one piece
PRECISIONS = ('float32', 'bfloat16')
SIZE_MULTIPLE = 16          # the network pools four times
# Receptive-field radius of levels 1 and 0, in packed pixels, from the packed RAW (through e1)
# and from h: the level-1 chain of convolutions (5x5 block 4, 7x7 6, four 9x9 blocks 32, 7x7 6,
# 5x5 4, 3x3 2, output or level-0 upsampling 1) is 55, e1's two 3x3 convolutions add 2. Rounded
# up to an even number so tiles stay aligned with h (S/2); measured by gradients: 57.
HALO = 58
E1_HALO = 2                 # e1 = two 3x3 convolutions


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


def _upsample_input(u):
    """The tensor a model.upsample output was computed from (leaky_relu(conv2d_transpose(x)))."""
    transposed = [t for t in u.op.inputs if t.op.type == 'Conv2DBackpropInput']
    assert len(transposed) == 1, 'model.upsample changed: update render._upsample_input'
    return transposed[0].op.inputs[2]


class Renderer:
    """A session holding PyNET restored from a checkpoint, rendering packed RAW images of any size."""

    def __init__(self, checkpoint_path, level=0, use_gpu=True, precision='float32', tile=DEFAULT_TILE,
                 instance_norm_level_1=False):
        import tensorflow.compat.v1 as tf
        import model
        tf.disable_eager_execution()
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
        self.instance_norm_level_1 = instance_norm_level_1

        self.graph = tf.Graph()
        with self.graph.as_default():
            weights = model.PyNETWeights(trainable=False)
            packed = tf.placeholder(tf.float32, [1, None, None, 4], name='packed_raw')
            if not tile:
                # The published graph, in one piece.
                self.input = packed
                self.output = model.PyNET(packed, instance_norm_level_1=instance_norm_level_1,
                                          weights=weights)[level]
            else:
                self._build_tiled(tf, model, weights, packed)
            variables = weights.in_creation_order()
        self.sess = tf.Session(graph=self.graph, config=utils.session_config(use_gpu, precision))
        utils.restore_variables(self.sess, variables, checkpoint_path)

    def _build_tiled(self, tf, model, weights, packed):
        """Stage graphs sharing one set of weights: pooled e1, levels 2-5, levels 1-0 of a tile."""
        # Stage 1: pooled e1 of a strip of the packed RAW.
        self.strip_input = packed
        self.pooled_e1 = model.max_pool(model.encoder_level_1(weights, packed))
        # Stage 2: levels 2-5 from pooled e1. lower_levels pools e1 itself, so it gets an e1
        # placeholder that is never fed; its pooling is fed with our pooled e1 instead.
        e1 = tf.placeholder(tf.float32, [1, None, None, 32], name='e1_unused')
        u1a, u1b, low = model.lower_levels(weights, e1)
        pools = [op for op in e1.consumers() if op.type == 'MaxPool']
        assert len(pools) == 1, 'model.lower_levels changed: update Renderer._build_tiled'
        self.lower_input = pools[0].outputs[0]
        self.h = _upsample_input(u1a)
        assert _upsample_input(u1b) is self.h and self.h.shape[-1] == 64
        self.low_outputs = low                  # out2 .. out5
        # Stage 3: levels 1 and 0 of one tile, from the packed RAW tile and h of the same area.
        assert {'level2/up_a/kernel', 'level2/up_b/kernel'} <= set(weights.variables), \
            'model.py renamed the level-2 upsamplings: update Renderer._build_tiled'
        self.tile_input = tf.placeholder(tf.float32, [1, None, None, 4], name='packed_tile')
        self.tile_h = tf.placeholder(tf.float32, [1, None, None, 64], name='h_tile')
        tile_e1 = model.encoder_level_1(weights, self.tile_input)
        tile_u1a = model.upsample(weights, 'level2/up_a', self.tile_h, 32)
        tile_u1b = model.upsample(weights, 'level2/up_b', self.tile_h, 32)
        self.tile_outputs = model.upper_levels(weights, tile_e1, tile_u1a, tile_u1b)   # out0, out1
        # Same variables, same creation order as model.PyNET: the checkpoint restores unchanged.
        assert len(weights.variables) == 437, 'the tile graph must reuse the weights, not create new ones'

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
            result = self.sess.run(self.output, {self.input: padded[None]})[0]
        result = result[:out_h, :out_w]
        assert result.shape == (out_h, out_w, 3), result.shape
        return result

    def _render_tiled(self, padded, progress):
        """The three stages of the module docstring, on a padded [H, W, 4] image."""
        H, W = padded.shape[:2]
        # Stage 1: pooled e1 in strips of rows (even boundaries keep the 2x2 pooling aligned).
        pooled = np.empty((H // 2, W // 2, 32), np.float32)
        strip = max(2, (self.tile * self.tile // W) // 2 * 2)
        rows = split_axis(H, strip)
        for y0, y1 in zip(rows, rows[1:]):
            a, b = max(0, y0 - E1_HALO), min(H, y1 + E1_HALO)
            out = self.sess.run(self.pooled_e1, {self.strip_input: padded[None, a:b]})[0]
            pooled[y0 // 2:y1 // 2] = out[(y0 - a) // 2:(y0 - a) // 2 + (y1 - y0) // 2]
        # Stage 2: levels 2-5 on the whole image.
        if self.level >= 2:
            return self.sess.run(self.low_outputs[self.level - 2], {self.lower_input: pooled[None]})[0]
        h = self.sess.run(self.h, {self.lower_input: pooled[None]})[0]
        del pooled
        # Stage 3: levels 1-0 tile by tile.
        scale = 2 if self.level == 0 else 1
        fetch = self.tile_outputs[self.level]
        result = np.empty((H * scale, W * scale, 3), np.float32)
        boxes = tile_boxes(H, W, self.tile)
        bar = None
        if progress is None and len(boxes) > 1:
            bar = utils.progress(total=len(boxes), desc='tiles', unit='tile', leave=False)
        try:
            for done, box in enumerate(boxes, 1):
                y0, y1, x0, x1 = box
                a, b, c, d = with_halo(box, HALO, H, W)
                out = self.sess.run(fetch, {self.tile_input: padded[None, a:b, c:d],
                                            self.tile_h: h[None, a // 2:b // 2, c // 2:d // 2]})[0]
                result[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                    out[(y0 - a) * scale:(y1 - a) * scale, (x0 - c) * scale:(x1 - c) * scale]
                if bar is not None:
                    bar.update(1)
                elif callable(progress):
                    progress(done, len(boxes))
        finally:
            if bar is not None:
                bar.close()
        return result

    def close(self):
        self.sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
