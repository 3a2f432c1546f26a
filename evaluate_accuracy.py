"""Accuracy of a trained PyNET on the test patches of the Zurich dataset: mean PSNR and MS-SSIM.

    python evaluate_accuracy.py orig=true                 # the published model
    python evaluate_accuracy.py level=0 [restore_iter=N]  # your own checkpoints (default: the last)

Level-0 outputs (448x448 for Zurich) are compared with the DSLR photos; the outputs are
clipped to [0, 1], as in a rendered picture. PSNR is computed per image from its MSE and
averaged; MS-SSIM (5 scales, max value 1) likewise. Patches too small for 5 scales (under
161 px) get single-scale SSIM, and the output says so. For level=L > 0, the level-L output
is compared with the photo resized for that level, as in training.
"""

import os

import numpy as np

import utils
from utils import Key

KEYS = {
    'level': Key(0, int, 'level of the checkpoint and of the output compared', choices=utils.LEVELS),
    'orig': Key(False, bool, 'evaluate the published model (models_dir/original/pynet_level_0.ckpt)'),
    'restore_iter': Key(None, int, 'iteration of the checkpoint to load; none: the last saved'),
    'dataset_dir': Key(utils.DEFAULT_DATASET_DIR, str, 'Zurich RAW-to-RGB dataset folder (uses test/)'),
    'models_dir': Key(utils.DEFAULT_MODELS_DIR, str, 'folder of the checkpoints'),
    'batch_size': Key(10, int, 'test patches per step'),
    'use_gpu': Key(True, bool, 'run on the GPU when there is one'),
}
USAGE = 'usage: python evaluate_accuracy.py orig=true | level=<0..5> [restore_iter=N] [key=value ...]'


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    level = config['level']
    if config['orig'] and level != 0:
        raise utils.UserError('orig=true evaluates the published level-0 model: drop level=%d' % level)
    if config['batch_size'] < 1:
        raise utils.UserError('batch_size=%d: must be at least 1' % config['batch_size'])

    utils.import_tensorflow()
    import tensorflow.compat.v1 as tf
    import checkpoints
    import devices
    import load_dataset
    import losses
    import model
    pairs = load_dataset.list_pairs(config['dataset_dir'], 'test')
    side = load_dataset.patch_side(pairs)
    load_dataset.check_headers(pairs, side)
    checkpoint, label = checkpoints.find_checkpoint(config['models_dir'], level, config['restore_iter'],
                                                    config['orig'])
    target_side = load_dataset.target_side(side, level)
    graph = tf.Graph()
    with graph.as_default():
        iterator = tf.data.make_initializable_iterator(
            load_dataset.test_dataset(pairs, side, level, config['batch_size']))
        raw, target = load_dataset.to_float(*iterator.get_next())
        output = tf.clip_by_value(model.PyNET(raw, instance_norm=True, instance_norm_level_1=False)[level], 0.0, 1.0)
        per_image_mse = losses.per_image_mse(output, target)
        similarity_name, similarity = losses.structural_metric(output, target, per_image=True)
        variables = model.generator_variables()

    if similarity_name != 'MS-SSIM':
        print('note: ' + losses.ms_ssim_note(target_side))
    mses, similarities = [], []
    with tf.Session(graph=graph, config=devices.session_config(config['use_gpu'])) as sess:
        checkpoints.restore_variables(sess, variables, checkpoint)
        sess.run(iterator.initializer)
        with utils.progress(total=len(pairs), desc='evaluating %s' % os.path.basename(checkpoint),
                            unit='patch') as bar:
            while True:
                try:
                    m, s = sess.run([per_image_mse, similarity])
                except tf.errors.OutOfRangeError:
                    break
                except tf.errors.OpError as error:
                    found = load_dataset.user_error(error)
                    if found is None:
                        raise
                    raise found from None
                mses.append(m)
                similarities.append(s)
                bar.update(len(m))
    mses = np.concatenate(mses).astype(np.float64)
    psnr = float(np.mean(losses.psnr(mses)))
    print('%d test patches, level %d, checkpoint %s' % (len(mses), level, checkpoint))
    print('PSNR: %.4f, %s: %.4f' % (psnr, similarity_name, float(np.mean(np.concatenate(similarities)))))


if __name__ == '__main__':
    utils.run_main(main)
