"""The offline demo (`make demo`): the whole system on a synthetic dataset in minutes.

Runs the real scripts one after the other, as a user would: make_synthetic_dataset.py (one
dataset per patch size the schedule uses), train_model.py for levels 5 -> 0 (briefly),
evaluate_accuracy.py, test_model.py on the full-resolution RAW, baseline.py; then prints where
the pictures are and a table of PSNR / SSIM for PyNET and the classical baselines on the same
test patches, with how long PyNET trained.
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
    'output_dir': Key('demo_output/', str, 'folder for the datasets, checkpoints, logs and pictures'),
    'patch_size': Key(64, int, 'side of the test mosaics PyNET and the baselines are scored on (multiple of 32)'),
    'train_patch_sizes': Key('64,64,64,64,64,64', str, 'side of the training mosaics of levels 5,4,3,2,1,0 '
                             '(multiples of 32; one dataset is made per size)'),
    'train_patches': Key(1000, int, 'synthetic training patches of each dataset'),
    'test_patches': Key(24, int, 'synthetic test patches of each dataset'),
    'iterations': Key('50,50,50,50,350,400', str, 'training iterations of levels 5,4,3,2,1,0'),
    'batch_sizes': Key('16,16,8,8,4,4', str, 'batch sizes of levels 5,4,3,2,1,0'),
    'learning_rates': Key('1e-3,1e-3,5e-4,5e-4,5e-4,2e-4', str, 'Adam learning rates of levels 5,4,3,2,1,0, '
                          'or one for all (the published 5e-5 is tuned for runs a hundred times longer)'),
    'learning_rate_decay': Key(0.1, float, "fraction of each level's learning rate reached at its last iteration "
                               'by a cosine decay (train_model.py end_learning_rate); 1: constant'),
    'content_weight': Key(None, float, 'weight of the VGG-19 content loss; none: 1 (published) with the real '
                          'VGG-19, 0 with the random-weight stand-in (its features mean nothing)'),
    'he_levels': Key('5,4,3,2,1,0', str, 'levels whose new layers start He-scaled (train_model.py '
                     'init_new_layers=he), comma-separated; none: as published (the initial values drawn at '
                     'level 5). At level 5 this includes e1, the only way a patch\'s overall colour reaches level 1'),
    'head_iterations': Key(100, int, 'level 0 first trains only the layers it adds (its upsampling and output: '
                           'train_model.py train_layers=new) for this many iterations, then every layer for its '
                           'share of `iterations`; 0: every layer from the start'),
    'head_learning_rate': Key(1e-3, float, 'Adam learning rate of those first level-0 iterations (constant)'),
    'precision': Key('auto', str, 'training precision; auto: bfloat16 for levels 5-2 where the CPU has '
                     'AVX512-BF16 or AMX, float32 for levels 1 and 0 and elsewhere',
                     choices=('auto', 'float32', 'bfloat16')),
    'seed': Key(0, int, 'seed of the synthetic datasets'),
    'vgg_dir': Key(utils.DEFAULT_VGG_PATH, str, 'VGG-19 .mat; when absent, a random-weight one is made'),
    'train': Key(True, bool, 'false: skip making data and training, evaluate the checkpoints already there'),
}
USAGE = 'python demo.py [key=value ...]   the offline demo: synthetic data, brief training, scores'


def per_levels(text, key):
    """A list of levels from comma-separated numbers, each one of 5..0."""
    try:
        levels = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        levels = [-1]
    if not levels or any(level not in TRAIN_LEVELS for level in levels):
        raise UserError('%s=%s: give levels among %s, comma-separated, or none'
                        % (key, text, ','.join(map(str, TRAIN_LEVELS))))
    return levels


def per_level(text, key, kind=int, allow_one=False):
    """{level: number} from 6 comma-separated numbers for levels 5..0 (or one for all, if allowed)."""
    values = [v.strip() for v in text.split(',') if v.strip()]
    if allow_one and len(values) == 1:
        values = values * len(TRAIN_LEVELS)
    if len(values) != len(TRAIN_LEVELS):
        raise UserError('%s=%s: give %d comma-separated numbers, for levels %s%s'
                        % (key, text, len(TRAIN_LEVELS), ','.join(map(str, TRAIN_LEVELS)),
                           ' (or one for all)' if allow_one else ''))
    try:
        numbers = [kind(v) for v in values]
    except ValueError:
        raise UserError('%s=%s: expected %s' % (key, text, 'whole numbers' if kind is int else 'numbers'))
    if kind is int and min(numbers) < 1:
        raise UserError('%s=%s: every number must be at least 1' % (key, text))
    if kind is float and not min(numbers) > 0:
        raise UserError('%s=%s: every number must be positive' % (key, text))
    return dict(zip(TRAIN_LEVELS, numbers))


class Schedule:
    """The demo's training schedule, per level: iterations, batch size, patch size, learning rate."""

    def __init__(self, config):
        self.iterations = per_level(config['iterations'], 'iterations')
        self.batch_sizes = per_level(config['batch_sizes'], 'batch_sizes')
        self.patch_sizes = per_level(config['train_patch_sizes'], 'train_patch_sizes')
        self.learning_rates = per_level(config['learning_rates'], 'learning_rates', float, allow_one=True)
        self.he_levels = () if config['he_levels'].strip() == 'none' else \
            tuple(sorted(set(per_levels(config['he_levels'], 'he_levels')), reverse=True))
        self.head_iterations, self.head_learning_rate = config['head_iterations'], config['head_learning_rate']
        if self.head_iterations < 0:
            raise UserError('head_iterations=%d: must be 0 or more' % self.head_iterations)
        if not self.head_learning_rate > 0:
            raise UserError('head_learning_rate=%g: must be positive' % self.head_learning_rate)
        self.decay = config['learning_rate_decay']
        if not 0 <= self.decay <= 1:
            raise UserError('learning_rate_decay=%g: must be between 0 and 1 (a fraction of the learning rate)'
                            % self.decay)
        for key, size in [('patch_size', config['patch_size'])] + \
                [('train_patch_sizes', s) for s in self.patch_sizes.values()]:
            if size < 32 or size % 32:
                raise UserError('%s: %d is not a positive multiple of 32 (PyNET halves the mosaic, then '
                                'pools four times)' % (key, size))

    def total_iterations(self):
        return sum(self.iterations.values()) + self.head_iterations

    def end_learning_rate(self, level):
        """The learning rate at the level's last iteration, or None for a constant one."""
        return None if self.decay == 1 else self.learning_rates[level] * self.decay

    def describe(self):
        """One line per level, as printed before training."""
        lines = []
        for level in TRAIN_LEVELS:
            rate = '%g' % self.learning_rates[level]
            if self.end_learning_rate(level) is not None:
                rate += ' -> %g (cosine)' % self.end_learning_rate(level)
            line = ('level %d: %5d iterations of batch %2d, %3dx%-3d patches, learning rate %s'
                    % (level, self.iterations[level], self.batch_sizes[level], self.patch_sizes[level],
                       self.patch_sizes[level], rate))
            if level == 0 and self.head_iterations:
                line += ', after %d of its new layers alone at %g' % (self.head_iterations, self.head_learning_rate)
            if level in self.he_levels:
                line += '; new layers He-scaled'
            lines.append(line)
        return lines


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


def dataset_dir(out, config, size):
    """The dataset of `size`: raw_images/ for the test size (the one scored), raw_images_<size>px/ else."""
    return os.path.join(out, 'raw_images' if size == config['patch_size'] else 'raw_images_%dpx' % size)


# Levels whose training the demo keeps in float32 under precision=auto: in bfloat16, level 0's loss went to
# NaN within a few hundred iterations in this project's demo runs (AVX512-BF16 EPYC, 2026-12-01), and these
# levels' full-resolution detail is what bfloat16's 8-bit mantissa loses first.
FLOAT32_LEVELS = (1, 0)


def training_precision(config):
    """({level: precision for train_model.py}, a sentence saying why); refuses bfloat16 where it cannot run."""
    if config['precision'] == 'bfloat16':
        utils.import_tensorflow()
        import mixed_precision
        precision = mixed_precision.check_precision('bfloat16', use_gpu=True)
        return dict.fromkeys(TRAIN_LEVELS, precision), 'bfloat16, as asked'
    if config['precision'] == 'float32':
        return dict.fromkeys(TRAIN_LEVELS, 'float32'), 'float32, as asked'
    if utils.cpu_supports_bfloat16():
        return ({level: 'float32' if level in FLOAT32_LEVELS else 'bfloat16' for level in TRAIN_LEVELS},
                'levels 5-2 in bfloat16 (this CPU has AVX512-BF16/AMX), levels 1 and 0 in float32 (bfloat16 '
                'diverged there)')
    return dict.fromkeys(TRAIN_LEVELS, 'float32'), ('in float32: this CPU has no native bfloat16 (AVX512-BF16 '
                                                    'or AMX), where bfloat16 would be slower')


def train(config, steps, out, schedule):
    """Steps 1 and 2: the synthetic datasets, then levels 5 -> 0 with train_model.py; True if real VGG."""
    precision, why = training_precision(config)       # before anything is written
    models, results = os.path.join(out, 'models'), os.path.join(out, 'results')
    head_models = os.path.join(out, 'models_level_0_head')
    # A fresh start each time: old checkpoints of another run would be restored otherwise.
    for folder in (models, head_models, results, os.path.join(out, 'full-resolution')):
        if os.path.isdir(folder):
            shutil.rmtree(folder)

    sizes = sorted({config['patch_size']} | set(schedule.patch_sizes.values()), reverse=True)
    for size in sizes:
        levels = [str(level) for level in TRAIN_LEVELS if schedule.patch_sizes[level] == size]
        use = ('training of level%s %s' % ('s' if len(levels) > 1 else '', ', '.join(levels))) if levels else ''
        if size == config['patch_size']:
            use = 'the scored test patches' + (' and ' + use if use else '')
        steps.run('1. synthetic dataset, %dx%d patches (%s)' % (size, size, use), 'make_synthetic_dataset.py',
                  'output_dir=' + dataset_dir(out, config, size), 'patch_size=%d' % size,
                  'train_patches=%d' % config['train_patches'], 'test_patches=%d' % config['test_patches'],
                  'seed=%d' % config['seed'], 'overwrite=true')
    vgg, real_vgg = vgg_file(config, out)
    content_weight = config['content_weight']
    if content_weight is None:
        content_weight = 1.0 if real_vgg else 0.0
    if not real_vgg:
        print('\nNOTE: %s not found, so the demo made a VGG-19 with RANDOM weights (%s); its features mean '
              'nothing, so the content loss %s. Put the real file there for the published loss.'
              % (config['vgg_dir'], vgg, 'is left out (content_weight=0)' if content_weight == 0 else
                 'has weight %g' % content_weight))
    print('\nTraining schedule (%d iterations in all), %s:' % (schedule.total_iterations(), why))
    for line in schedule.describe():
        print('  ' + line)

    utils.import_tensorflow()
    import checkpoints
    for level in TRAIN_LEVELS:
        common = ['level=%d' % level, 'dataset_dir=' + dataset_dir(out, config, schedule.patch_sizes[level]),
                  'results_dir=' + results, 'vgg_dir=' + vgg, 'batch_size=%d' % schedule.batch_sizes[level],
                  'train_size=%d' % config['train_patches'], 'content_weight=%g' % content_weight,
                  'precision=' + precision[level]]
        start = ['init_new_layers=he'] if level in schedule.he_levels else []
        if level == 0 and schedule.head_iterations:
            # Level 0's new upsampling and output layers alone first, level 1 kept as trained: with every
            # layer trained from the start, their random values pulled level 1's layers off (12 dB after 50
            # iterations from a 17 dB level 1, in this project's runs).
            iterations = schedule.head_iterations
            steps.run('2. train level 0: its new layers alone', 'train_model.py', *common,
                      'models_dir=' + head_models, 'num_train_iters=%d' % iterations, 'eval_step=%d' % iterations,
                      'learning_rate=%g' % schedule.head_learning_rate, 'train_layers=new',
                      'init_checkpoint=' + checkpoints.checkpoint_path(models, 1, schedule.iterations[1]), *start)
            start = ['init_checkpoint=' + checkpoints.checkpoint_path(head_models, 0, iterations)]
        end_rate = schedule.end_learning_rate(level)
        steps.run('2. train level %d' % level, 'train_model.py', *common, 'models_dir=' + models,
                  'num_train_iters=%d' % schedule.iterations[level], 'eval_step=%d' % schedule.iterations[level],
                  'learning_rate=%g' % schedule.learning_rates[level],
                  *(['end_learning_rate=%g' % end_rate] if end_rate is not None else []), *start)
    return real_vgg


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    schedule = Schedule(config)
    out = config['output_dir']
    dataset = dataset_dir(out, config, config['patch_size'])
    models = os.path.join(out, 'models')
    started = time.time()
    steps = Steps()
    real_vgg = os.path.isfile(config['vgg_dir'])
    if config['train']:
        real_vgg = train(config, steps, out, schedule)
    else:
        utils.import_tensorflow()
        import checkpoints
        if not checkpoints.saved_iterations(models, 0):
            raise UserError('train=false needs a level-0 checkpoint in %s: run the demo with training first' % models)
    training_minutes = sum(seconds for title, seconds in steps.times if title.startswith('2.')) / 60

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
    print('\n=== Results (%d test patches of %dx%d from a photo training never sees; %.1f minutes in all)\n'
          % (config['test_patches'], config['patch_size'], config['patch_size'], minutes))
    key = 'ms_ssim' if ssim_kind == 'MS-SSIM' else 'ssim'
    label = ('PyNET: %d iterations, %.1f min of training' % (schedule.total_iterations(), training_minutes)
             if config['train'] else 'PyNET, checkpoints in %s' % models)
    rows = [(label, psnr, ssim)]
    rows += [(baseline.NAMES[m], baselines[m]['psnr'], baselines[m][key]) for m in baseline.METHODS]
    print('%-46s %10s %10s' % ('method', 'PSNR (dB)', ssim_kind))
    for label, p, s in rows:
        print('%-46s %10.2f %10.4f' % (label, p, s))
    best = max(rows, key=lambda r: r[1])
    print('\nHighest PSNR: %s.' % best[0])
    if best is not rows[0]:
        print("The classical ISP is given every patch's true white balance, exposure and colour matrix; PyNET "
              'infers them from the pixels, after %d iterations where the published schedule has 185,000.'
              % schedule.total_iterations())
    if not real_vgg:
        print('The content loss had a random-weight VGG-19 (no %s).' % config['vgg_dir'])
    print('\nPictures of the full-resolution test scene (%s):' % name)
    for key_name, path in pictures.items():
        print('  %-16s %s' % (key_name, path))
    print('\nTime per step:')
    for title, seconds in steps.times:
        print('  %-60s %6.1f s' % (title, seconds))


if __name__ == '__main__':
    utils.run_main(main)
