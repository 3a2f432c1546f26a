"""The offline demo (`make demo`): the whole system on a synthetic dataset in minutes.

Runs the real scripts one after the other, as a user would: make_synthetic_dataset.py,
train_model.py for levels 5 -> 0 (briefly), evaluate_accuracy.py, test_model.py on the
full-resolution RAW, baseline.py; then prints where the pictures are and a table of PSNR /
SSIM for PyNET and the classical baselines on the same test patches.
Everything goes under output_dir (default demo_output/); nothing else is touched.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

import baseline
import image_io
import utils
from utils import Key, UserError

REPO = os.path.dirname(os.path.abspath(__file__))
TRAIN_LEVELS = (5, 4, 3, 2, 1, 0)
KEYS = {
    'output_dir': Key('demo_output/', str, 'folder for the dataset, checkpoints, logs and pictures'),
    'patch_size': Key(64, int, 'side of the training/test mosaics (multiple of 32)'),
    'train_patches': Key(400, int, 'synthetic training patches'),
    'test_patches': Key(24, int, 'synthetic test patches'),
    'iterations': Key('200,150,150,150,200,150', str, 'training iterations of levels 5,4,3,2,1,0'),
    'batch_sizes': Key('16,16,8,8,4,4', str, 'batch sizes of levels 5,4,3,2,1,0'),
    'learning_rate': Key(2e-4, float, 'Adam learning rate (the published 5e-5 is tuned for far longer runs)'),
    'seed': Key(0, int, 'seed of the synthetic dataset'),
    'vgg_dir': Key(utils.DEFAULT_VGG_PATH, str, 'VGG-19 .mat; when absent, a random-weight one is made'),
    'train': Key(True, bool, 'false: skip making data and training, evaluate the checkpoints already there'),
}
USAGE = 'python demo.py [key=value ...]   the offline demo: synthetic data, brief training, scores'


def per_level(text, key):
    values = [v.strip() for v in text.split(',') if v.strip()]
    if len(values) != len(TRAIN_LEVELS):
        raise UserError('%s=%s: give %d comma-separated numbers, for levels %s'
                        % (key, text, len(TRAIN_LEVELS), ','.join(map(str, TRAIN_LEVELS))))
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        raise UserError('%s=%s: expected whole numbers' % (key, text))
    if min(numbers) < 1:
        raise UserError('%s=%s: every number must be at least 1' % (key, text))
    return dict(zip(TRAIN_LEVELS, numbers))


class Steps:
    """Runs scripts as subprocesses, echoing their output and timing them."""

    def __init__(self):
        self.times = []

    def run(self, title, script, *args, capture=False):
        command = [sys.executable, os.path.join(REPO, script)] + [str(a) for a in args]
        print('\n=== %s\n$ %s' % (title, ' '.join(['python', script] + [str(a) for a in args])), flush=True)
        start = time.time()
        result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE if capture else None, text=True)
        self.times.append((title, time.time() - start))
        if capture and result.stdout:
            print(result.stdout, end='', flush=True)
        if result.returncode != 0:
            raise UserError('%s failed (exit status %d): see its message above' % (script, result.returncode))
        return result.stdout


def vgg_file(config, out):
    """The real VGG-19 if present, else a random-weight .mat with its structure (and a warning)."""
    if os.path.isfile(config['vgg_dir']):
        return config['vgg_dir'], True
    path = os.path.join(out, 'vgg_random_weights.mat')
    if not os.path.isfile(path):
        utils.import_tensorflow()
        import vgg
        vgg.write_random_vgg(path)
    return path, False


def parse_accuracy(text):
    """('PSNR', psnr, 'MS-SSIM' or 'SSIM', value) from evaluate_accuracy.py's output."""
    match = re.search(r'PSNR:\s*([-\d.]+)\s*(?:dB)?,\s*(MS-SSIM|SSIM):\s*([-\d.]+)', text)
    if not match:
        raise UserError('could not find "PSNR: ..., SSIM: ..." in evaluate_accuracy.py output')
    return float(match.group(1)), match.group(2), float(match.group(3))


def write_pictures(out, dataset, rendered, name):
    """JPG copies of target, PyNET and baselines of the full-resolution scene, side by side too."""
    folder = os.path.join(out, 'pictures')
    sources = {'target': os.path.join(dataset, 'test', 'canon_full_resolution', name + '.jpg'),
               'pynet': rendered,
               'baseline_isp': os.path.join(out, 'baseline', '%s_isp.png' % name),
               'baseline_libraw': os.path.join(out, 'baseline', '%s_libraw.png' % name)}
    images = {k: image_io.read_rgb_image(p) for k, p in sources.items()}
    written = {}
    for key, image in images.items():
        written[key] = image_io.save_image(os.path.join(folder, key + '.jpg'), image / 255.0, quality=90)
    row = np.concatenate([images[k] for k in ('target', 'pynet', 'baseline_isp', 'baseline_libraw')], axis=1)
    written['side_by_side'] = image_io.save_image(os.path.join(folder, 'side_by_side.jpg'), row / 255.0, quality=90)
    return written


def train(config, steps, out, iterations, batch_sizes):
    """Steps 1 and 2: the synthetic dataset, then levels 5 -> 0 with train_model.py; True if real VGG."""
    dataset = os.path.join(out, 'raw_images')
    models, results = os.path.join(out, 'models'), os.path.join(out, 'results')
    # A fresh start each time: old checkpoints of another run would be restored otherwise.
    for folder in (models, results, os.path.join(out, 'full-resolution')):
        if os.path.isdir(folder):
            shutil.rmtree(folder)

    steps.run('1. synthetic dataset', 'make_synthetic_dataset.py', 'output_dir=' + dataset,
              'patch_size=%d' % config['patch_size'], 'train_patches=%d' % config['train_patches'],
              'test_patches=%d' % config['test_patches'], 'seed=%d' % config['seed'], 'overwrite=true')
    vgg, real_vgg = vgg_file(config, out)
    if not real_vgg:
        print('\nNOTE: %s not found, so the content loss uses a VGG-19 with RANDOM weights (%s); '
              'put the real file there for a meaningful content loss.' % (config['vgg_dir'], vgg))

    for level in TRAIN_LEVELS:
        steps.run('2. train level %d' % level, 'train_model.py', 'level=%d' % level,
                  'dataset_dir=' + dataset, 'models_dir=' + models, 'results_dir=' + results,
                  'vgg_dir=' + vgg, 'batch_size=%d' % batch_sizes[level],
                  'num_train_iters=%d' % iterations[level], 'eval_step=%d' % iterations[level],
                  'train_size=%d' % config['train_patches'], 'learning_rate=%g' % config['learning_rate'])
    return real_vgg


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    iterations = per_level(config['iterations'], 'iterations')
    batch_sizes = per_level(config['batch_sizes'], 'batch_sizes')
    out = config['output_dir']
    dataset = os.path.join(out, 'raw_images')
    models, results = os.path.join(out, 'models'), os.path.join(out, 'results')
    started = time.time()
    steps = Steps()
    real_vgg = os.path.isfile(config['vgg_dir'])
    if config['train']:
        real_vgg = train(config, steps, out, iterations, batch_sizes)
    else:
        utils.import_tensorflow()
        import checkpoints
        if not checkpoints.saved_iterations(models, 0):
            raise UserError('train=false needs a level-0 checkpoint in %s: run the demo with training first' % models)

    text = steps.run('3. evaluate', 'evaluate_accuracy.py', 'level=0', 'dataset_dir=' + dataset,
                     'models_dir=' + models, capture=True)
    psnr, ssim_kind, ssim = parse_accuracy(text)
    full_dir = os.path.join(out, 'full-resolution')
    steps.run('4. render the full-resolution RAW', 'test_model.py', 'level=0', 'dataset_dir=' + dataset,
              'models_dir=' + models, 'output_dir=' + full_dir)
    steps.run('5. classical baselines', 'baseline.py', 'dataset_dir=' + dataset,
              'output_dir=' + os.path.join(out, 'baseline'))

    with open(os.path.join(out, 'baseline', 'metrics.json')) as f:
        baselines = json.load(f)
    name = sorted(os.listdir(os.path.join(dataset, 'test', 'huawei_full_resolution')))[0][:-4]
    rendered = [f for f in sorted(os.listdir(full_dir)) if f.startswith(name + '_level_0_')]
    if not rendered:
        raise UserError('test_model.py wrote no %s_level_0_*.png into %s' % (name, full_dir))
    pictures = write_pictures(out, dataset, os.path.join(full_dir, rendered[-1]), name)

    minutes = (time.time() - started) / 60
    print('\n=== Results (%d test patches of %dx%d, %.1f minutes in all)\n'
          % (config['test_patches'], config['patch_size'], config['patch_size'], minutes))
    key = 'ms_ssim' if ssim_kind == 'MS-SSIM' else 'ssim'
    label = ('PyNET, demo training (%d iterations in all)' % sum(iterations.values()) if config['train']
             else 'PyNET, checkpoints in %s' % models)
    rows = [(label, psnr, ssim)]
    rows += [(baseline.NAMES[m], baselines[m]['psnr'], baselines[m][key]) for m in baseline.METHODS]
    print('%-46s %10s %10s' % ('method', 'PSNR (dB)', ssim_kind))
    for label, p, s in rows:
        print('%-46s %10.2f %10.4f' % (label, p, s))
    best = max(rows, key=lambda r: r[1])
    print('\nHighest PSNR: %s.' % best[0])
    if best is not rows[0]:
        print('PyNET needs far longer training (the published schedule is 185,000 iterations) to beat a '
              'hand-made pipeline; this demo shows the whole system working, not its final quality.')
    if not real_vgg:
        print('The content loss used random VGG-19 features (no %s).' % config['vgg_dir'])
    print('\nPictures of the full-resolution test scene (%s):' % name)
    for key_name, path in pictures.items():
        print('  %-16s %s' % (key_name, path))
    print('\nTime per step:')
    for title, seconds in steps.times:
        print('  %-40s %6.1f s' % (title, seconds))


if __name__ == '__main__':
    utils.run_main(main)
