"""Classical baselines for a synthetic dataset of make_synthetic_dataset.py: what a hand-made
camera pipeline achieves on the same test patches PyNET is evaluated on.

    python baseline.py dataset_dir=demo_output/raw_images/ output_dir=demo_output/baseline/

Two pipelines:
  isp     bilinear demosaicing, then the TRUE white balance, exposure, colour matrix, sRGB
          gamma and tone curve the dataset was made with (an ISP tuned perfectly to this
          camera and every scene; only demosaicing and noise are left to get wrong);
  libraw  LibRaw's own pipeline through rawpy (AHD demosaicing, the DNG's white balance and
          colour matrix, its default gamma and automatic brightness), as `dcraw -w` would do.
Prints PSNR and SSIM (and MS-SSIM where patches are large enough) over the test patches,
writes them to <output_dir>/metrics.json and renders every full-resolution RAW of the
dataset with each pipeline to <output_dir>/<name>_<method>.png.
"""

import json
import os
import tempfile

import numpy as np

import camera_pipeline as cp
import image_io
import make_synthetic_dataset as msd
import utils
from utils import Key, UserError

METHODS = ('isp', 'libraw')
NAMES = {'isp': 'classical ISP (bilinear, true parameters)', 'libraw': 'LibRaw (AHD, DNG metadata)'}
KEYS = {
    'dataset_dir': Key('demo_output/raw_images/', str, 'a dataset made by make_synthetic_dataset.py'),
    'output_dir': Key('demo_output/baseline/', str, 'where metrics.json and the rendered photos go'),
    'method': Key('both', str, 'pipeline to run', choices=METHODS + ('both',)),
    'max_patches': Key(0, int, 'evaluate only the first N test patches (0: all)'),
}
USAGE = 'python baseline.py [key=value ...]   classical pipelines on a synthetic dataset, PSNR/SSIM'


def render_isp(raw_dn, xyz_to_cam, scene, config):
    """Sensor mosaic -> sRGB photo in [0, 1] with the true parameters of its scene."""
    bayer = cp.from_sensor(raw_dn, config['black_level'], config['white_level'])
    camera = cp.bilinear_demosaic(np.clip(bayer, 0.0, 1.0))
    return cp.process(camera, xyz_to_cam, **scene)


def render_libraw(raw_dn, xyz_to_cam, scene, config):
    """Sensor mosaic -> sRGB photo in [0, 1] by LibRaw, from a DNG carrying the scene's metadata."""
    import rawpy
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'patch.dng')
        image_io.write_dng(path, raw_dn, cfa_pattern='RGGB', black_level=config['black_level'],
                           white_level=config['white_level'], color_matrix=xyz_to_cam,
                           as_shot_neutral=cp.as_shot_neutral(scene['red_gain'], scene['blue_gain']))
        with rawpy.imread(path) as raw:
            rgb = raw.postprocess(use_camera_wb=True, output_color=rawpy.ColorSpace.sRGB, user_flip=0)
    assert rgb.shape == raw_dn.shape + (3,), rgb.shape
    return rgb / 255.0


RENDERERS = {'isp': render_isp, 'libraw': render_libraw}


def scene_of(record):
    return {k: record[k] for k in ('red_gain', 'blue_gain', 'exposure')}


def image_metrics(outputs, targets):
    """Per-image PSNR, SSIM and (where the size allows 5 scales) MS-SSIM, max value 1.

    Computed as evaluate_accuracy.py does: PSNR from each image's MSE, TensorFlow's
    tf.image.ssim / ssim_multiscale with their defaults, losses.ms_ssim_fits for the size.
    """
    import losses
    import tensorflow as tf
    outputs = np.clip(np.asarray(outputs, np.float32), 0.0, 1.0)
    targets = np.asarray(targets, np.float32)
    assert outputs.shape == targets.shape and outputs.ndim == 4, (outputs.shape, targets.shape)
    mse = np.mean((outputs.astype(np.float64) - targets) ** 2, axis=(1, 2, 3))
    psnr = losses.psnr(mse)
    ssim = tf.image.ssim(tf.constant(outputs), tf.constant(targets), max_val=1.0).numpy()
    result = {'psnr': psnr, 'ssim': ssim, 'ms_ssim': None}
    if all(losses.ms_ssim_fits(side) for side in outputs.shape[1:3]):
        result['ms_ssim'] = tf.image.ssim_multiscale(tf.constant(outputs), tf.constant(targets),
                                                     max_val=1.0).numpy()
    return result


def evaluate(dataset_dir, methods, max_patches=0):
    """{method: {'psnr', 'ssim', 'ms_ssim', 'patches'}} means over the dataset's test patches."""
    info = msd.read_info(dataset_dir)
    config, xyz_to_cam = info['config'], np.array(info['xyz_to_cam'])
    records = info['test'][:max_patches or None]
    outputs = {m: [] for m in methods}
    targets = []
    for record in utils.progress(records, desc='baseline', unit='patch'):
        raw = image_io.read_raw_png(os.path.join(dataset_dir, 'test', 'huawei_raw', '%d.png' % record['index']))
        targets.append(image_io.read_rgb_image(
            os.path.join(dataset_dir, 'test', 'canon', '%d.jpg' % record['index'])) / 255.0)
        for method in methods:
            outputs[method].append(RENDERERS[method](raw, xyz_to_cam, scene_of(record), config))
    summary = {}
    for method in methods:
        scores = image_metrics(np.stack(outputs[method]), np.stack(targets))
        summary[method] = {k: (None if v is None else float(np.mean(v))) for k, v in scores.items()}
        summary[method]['patches'] = len(records)
    return summary


def render_full_resolution(dataset_dir, methods, output_dir):
    """Renders each full-resolution RAW of the dataset with each pipeline; returns the paths."""
    info = msd.read_info(dataset_dir)
    config, xyz_to_cam = info['config'], np.array(info['xyz_to_cam'])
    written = []
    for record in info['full_resolution']:
        raw = image_io.read_raw_png(
            os.path.join(dataset_dir, 'test', 'huawei_full_resolution', record['name'] + '.png'))
        for method in methods:
            path = os.path.join(output_dir, '%s_%s.png' % (record['name'], method))
            image_io.save_image(path, RENDERERS[method](raw, xyz_to_cam, scene_of(record), config))
            written.append(path)
    return written


def format_row(name, scores):
    ms = '' if scores.get('ms_ssim') is None else ', MS-SSIM: %.4f' % scores['ms_ssim']
    return '%s: PSNR: %.2f dB, SSIM: %.4f%s' % (name, scores['psnr'], scores['ssim'], ms)


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    methods = METHODS if config['method'] == 'both' else (config['method'],)
    if config['max_patches'] < 0:
        raise UserError('max_patches=%d: must be >= 0' % config['max_patches'])
    utils.import_tensorflow()      # the metrics are TensorFlow's
    summary = evaluate(config['dataset_dir'], methods, config['max_patches'])
    written = render_full_resolution(config['dataset_dir'], methods, config['output_dir'])
    path = os.path.join(config['output_dir'], 'metrics.json')
    with utils.atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(summary, f, indent=1)
    for method in methods:
        print(format_row(NAMES[method], summary[method]))
    print('wrote %s and %s' % (path, ', '.join(written)))


if __name__ == '__main__':
    utils.run_main(main)
