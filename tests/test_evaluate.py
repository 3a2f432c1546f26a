"""evaluate_accuracy.py: its PSNR and MS-SSIM equal numbers computed independently from outputs
rendered by render.Renderer; small patches get SSIM and a note; bad input is one line."""
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import checkpoints
import image_io
import model
import reference_metrics
import tiny_zurich
from conftest import assert_one_line_error, run_script
from render import Renderer

EXACT = {'TF_ENABLE_ONEDNN_OPTS': '0'}


def make_checkpoint(models_dir, iteration, seed, bias=0.01):
    """A level-0 checkpoint with random weights whose outputs are far from flat grey."""
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        model.PyNET(tf.placeholder(tf.float32, [1, 32, 32, 4]))
        variables = model.generator_variables()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # Larger output-layer weights so that the picture has structure (not just 0.5).
            for var in variables:
                if len(var.shape) == 4 and var.shape[-1] == 3:
                    var.load(rng.normal(0, 0.05, var.shape.as_list()).astype(np.float32), sess)
            variables[-1].load(np.full([3], bias, np.float32), sess)     # the level-0 output's bias
            path = checkpoints.checkpoint_path(models_dir, 0, iteration)
            checkpoints.save_variables(sess, tf.train.Saver(var_list=variables), path)
    return path


def reference(dataset, checkpoint):
    """Per-image PSNR and MS-SSIM/SSIM from Renderer outputs clipped to [0, 1], without TensorFlow."""
    folder = os.path.join(dataset, 'test')
    names = sorted(os.listdir(os.path.join(folder, 'huawei_raw')), key=lambda n: int(n[:-4]))
    outputs, targets = [], []
    with Renderer(checkpoint, level=0, use_gpu=False, tile=0) as renderer:
        for name in names:
            packed = image_io.pack_raw(np.asarray(Image.open(os.path.join(folder, 'huawei_raw', name))).astype(np.uint16))
            outputs.append(np.clip(renderer.render(packed), 0, 1))
            photo = Image.open(os.path.join(folder, 'canon', name[:-4] + '.jpg')).convert('RGB')
            targets.append(np.asarray(photo, np.float64) / 255.0)
    mse = np.array([np.mean((o.astype(np.float64) - t) ** 2) for o, t in zip(outputs, targets)])
    psnr = np.mean(10 * np.log10(1 / mse))
    # MS-SSIM in numpy, SSIM by scikit-image (tests/reference_metrics.py), not tf.image again.
    metric = reference_metrics.ms_ssim if outputs[0].shape[0] >= 161 else reference_metrics.ssim
    similarity = float(np.mean([metric(o, t.astype(np.float32)) for o, t in zip(outputs, targets)]))
    return psnr, similarity, mse


def parse(stdout):
    match = re.search(r'^PSNR: ([\d.]+), (MS-SSIM|SSIM): ([\d.]+)$', stdout, re.M)
    assert match, stdout
    return float(match.group(1)), match.group(2), float(match.group(3))


def test_psnr_and_ms_ssim_equal_an_independent_computation(tmp_path):
    dataset = tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=1, n_test=3, side=192, seed=4)
    # One target far from the others, so a mean of per-image PSNRs differs from the PSNR of the mean MSE.
    Image.new('RGB', (192, 192), (250, 5, 250)).save(os.path.join(dataset, 'test', 'canon', '1.jpg'), quality=95)
    models = str(tmp_path / 'models')
    make_checkpoint(models, 5, seed=1, bias=1.5)       # a much brighter picture
    checkpoint = make_checkpoint(models, 9, seed=2)       # the last one is the default
    result = run_script('evaluate_accuracy.py', 'level=0', 'dataset_dir=data', 'batch_size=2', 'use_gpu=false',
                        cwd=str(tmp_path), env=EXACT)
    assert result.returncode == 0, result.stderr[-2000:]
    psnr, kind, similarity = parse(result.stdout)
    expected_psnr, expected_similarity, mse = reference(dataset, checkpoint)
    assert kind == 'MS-SSIM' and 'note' not in result.stdout
    assert abs(psnr - expected_psnr) < 2e-3, (psnr, expected_psnr)
    assert abs(similarity - expected_similarity) < 2e-4, (similarity, expected_similarity)
    assert abs(expected_psnr - 10 * np.log10(1 / mse.mean())) > 0.5      # the test can tell the two apart


def test_published_model_and_small_patches(tmp_path):
    # orig=true reads <models_dir>/original/pynet_level_0.ckpt, not the last checkpoint of level 0;
    # 64 px patches are too small for MS-SSIM: SSIM and a note.
    dataset = tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=1, n_test=2, side=64, seed=5)
    models = str(tmp_path / 'models')
    published = make_checkpoint(models, 3, seed=3, bias=1.5)
    make_checkpoint(models, 8, seed=4)
    original = checkpoints.original_checkpoint_path(models)
    os.makedirs(os.path.dirname(original))
    for ext in ('.index', '.data-00000-of-00001'):
        shutil.move(published + ext, original + ext)
    result = run_script('evaluate_accuracy.py', 'orig=true', 'dataset_dir=data', cwd=str(tmp_path), env=EXACT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'original/pynet_level_0.ckpt' in result.stdout
    assert 'note: 64 px patches are below the 161 px' in result.stdout
    psnr, kind, similarity = parse(result.stdout)
    expected_psnr, expected_similarity, _ = reference(dataset, original)
    assert kind == 'SSIM'
    assert abs(psnr - expected_psnr) < 2e-3 and abs(similarity - expected_similarity) < 2e-4
    last_psnr = reference(dataset, checkpoints.checkpoint_path(models, 0, 8))[0]
    assert abs(last_psnr - psnr) > 0.1          # so the number tells which checkpoint was read


def test_missing_checkpoint_is_one_line(tmp_path):
    tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=1, n_test=1)
    assert_one_line_error(run_script('evaluate_accuracy.py', 'dataset_dir=data', cwd=str(tmp_path)),
                          'no checkpoint of level 0')
    assert_one_line_error(run_script('evaluate_accuracy.py', 'dataset_dir=data', 'orig=true', cwd=str(tmp_path)),
                          'published model not found')


def test_missing_test_set_is_one_line(tmp_path):
    assert_one_line_error(run_script('evaluate_accuracy.py', 'dataset_dir=nothing', cwd=str(tmp_path)),
                          'nothing/test/huawei_raw not found')
