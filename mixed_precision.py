"""Mixed precision: the generator computes in 16 bits while its variables stay float32.

precision=float32 (default); mixed_float16: float16 compute with dynamic loss scaling (for
GPUs; it also runs, slowly, on a CPU); bfloat16: bfloat16 compute on a GPU, and on a CPU with
AVX512-BF16 or AMX oneDNN's graph rewrite, switched on in the session's config.
"""

import os

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

import devices
import model
import utils
from utils import UserError

PRECISIONS = ('float32', 'mixed_float16', 'bfloat16')


def check_precision(precision, use_gpu):
    """UserError when `precision` cannot run here; returns it otherwise."""
    if precision not in PRECISIONS:
        raise UserError('precision=%s: must be one of %s' % (precision, ', '.join(PRECISIONS)))
    if precision == 'bfloat16' and not (use_gpu and devices.gpu_available()):
        if not utils.cpu_supports_bfloat16():
            raise UserError('precision=bfloat16 needs a GPU or a CPU with AVX512-BF16/AMX: '
                            'use precision=float32 on this machine')
        if os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1').strip().lower() in ('0', 'false'):
            # The bfloat16 rewrite is oneDNN's; without oneDNN it silently computes in float32.
            raise UserError('precision=bfloat16 on a CPU needs oneDNN: unset TF_ENABLE_ONEDNN_OPTS=0')
    return precision


def compute_dtype(precision, on_gpu):
    """The dtype the generator computes in (variables stay float32)."""
    if precision == 'mixed_float16':
        return tf.float16
    if precision == 'bfloat16' and on_gpu:
        return tf.bfloat16
    return tf.float32    # float32, and bfloat16 on CPU: oneDNN's graph rewrite converts the ops


class CastWeights:
    """A view of a PyNETWeights store that hands out its float32 variables cast to `dtype`."""

    def __init__(self, weights, dtype):
        self.weights = weights
        self.dtype = dtype

    def get(self, key, shape, initial_value):
        return tf.cast(self.weights.get(key, shape, initial_value), self.dtype)


def generator_outputs(packed_raw, weights, precision='float32', on_gpu=False, **model_options):
    """PyNET's six outputs (float32) for float32 input, computed in the precision's dtype."""
    dtype = compute_dtype(precision, on_gpu)
    if dtype == tf.float32:
        return model.PyNET(packed_raw, weights=weights, **model_options)
    outputs = model.PyNET(tf.cast(packed_raw, dtype), weights=CastWeights(weights, dtype), **model_options)
    return [tf.cast(o, tf.float32) for o in outputs]


def wrap_optimizer(optimizer, precision):
    """Adds dynamic loss scaling for float16 (its gradients underflow without it).

    Build the training graph inside an explicit `tf.Graph().as_default()`: in the global default
    graph, after TensorFlow's eager context has started, this optimiser fails to build.
    """
    if precision != 'mixed_float16':
        return optimizer
    return tf.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, loss_scale='dynamic')


# Ops oneDNN's bfloat16 rewrite must leave in float32: the generator has none of them, but SSIM (level 0's
# loss, tf.image.ssim) filters with depthwise convolutions, and in bfloat16 its loss is NaN from the first step.
# The rewrite reads this list from the environment when a session first optimises its graph.
FLOAT32_OPS_VARIABLE = 'TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_ALLOWLIST_REMOVE'
FLOAT32_OPS = ('DepthwiseConv2dNative', 'DepthwiseConv2dNativeBackpropInput', 'DepthwiseConv2dNativeBackpropFilter')


def configure_session(config, precision, on_gpu=False):
    """`config` with oneDNN's bfloat16 rewrite turned on for precision=bfloat16 on a CPU, losses kept in float32."""
    if precision == 'bfloat16' and not on_gpu:
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = RewriterConfig.ON
        listed = [op for op in os.environ.get(FLOAT32_OPS_VARIABLE, '').split(',') if op]
        os.environ[FLOAT32_OPS_VARIABLE] = ','.join(listed + [op for op in FLOAT32_OPS if op not in listed])
    return config
