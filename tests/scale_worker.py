"""Subprocess side of tests/test_distribute.py: trains PyNET's level 5 with a plain MSE on
deterministic random batches through devices.py and mixed_precision.py and saves the final variables.

    python tests/scale_worker.py out=<file.npz> [replicas=N] [steps=K] [optimizer=sgd|adam]
                                 [precision=float32|mixed_float16|bfloat16] [fixed_batch=true]

replicas=N splits the CPU into N logical devices (MirroredStrategy); with TF_CONFIG set the
process is one worker of a multi-worker run and feeds its slice of every global batch.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

import utils

KEYS = {
    'out': utils.Key('', str, 'where to save the variables and losses (.npz)', required=True),
    'replicas': utils.Key(1, int, 'logical CPU devices to mirror over'),
    'steps': utils.Key(3, int, 'training steps'),
    'batch': utils.Key(4, int, 'global batch'),
    'size': utils.Key(32, int, 'packed patch size'),
    'optimizer': utils.Key('sgd', str, 'sgd or adam', choices=('sgd', 'adam')),
    'learning_rate': utils.Key(0.5, float, 'learning rate'),
    'precision': utils.Key('float32', str, 'compute precision', choices=('float32', 'mixed_float16', 'bfloat16')),
    'fixed_batch': utils.Key(False, bool, 'train on the same batch every step'),
    'seed': utils.Key(0, int, 'data seed'),
}


def global_batch(seed, step, batch, size):
    """The step's global batch: packed inputs and level-5 targets, the same in every process."""
    rng = np.random.default_rng([seed, step])
    x = rng.random((batch, size, size, 4), dtype=np.float32)
    y = rng.random((batch, size // 16, size // 16, 3), dtype=np.float32) * 0.6 + 0.2
    return x, y


def main(argv):
    config = utils.parse_args(argv, KEYS)
    utils.import_tensorflow()
    import tensorflow.compat.v1 as tf
    import devices
    import mixed_precision
    import model
    logical_cpus = devices.use_logical_cpus(config['replicas']) if config['replicas'] > 1 else None
    tf.disable_eager_execution()

    # An explicit graph, as train_model.py has: the float16 loss-scale optimiser fails to build
    # in the global default graph once TensorFlow's eager context has started (utils probes GPUs).
    with tf.Graph().as_default():
        dist = devices.Distribution(use_gpu=False, cluster=devices.read_cluster(), devices=logical_cpus)
        per_worker = dist.check_batch(config['batch'])
        size = config['size']
        x_in = tf.placeholder(tf.float32, [per_worker, size, size, 4])
        y_in = tf.placeholder(tf.float32, [per_worker, size // 16, size // 16, 3])
        mixed_precision.check_precision(config['precision'], use_gpu=False)
        with dist.scope():
            # Variables are created by the first replica's step (cheaper than model.create_weights()).
            weights = model.PyNETWeights()
            if config['optimizer'] == 'sgd':
                optimizer = tf.train.GradientDescentOptimizer(config['learning_rate'])
            else:
                optimizer = tf.train.AdamOptimizer(config['learning_rate'])
            optimizer = mixed_precision.wrap_optimizer(optimizer, config['precision'])

        def loss_fn(x, y):
            out = mixed_precision.generator_outputs(x, weights, config['precision'])[5]
            return {'loss': tf.reduce_mean(tf.square(out - y))}

        train_op, metrics = devices.build_train_op(dist, loss_fn, [x_in, y_in], optimizer,
                                                   weights.in_creation_order)
        session_config = mixed_precision.configure_session(devices.session_config(False), config['precision'])
        losses = []
        with dist.session(session_config) as sess:
            sess.run(tf.global_variables_initializer())
            begin = dist.worker_index * per_worker
            for step in range(config['steps']):
                x, y = global_batch(config['seed'], 0 if config['fixed_batch'] else step, config['batch'], size)
                feed = {x_in: x[begin:begin + per_worker], y_in: y[begin:begin + per_worker]}
                _, loss = sess.run([train_op, metrics['loss']], feed)
                losses.append(float(loss))
            values = sess.run(weights.in_creation_order())
    with utils.atomic_path(config['out']) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, losses=np.array(losses), replicas=dist.num_replicas,
                     **{'v%03d' % i: v for i, v in enumerate(values)})
    print('done: %s, losses %s' % (dist.describe(), ' '.join('%.5f' % l for l in losses)))


if __name__ == '__main__':
    utils.run_main(main)
