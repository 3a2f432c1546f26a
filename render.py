"""The rendering engine: PyNET restored from a checkpoint, turning packed RAW images of any size into RGB.

`Renderer(checkpoint, level, ...).render(packed)` pads the packed image to a multiple of 16,
runs the network and crops the result back, so any size works.
"""

import sys

import numpy as np

import utils
from utils import UserError

DEFAULT_TILE = 512          # packed-pixel tile size; 0 renders in one piece
PRECISIONS = ('float32', 'bfloat16')


def pad_to_multiple(packed, multiple):
    """Pads [h, w, c] at the bottom and right by reflection up to a multiple of `multiple` (repeats for tiny images)."""
    h, w = packed.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return packed
    # numpy's 'reflect' keeps reflecting when the pad is longer than the image (1 2 3 2 1 2 ...).
    return np.pad(packed, ((0, pad_h), (0, pad_w), (0, 0)), mode='reflect')


def output_size(h, w, level):
    """Output (height, width) of `level` for a packed h x w input: 2h x 2w at level 0, h x w at level 1,
    then halving, rounded up so that every packed pixel is covered."""
    return -(-h * 2 // 2 ** level), -(-w * 2 // 2 ** level)


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
        if precision == 'bfloat16' and not utils.cpu_supports_bfloat16():
            print('note: this CPU has no native bfloat16 (AVX512-BF16 or AMX): rendering in float32',
                  file=sys.stderr)
            precision = 'float32'
        if use_gpu and not utils.gpu_available():
            use_gpu = False     # runs on the CPU; TensorFlow would silently do the same
        self.level = level
        self.precision = precision
        self.tile = int(tile or 0)
        self.instance_norm_level_1 = instance_norm_level_1
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.weights = model.PyNETWeights(trainable=False)
            self.input = tf.placeholder(tf.float32, [1, None, None, 4], name='packed_raw')
            outputs = model.PyNET(self.input, instance_norm_level_1=instance_norm_level_1, weights=self.weights)
            self.output = outputs[level]
            variables = self.weights.in_creation_order()
        self.sess = tf.Session(graph=self.graph, config=utils.session_config(use_gpu, precision))
        utils.restore_variables(self.sess, variables, checkpoint_path)

    def render(self, packed, progress=None):
        """float32 [h, w, 4] packed RAW (any h, w >= 1) -> float32 [2h/2**level, 2w/2**level, 3], not clipped."""
        packed = np.asarray(packed, dtype=np.float32)
        if packed.ndim != 3 or packed.shape[2] != 4 or packed.shape[0] < 1 or packed.shape[1] < 1:
            raise UserError('packed RAW must be [h, w, 4] with h, w >= 1, got %s' % (packed.shape,))
        h, w = packed.shape[:2]
        out_h, out_w = output_size(h, w, self.level)
        padded = pad_to_multiple(packed, 16)
        result = self.sess.run(self.output, {self.input: padded[None]})[0]
        result = result[:out_h, :out_w]
        assert result.shape == (out_h, out_w, 3), result.shape
        return result

    def close(self):
        self.sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
