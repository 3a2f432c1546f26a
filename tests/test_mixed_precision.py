"""bfloat16 training on a CPU (oneDNN's graph rewrite): level 0's loss, whose SSIM term oneDNN would otherwise
compute in bfloat16, stays finite and near float32's."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import devices
import mixed_precision
import train_model
import utils


@pytest.mark.skipif(not utils.cpu_supports_bfloat16(),
                    reason='this CPU has no native bfloat16 (AVX512-BF16 or AMX): oneDNN does not rewrite to bfloat16')
@pytest.mark.skipif(os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1').strip().lower() in ('0', 'false'),
                    reason='TF_ENABLE_ONEDNN_OPTS=0: the bfloat16 rewrite is oneDNN\'s')
def test_level_0_loss_and_step_are_finite_in_bfloat16():
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 1021, (2, 32, 32, 4)).astype(np.uint16)
    targets = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    losses = {}
    for precision in ('float32', 'bfloat16'):
        graph = tf.Graph()
        with graph.as_default():
            tf.set_random_seed(0)
            metrics = train_model.build_loss(0, tf.constant(planes), tf.constant(targets), None,
                                             precision=precision, content_weight=0.0)
            step = tf.train.AdamOptimizer(1e-4).minimize(metrics['loss'])
            init = tf.global_variables_initializer()
        config = mixed_precision.configure_session(devices.session_config(use_gpu=False), precision)
        with tf.Session(graph=graph, config=config) as sess:
            sess.run(init)
            losses[precision] = [sess.run([step, metrics['loss']])[1] for _ in range(2)]
    assert np.isfinite(losses['bfloat16']).all(), losses
    # Rounded, not broken (and really rewritten: not float32's numbers to the last bit).
    np.testing.assert_allclose(losses['bfloat16'], losses['float32'], rtol=0.05)
    assert losses['bfloat16'] != losses['float32']
