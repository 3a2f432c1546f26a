"""demo.py and baseline.py through their command lines, with tiny settings: the numbers they print
are those of the steps they ran (and, for baseline.py, of an independent computation), and they
write the files they say."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import baseline
import demo
import image_io
import make_synthetic_dataset as msd
import reference_metrics as ref
import utils
from conftest import assert_one_line_error, run_script

LEVELS = (5, 4, 3, 2, 1, 0)


# The whole demo, a dozen scripts one after another: a longer limit (pytest-timeout).
@pytest.mark.timeout(1800)
def test_demo_with_the_smallest_settings(tmp_path):
    out = tmp_path / 'demo'
    result = run_script('demo.py', 'output_dir=%s' % out, 'patch_size=32', 'train_patch_sizes=64,64,64,64,32,32',
                        'train_patches=4', 'test_patches=2', 'iterations=2,2,2,2,2,2', 'batch_sizes=2,2,2,2,2,2',
                        'learning_rates=1e-4', 'head_iterations=3', 'vgg_dir=%s' % (tmp_path / 'none.mat'),
                        cwd=str(tmp_path), timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout
    # The random-weight VGG-19 is made, said so, and left out of the loss.
    assert 'RANDOM weights' in text and 'content_weight=0' in text and (out / 'vgg_random_weights.mat').is_file()
    assert ('levels 5-2 in bfloat16' if utils.cpu_supports_bfloat16() else
            'in float32: this CPU has no native bfloat16') in text
    # One dataset per patch size: the scored one (32 px), and the 64 px one levels 5..2 train on.
    assert (out / 'raw_images' / 'test' / 'huawei_raw' / '1.png').is_file()
    assert (out / 'raw_images_64px' / 'train' / 'huawei_raw' / '3.png').is_file()
    assert 'Training schedule (15 iterations in all)' in text
    for level, side in zip(LEVELS, (64, 64, 64, 64, 32, 32)):
        assert re.search(r'level %d:\s+2 iterations of batch\s+2,\s+%dx%d\s+patches, learning rate 0.0001 -> '
                         r'1e-05 \(cosine\)' % (level, side, side), text), level
    # ... and each level's train_model.py is given the decay (learning_rate_decay=0.1 by default); level 0 first
    # trains its new layers alone (head_iterations), from level 1's checkpoint, then all from that run's.
    commands = re.findall(r'^\$ python train_model.py .*$', text, re.M)
    assert len(commands) == 7
    head = commands[5]
    assert 'level=0' in head and 'train_layers=new' in head and 'num_train_iters=3' in head
    assert 'learning_rate=0.001 ' in head and 'pynet_level_1_iteration_2.ckpt' in head
    assert 'init_checkpoint=%s' % (out / 'models_level_0_head' / 'pynet_level_0_iteration_3.ckpt') in commands[6]
    assert all('learning_rate=0.0001 end_learning_rate=1e-05' in c for c in commands[:5] + commands[6:])
    # He-scaled new layers at every level (he_levels=5,4,3,2,1,0 by default): at level 0 in its first run only.
    assert ['init_new_layers=he' in c for c in commands] == [True] * 6 + [False]
    assert 'after 3 of its new layers alone at 0.001; new layers He-scaled' in text
    assert (out / 'models_level_0_head' / 'pynet_level_0_iteration_3.ckpt.index').is_file()

    # Every level trained from the one below, each saved and logged once, in order.
    for level in LEVELS:
        assert (out / 'models' / ('pynet_level_%d_iteration_2.ckpt.index' % level)).is_file()
    logged = [int(line.split(',')[0].split()[1]) for line in (out / 'models' / 'logs.txt').read_text().splitlines()]
    assert logged == list(LEVELS)

    # The table: PyNET's row is what evaluate_accuracy.py printed, the others baseline.py's metrics.json.
    evaluated = re.search(r'^PSNR: ([\d.]+), SSIM: ([\d.]+)$', text, re.M)
    table = text[text.index('=== Results'):]
    rows = re.findall(r'^(\S.*?)\s+([\d.]+)\s+([\d.]+)$', table, re.M)
    assert len(rows) == 3 and re.match(r'PyNET: 15 iterations, [\d.]+ min of training$', rows[0][0]), table
    assert rows[0][1:] == ('%.2f' % float(evaluated.group(1)), '%.4f' % float(evaluated.group(2)))
    metrics = json.loads((out / 'baseline' / 'metrics.json').read_text())
    for (label, psnr, ssim), method in zip(rows[1:], baseline.METHODS):
        assert label == baseline.NAMES[method]
        assert (psnr, ssim) == ('%.2f' % metrics[method]['psnr'], '%.4f' % metrics[method]['ssim'])
    best = max(rows, key=lambda row: float(row[1]))
    assert 'Highest PSNR: %s.' % best[0] in table

    # The pictures it lists: the full-resolution scene, PyNET's rendering of it and both baselines.
    listed = dict(re.findall(r'^  (\w+)\s+(\S+\.jpg)$', table, re.M))
    assert sorted(listed) == ['baseline_isp', 'baseline_libraw', 'pynet', 'side_by_side', 'target']
    sizes = {name: Image.open(path).size for name, path in listed.items()}
    width, height = sizes['target']
    assert all(sizes[name] == (width, height) for name in ('pynet', 'baseline_isp', 'baseline_libraw'))
    assert sizes['side_by_side'] == (4 * width, height)
    rendered = os.listdir(out / 'full-resolution')
    assert len(rendered) == 1 and rendered[0].endswith('_level_0_iteration_2.png')
    assert Image.open(out / 'full-resolution' / rendered[0]).size == (width, height)


def test_baseline_scores_equal_an_independent_computation(tmp_path):
    dataset = str(tmp_path / 'data')
    msd.main(['output_dir=' + dataset, 'patch_size=192', 'train_patches=1', 'test_patches=2',
              'train_photos=coffee', 'test_photos=chelsea'])
    out = tmp_path / 'baseline'
    result = run_script('baseline.py', 'dataset_dir=' + dataset, 'output_dir=%s' % out, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    for method in baseline.METHODS:
        line = baseline.format_row(baseline.NAMES[method], metrics[method])
        assert line in result.stdout and 'MS-SSIM' in line

    # The pipelines' outputs scored here: PSNR in numpy, SSIM by scikit-image, MS-SSIM in numpy.
    info = msd.read_info(dataset)
    xyz_to_cam = np.array(info['xyz_to_cam'])
    for method in baseline.METHODS:
        scores = []
        for record in info['test']:
            raw = image_io.read_raw_png(os.path.join(dataset, 'test', 'huawei_raw', '%d.png' % record['index']))
            target = image_io.read_rgb_image(os.path.join(dataset, 'test', 'canon', '%d.jpg' % record['index']))
            target = (target / 255.0).astype(np.float32)
            output = np.clip(baseline.RENDERERS[method](raw, xyz_to_cam, baseline.scene_of(record), info['config']),
                             0, 1).astype(np.float32)
            scores.append((ref.psnr(output, target), ref.ssim(output, target), ref.ms_ssim(output, target)))
        psnr, ssim, ms_ssim = np.mean(scores, axis=0)
        assert metrics[method]['patches'] == 2
        assert abs(metrics[method]['psnr'] - psnr) < 1e-3, (method, metrics[method], psnr)
        assert abs(metrics[method]['ssim'] - ssim) < 1e-4 and abs(metrics[method]['ms_ssim'] - ms_ssim) < 1e-4
    assert metrics['isp']['psnr'] != metrics['libraw']['psnr']

    # Each pipeline's rendering of the full-resolution RAW, at its size.
    for record in info['full_resolution']:
        raw = image_io.read_raw_png(os.path.join(dataset, 'test', 'huawei_full_resolution', record['name'] + '.png'))
        for method in baseline.METHODS:
            photo = Image.open(out / ('%s_%s.png' % (record['name'], method)))
            assert photo.size == (raw.shape[1], raw.shape[0]) and photo.mode == 'RGB'


@pytest.mark.parametrize('arg,fragment', [
    ('train_patch_sizes=64,64,64,64,48,32', 'train_patch_sizes: 48 is not a positive multiple of 32'),
    ('patch_size=40', 'patch_size: 40 is not a positive multiple of 32'),
    ('iterations=1,1,1', 'give 6 comma-separated numbers'),
    ('batch_sizes=2,2,2,2,2,0', 'at least 1'),
    ('learning_rates=1e-4,0,1e-4,1e-4,1e-4,1e-4', 'must be positive'),
    ('learning_rates=1e-4,1e-4', 'or one for all'),
    ('learning_rate_decay=1.5', 'learning_rate_decay=1.5: must be between 0 and 1'),
    ('he_levels=1,6', 'he_levels=1,6: give levels among 5,4,3,2,1,0'),
    ('head_iterations=-1', 'head_iterations=-1: must be 0 or more'),
    ('head_learning_rate=0', 'head_learning_rate=0: must be positive'),
])
def test_bad_schedule_is_one_line_and_writes_nothing(tmp_path, arg, fragment):
    result = run_script('demo.py', 'output_dir=' + str(tmp_path / 'demo'), arg, cwd=str(tmp_path))
    assert_one_line_error(result, fragment)
    assert not os.path.exists(tmp_path / 'demo')


def test_precision_auto_follows_the_cpu(monkeypatch):
    config = {'precision': 'auto'}
    monkeypatch.setattr(utils, 'cpu_supports_bfloat16', lambda: False)
    precision, why = demo.training_precision(config)
    assert set(precision.values()) == {'float32'} and 'no native bfloat16' in why
    monkeypatch.setattr(utils, 'cpu_supports_bfloat16', lambda: True)
    precision, why = demo.training_precision(config)
    # bfloat16 for levels 5-2 only: level 0 diverged in bfloat16.
    assert precision == {5: 'bfloat16', 4: 'bfloat16', 3: 'bfloat16', 2: 'bfloat16', 1: 'float32', 0: 'float32'}
    assert 'levels 1 and 0 in float32' in why
    assert set(demo.training_precision({'precision': 'float32'})[0].values()) == {'float32'}
