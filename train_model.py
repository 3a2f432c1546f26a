"""Trains PyNET level by level, the lowest resolution (5) first, as published.

    python train_model.py level=5
    python train_model.py level=4        # starts from the last level-5 checkpoint
    ...
    python train_model.py level=0

Batches stream from a tf.data pipeline (decoding, packing, resizing and augmentation run in
parallel and ahead of the model), so memory does not grow with train_size. Every eval_step
iterations (and at the last one) the test set is evaluated into <models_dir>/logs.txt, a few
output|target pictures go to <results_dir>, and the generator is saved to
<models_dir>/pynet_level_<L>_iteration_<i>.ckpt (its optimiser state to
<models_dir>/training_state/, TensorBoard summaries to <models_dir>/tensorboard/level_<L>/).

Scale: resume=true continues a killed run from its last checkpoint (checkpoints.py);
num_gpus=N mirrors the model over N GPUs, and with TF_CONFIG set each process is one worker of
a multi-worker run (devices.py); precision=mixed_float16|bfloat16 computes in 16 bits
(mixed_precision.py). TensorBoard summaries: summaries.py.
"""

import os

import numpy as np

import utils
from utils import Key, UserError

# ----------------------------------------------------------------------------------------
# configuration (key=value on the command line)

LEVEL_ITERATIONS = {5: 5000, 4: 5000, 3: 20000, 2: 20000, 1: 35000, 0: 100000}   # published
KEYS = {
    'level': Key(None, int, 'level to train: 5 first, then 4, ..., 0', choices=utils.LEVELS, required=True),
    'batch_size': Key(50, int, 'patches per iteration (small values can make training unstable)'),
    'train_size': Key(30000, int, 'random training patches the batches are drawn from, re-drawn every 1000 iterations'),
    'eval_step': Key(1000, int, 'evaluate, save pictures and a checkpoint every this many iterations'),
    'learning_rate': Key(5e-5, float, 'Adam learning rate'),
    'end_learning_rate': Key(None, float, 'learning rate at the last iteration, reached by a cosine decay from '
                             'learning_rate; none: constant, as published'),
    'content_weight': Key(1.0, float, 'weight of the VGG-19 content loss at levels 3..0 (published: 1); '
                          '0 leaves VGG-19 out of the training loss'),
    'restore_iter': Key(None, int, 'iteration of the level+1 checkpoint to start from; none: its last'),
    'init_checkpoint': Key(None, str, 'start from this checkpoint instead of level+1 (fine-tuning), e.g. '
                           'models/original/pynet_level_0.ckpt'),
    'num_train_iters': Key(None, int, 'iterations; none: the published 5000, 5000, 20000, 20000, 35000, 100000 for levels 5..0'),
    'vgg_dir': Key(utils.DEFAULT_VGG_PATH, str, 'MatConvNet imagenet-vgg-verydeep-19.mat (content loss)'),
    'dataset_dir': Key(utils.DEFAULT_DATASET_DIR, str, 'Zurich RAW-to-RGB dataset folder'),
    'models_dir': Key(utils.DEFAULT_MODELS_DIR, str, 'where checkpoints and logs.txt go (and level+1 is found)'),
    'results_dir': Key('results/', str, 'where the output|target pictures go'),
    'use_gpu': Key(True, bool, 'run on the GPU when there is one'),
    'seed': Key(0, int, 'seed of the patch sampling, augmentation and initial weights'),
    'resume': Key(False, bool, 'continue this level from its last checkpoint (after a crash or a kill)'),
    'num_gpus': Key(None, int, 'GPUs to split each batch over (MirroredStrategy); none: all visible ones'),
    'train_layers': Key('all', str, 'all: train every layer (published); new: only the layers this level adds '
                        'to level+1 (level 0: its upsampling and output), the rest kept as restored: a few '
                        'hundred iterations of it first keep a new random head from disturbing trained layers',
                        choices=('all', 'new')),
    'init_new_layers': Key('restored', str, 'restored: the layers this level adds start from the checkpoint it '
                           'starts from (published: their initial values, drawn at level 5); he: their '
                           'convolution kernels are drawn again, He-scaled (output layers excepted), so that '
                           'a deep new level passes its signal through from the first iteration',
                           choices=('restored', 'he')),
    'precision': Key('float32', str, 'float32; mixed_float16 (GPUs, loss scaling); bfloat16 (GPUs, '
                     'CPUs with AVX512-BF16/AMX)', choices=('float32', 'mixed_float16', 'bfloat16')),
}
USAGE = 'usage: python train_model.py level=<5..0> [key=value ...]'
NUM_VISUALS = 4          # test patches shown in results/ at every evaluation


# ----------------------------------------------------------------------------------------
# the graph pieces: input pipeline and per-replica loss

def input_pipeline(train_pairs, side, level, config, first_iteration=0, shard=(0, 1)):
    """The training batches as a tf.data.Dataset of (uint16 planes [B, s/2, s/2, 4], uint8 targets).

    shard=(worker, workers): this worker's slice of every global batch.
    """
    import load_dataset
    return load_dataset.train_dataset(train_pairs, side, level, config['batch_size'], config['train_size'],
                                      config['num_train_iters'], config['seed'], first_iteration, shard=shard)


def level_graph(level, planes, targets, vgg_net, weights=None, evaluation=False, precision='float32',
                on_gpu=False, content_weight=1.0):
    """(output, target, metrics) of PyNET's level-`level` output on a batch; metrics are scalars.

    Training metrics: loss, mse, psnr (of the batch's MSE), and content where the level's loss
    uses it. With evaluation=True: content at every level, psnr as the mean of the images'
    PSNRs, and at levels 0-1 MS-SSIM (or SSIM where the patches are too small for 5 scales).
    precision: the generator's compute precision (mixed_precision.py); losses are computed in float32.
    content_weight multiplies the published weight of the content loss (1 at levels 3..0).
    """
    import load_dataset
    import losses
    import mixed_precision
    import model
    import tensorflow.compat.v1 as tf
    raw, target = load_dataset.to_float(planes, targets)
    weights = weights if weights is not None else model.PyNETWeights()
    output = mixed_precision.generator_outputs(raw, weights, precision, on_gpu, instance_norm=True,
                                               instance_norm_level_1=False)[level]
    output.shape.assert_is_compatible_with(target.shape)
    mse = losses.mse(output, target)
    uses_content = losses.LEVEL_WEIGHTS[level][1] * content_weight > 0
    content = losses.content_loss(vgg_net, output, target) if uses_content or evaluation else None
    ssim = losses.ssim(output, target) if level == 0 else None
    metrics = {'loss': losses.level_loss(level, mse, content, ssim, content_weight), 'mse': mse,
               'psnr': losses.psnr(mse)}
    if content is not None:
        metrics['content'] = content
    if evaluation:       # PSNR of each image, averaged, as evaluate_accuracy.py reports it
        metrics['psnr'] = tf.reduce_mean(losses.psnr(losses.per_image_mse(output, target)))
    if evaluation and level in losses.MS_SSIM_LEVELS:
        name, value = losses.structural_metric(output, target)
        metrics[name.lower()] = value
    return output, target, metrics


def build_loss(level, planes, targets, vgg_net, weights=None, precision='float32', on_gpu=False,
               content_weight=1.0):
    """The per-replica training loss: a dict of scalar tensors with 'loss' (means over the batch)."""
    return level_graph(level, planes, targets, vgg_net, weights, precision=precision, on_gpu=on_gpu,
                       content_weight=content_weight)[2]


def make_optimizer(learning_rate, precision='float32'):
    """Adam, as published (devices.build_train_op applies it to the generator variables only),
    with dynamic loss scaling for float16."""
    import mixed_precision
    import tensorflow.compat.v1 as tf
    return mixed_precision.wrap_optimizer(tf.train.AdamOptimizer(learning_rate), precision)


def scheduled_learning_rate(iteration, num_iters, learning_rate, end_learning_rate=None):
    """The learning rate of an iteration (1..num_iters): constant, or a cosine decay that starts
    at learning_rate and reaches end_learning_rate at the last iteration."""
    if end_learning_rate is None or num_iters < 2:
        return learning_rate
    progress = (iteration - 1) / (num_iters - 1)
    return end_learning_rate + (learning_rate - end_learning_rate) * 0.5 * (1 + np.cos(np.pi * progress))



# ----------------------------------------------------------------------------------------
# evaluation on the test set

METRIC_ORDER = ('loss', 'content', 'mse', 'psnr', 'ms-ssim', 'ssim')


def evaluate(sess, test_iterator, metrics, output, target):
    """Means of the metrics over the whole test set (weighted by batch size), and a few visuals."""
    import tensorflow.compat.v1 as tf
    sess.run(test_iterator.initializer)
    sums, count, outputs, targets = {name: 0.0 for name in metrics if name != 'count'}, 0, [], []
    while True:
        try:
            wanted = NUM_VISUALS - sum(len(o) for o in outputs)
            values, out, tgt = sess.run([metrics, output, target]) if wanted > 0 else \
                (sess.run(metrics), None, None)
        except tf.errors.OutOfRangeError:
            break
        n = values.pop('count')
        for name, value in values.items():
            sums[name] += float(value) * n      # the metrics are means over the batch
        count += n
        if wanted > 0:
            outputs.append(out[:wanted])
            targets.append(tgt[:wanted])
    return {name: total / count for name, total in sums.items()}, (np.concatenate(outputs), np.concatenate(targets))


def log_line(level, iteration, train_loss, test):
    parts = ['%s %.6g' % (name, test[name]) for name in METRIC_ORDER if name in test]
    return 'level %d, iteration %d: train loss %.6g | test %s' % (level, iteration, train_loss, ', '.join(parts))


def summarize(writer, iteration, train_loss, test, visuals):
    """TensorBoard: the training loss, every test metric and the output|target pictures."""
    values = {'train/loss': train_loss}
    values.update({'test/' + name: value for name, value in test.items()})
    writer.scalars(iteration, values)
    writer.images(iteration, 'test/output_target', [np.concatenate(pair, axis=1) for pair in zip(*visuals)])
    writer.flush()


def save_visuals(results_dir, level, iteration, visuals):
    import image_io
    for k, (out, tgt) in enumerate(zip(*visuals)):
        path = os.path.join(results_dir, 'pynet_level_%d_iteration_%d_img_%d.jpg' % (level, iteration, k))
        image_io.save_image(path, np.concatenate([out, tgt], axis=1))     # output | target


# ----------------------------------------------------------------------------------------

def check_config(config):
    for name in ('batch_size', 'train_size', 'eval_step', 'num_train_iters'):
        if config[name] < 1:
            raise UserError('%s=%s: must be at least 1' % (name, config[name]))
    if not config['learning_rate'] > 0:
        raise UserError('learning_rate=%s: must be positive' % config['learning_rate'])
    if config['end_learning_rate'] is not None and not 0 <= config['end_learning_rate'] <= config['learning_rate']:
        raise UserError('end_learning_rate=%s: must be between 0 and learning_rate=%s (it decays to it)'
                        % (config['end_learning_rate'], config['learning_rate']))
    if not config['content_weight'] >= 0:
        raise UserError('content_weight=%s: must be 0 or more' % config['content_weight'])
    if config['num_gpus'] is not None and config['num_gpus'] < 0:
        raise UserError('num_gpus=%d: must be 0 or more' % config['num_gpus'])
    if config['init_checkpoint'] is not None and config['restore_iter'] is not None:
        raise UserError('init_checkpoint= and restore_iter= both choose the starting weights: pass one of them')
    if config['level'] == 5 and config['restore_iter'] is not None:
        raise UserError('restore_iter=%d: level 5 starts from scratch; restore_iter picks the level+1 '
                        'checkpoint of levels 4..0' % config['restore_iter'])


def trained_variables(weights, level, train_layers):
    """The variables Adam updates: all of PyNET's (published), or those of the layers `level` adds (new)."""
    import model
    if train_layers == 'new':
        return weights.of_layers(model.added_layers(level))
    return weights.in_creation_order()


def he_initialisation(weights, level):
    """An op drawing the kernels of the layers `level` adds (output layers excepted) from a normal
    distribution of variance 2 / fan-in (He et al., 2015); fan-in of a stride-2 transposed convolution: a
    quarter of its kernel's taps times its input channels."""
    import model
    import tensorflow.compat.v1 as tf
    assigns = []
    for layer in model.added_layers(level):
        if isinstance(layer, model.Output):
            continue
        for var in weights.of_layers([layer]):
            shape = var.shape.as_list()
            if len(shape) != 4:         # biases (and instance-norm scales and shifts) keep their values
                continue
            fan_in = shape[0] * shape[1] * (shape[3] / 4 if isinstance(layer, model.Upsample) else shape[2])
            assigns.append(var.assign(tf.random.normal(shape, stddev=np.sqrt(2.0 / fan_in))))
    return tf.group(*assigns)


def init_checkpoint(path):
    """The checkpoint prefix init_checkpoint= names (the prefix or its .index file); it must exist."""
    import checkpoints
    prefix = path[:-len('.index')] if path.endswith('.index') else path
    if not checkpoints.checkpoint_exists(prefix):
        raise UserError('init_checkpoint=%s: no checkpoint there (%s.index not found); give the prefix of a '
                        'PyNET checkpoint, e.g. models/original/pynet_level_0.ckpt' % (path, prefix))
    return prefix


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    level = config['level']
    if config['num_train_iters'] is None:
        config['num_train_iters'] = LEVEL_ITERATIONS[level]
    check_config(config)
    num_iters, eval_step, models_dir = config['num_train_iters'], config['eval_step'], config['models_dir']
    utils.import_tensorflow()
    import tensorflow.compat.v1 as tf
    import checkpoints
    import devices
    import load_dataset
    import losses
    import mixed_precision
    import model
    import summaries
    import vgg
    cluster = devices.read_cluster()
    logical_cpus = devices.cpu_replica_devices()      # before TensorFlow's runtime starts
    start_iteration = checkpoints.resume_point(models_dir, level)[0] if config['resume'] else 0
    if start_iteration >= num_iters:
        print('level %d is already trained to iteration %d (num_train_iters=%d): nothing to resume'
              % (level, start_iteration, num_iters))
        return 0

    # Everything that can be wrong with the user's files is checked before the graph is built.
    train_pairs = load_dataset.list_pairs(config['dataset_dir'], 'train')
    test_pairs = load_dataset.list_pairs(config['dataset_dir'], 'test')
    side = load_dataset.patch_side(train_pairs)
    load_dataset.check_headers(train_pairs[:1] + test_pairs, side)
    vgg_net = vgg.VGG19(config['vgg_dir'])
    start_from = None
    if config['init_checkpoint'] is not None and not start_iteration:     # fine-tuning
        start_from = init_checkpoint(config['init_checkpoint'])
    elif level < 5 and not start_iteration:       # level L continues from level L+1's weights
        start_from = checkpoints.find_checkpoint(models_dir, level + 1, config['restore_iter'])[0]
    target_side = load_dataset.target_side(side, level)
    if config['train_size'] > len(train_pairs):
        print('train_size=%d: the dataset has %d training patches; using all of them'
              % (config['train_size'], len(train_pairs)))
    if level in losses.MS_SSIM_LEVELS and not losses.ms_ssim_fits(target_side):
        print('note: ' + losses.ms_ssim_note(target_side))
    precision = mixed_precision.check_precision(config['precision'], config['use_gpu'])
    on_gpu = config['use_gpu'] and devices.gpu_available()
    if precision == 'mixed_float16' and not on_gpu:
        print('note: float16 runs slowly on a CPU; it is meant for GPUs (bfloat16 suits CPUs with AMX)')

    # -- graph: streamed training batches -> PyNET -> loss -> Adam; the test set through the same weights
    # Replicas: one device, num_gpus local GPUs (MirroredStrategy), or the workers of TF_CONFIG.
    graph = tf.Graph()
    with graph.as_default():
        dist = devices.Distribution(config['num_gpus'], config['use_gpu'], cluster, devices=logical_cpus)
        dist.check_batch(config['batch_size'])
        tf.set_random_seed(config['seed'])
        # A decaying learning rate is fed at every step; a constant one is part of the graph.
        decays = config['end_learning_rate'] is not None
        learning_rate = tf.placeholder_with_default(np.float32(config['learning_rate']), [], 'learning_rate') \
            if decays else config['learning_rate']
        with dist.scope():
            weights = model.PyNETWeights()       # variables appear with the first replica's graph
            optimizer = make_optimizer(learning_rate, precision)
        train_iterator = tf.data.make_initializable_iterator(input_pipeline(
            train_pairs, side, level, config, start_iteration, (dist.worker_index, dist.num_workers)))
        train_op, train_metrics = devices.build_train_op(
            dist, lambda planes, targets: build_loss(level, planes, targets, vgg_net, weights, precision, on_gpu,
                                                     config['content_weight']),
            train_iterator.get_next(), optimizer, lambda: trained_variables(weights, level, config['train_layers']))
        generator_vars = weights.in_creation_order()

        test_iterator = tf.data.make_initializable_iterator(
            load_dataset.test_dataset(test_pairs, side, level, config['batch_size']))
        test_output, test_target, test_metrics = level_graph(
            level, *test_iterator.get_next(), vgg_net, weights, evaluation=True, precision=precision,
            on_gpu=on_gpu, content_weight=config['content_weight'])
        test_metrics['count'] = tf.shape(test_output)[0]
        level_checkpoints = checkpoints.Checkpoints(models_dir, level, generator_vars, dist.is_chief)
        init_all = tf.global_variables_initializer()
        # When the generator is restored, drawing its 47M random initial values would be wasted.
        restored = {v.op.name for v in generator_vars}
        init_optimizer = tf.variables_initializer([v for v in tf.global_variables() if v.op.name not in restored])
        redraw = he_initialisation(weights, level) if config['init_new_layers'] == 'he' else None

    print('level %d: %d iterations of batch %d on %d training patches (%dx%d mosaics), %d test patches; %s%s'
          % (level, num_iters, config['batch_size'], len(train_pairs), side, side, len(test_pairs),
             dist.describe(), '' if precision == 'float32' else ', ' + precision))
    if config['train_layers'] == 'new':
        print('training only the layers level %d adds (%s), the others kept as restored'
              % (level, ', '.join(layer.name for layer in model.added_layers(level))))
    session_config = mixed_precision.configure_session(devices.session_config(config['use_gpu']), precision,
                                                       on_gpu)
    with graph.as_default(), dist.session(session_config) as sess:
        sess.run(train_iterator.initializer)
        if start_iteration:
            sess.run(init_all)     # every worker runs the same initialisers (they synchronise)
            level_checkpoints.resume(sess)
            print('resuming from %s' % checkpoints.checkpoint_path(models_dir, level, start_iteration))
        elif start_from and not dist.cluster:
            sess.run(init_optimizer)
            checkpoints.restore_variables(sess, generator_vars, start_from)
            print('starting from %s' % start_from)
        else:
            sess.run(init_all)
            if start_from:
                checkpoints.restore_variables(sess, generator_vars, start_from)
            print('starting from %s' % (start_from or 'random weights'))
        if redraw is not None and not start_iteration:
            sess.run(redraw)
            print('drew the kernels of the layers level %d adds again, He-scaled (init_new_layers=he)' % level)
        summary_writer = summaries.SummaryWriter(models_dir, level, resume_from=start_iteration or None) \
            if dist.is_chief else None

        # -- the training loop
        train_losses = []
        bar = utils.progress(total=num_iters, initial=start_iteration, desc='level %d' % level, unit='it')
        try:
            for iteration in range(start_iteration + 1, num_iters + 1):
                feed = {learning_rate: scheduled_learning_rate(iteration, num_iters, config['learning_rate'],
                                                               config['end_learning_rate'])} if decays else None
                _, loss = sess.run([train_op, train_metrics['loss']], feed)
                train_losses.append(loss)
                bar.set_postfix(loss='%.4g' % loss, refresh=False)
                bar.update(1)
                if dist.is_chief and (iteration % eval_step == 0 or iteration == num_iters):
                    # The chief evaluates and saves; other workers wait for it at the next step.
                    test, visuals = evaluate(sess, test_iterator, test_metrics, test_output, test_target)
                    train_loss = float(np.mean(train_losses))
                    line = log_line(level, iteration, train_loss, test)
                    bar.write(line)
                    save_visuals(config['results_dir'], level, iteration, visuals)
                    summarize(summary_writer, iteration, train_loss, test, visuals)
                    # Optimiser state, then the checkpoint, then the line in logs.txt: a kill at
                    # any moment leaves the last committed iteration to resume from.
                    level_checkpoints.save(sess, iteration, line)
                    train_losses = []
        except tf.errors.OpError as error:
            found = load_dataset.user_error(error)     # a damaged patch met on the way
            if found is None:
                raise
            raise found from None
        finally:
            bar.close()
            if summary_writer is not None:
                summary_writer.close()
    if dist.is_chief:
        print('saved %s' % checkpoints.checkpoint_path(models_dir, level, num_iters))


if __name__ == '__main__':
    utils.run_main(main)
