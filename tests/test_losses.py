"""losses.py against numbers computed without TensorFlow: PSNR, SSIM (scikit-image), MS-SSIM
(numpy, tests/reference_metrics.py), and the published loss of every level."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import losses
import reference_metrics as ref


def image_pairs(shape, seed=0):
    """Photos with structure at several scales [B, H, W, 3], and distorted versions (noise, blur, tint)."""
    rng = np.random.default_rng(seed)
    batch, height, width, _ = shape
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    photos, distorted = [], []
    for i in range(batch):
        base = np.stack([0.5 + 0.3 * np.sin((7 + 3 * i + c) * x + (5 + c) * y) * np.cos((11 + i) * y)
                         for c in range(3)], axis=-1)
        base += 0.05 * rng.standard_normal(base.shape)
        photo = np.clip(base, 0, 1)
        blurred = (photo + np.roll(photo, 1, axis=0) + np.roll(photo, 1, axis=1)) / 3
        other = blurred * [1.0, 0.9, 1.1] + 0.04 * (i + 1) * rng.standard_normal(photo.shape)
        photos.append(photo)
        distorted.append(np.clip(other, 0, 1))
    return np.array(photos, np.float32), np.array(distorted, np.float32)


def run(fn, *arrays):
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(fn(*[tf.constant(a) for a in arrays]))


def test_numpy_ssim_agrees_with_scikit_image():
    """The numpy SSIM behind the MS-SSIM reference is scikit-image's SSIM."""
    a, b = image_pairs((2, 40, 52, 3))
    for x, y in zip(a, b):
        assert np.mean(ref.ssim_and_contrast_structure(x, y)[0]) == pytest.approx(ref.ssim(x, y), abs=1e-9)


def test_ssim_equals_scikit_image():
    a, b = image_pairs((3, 48, 41, 3), seed=1)
    expected = [ref.ssim(x, y) for x, y in zip(a, b)]
    assert np.ptp(expected) > 0.05 and 0.2 < min(expected) and max(expected) < 0.95    # distinct, not trivial
    assert run(losses.ssim, a, b) == pytest.approx(np.mean(expected), abs=1e-5)
    per_image = run(lambda o, t: losses.structural_metric(o, t, per_image=True)[1], a, b)
    np.testing.assert_allclose(per_image, expected, atol=1e-5)
    # Too small for 5 scales: structural_metric says SSIM.
    with tf.Graph().as_default():
        assert losses.structural_metric(tf.constant(a), tf.constant(b))[0] == 'SSIM'


def test_ms_ssim_equals_numpy():
    # 170 x 163: odd sides on the way down (85 x 82, 43 x 41, 22 x 21, 11 x 11).
    a, b = image_pairs((2, 170, 163, 3), seed=2)
    expected = [ref.ms_ssim(x, y) for x, y in zip(a, b)]
    single = [ref.ssim(x, y) for x, y in zip(a, b)]
    assert min(abs(e - s) for e, s in zip(expected, single)) > 0.01      # the test can tell MS-SSIM from SSIM
    with tf.Graph().as_default(), tf.Session() as sess:
        name, value = losses.structural_metric(tf.constant(a), tf.constant(b), per_image=True)
        assert name == 'MS-SSIM'
        np.testing.assert_allclose(sess.run(value), expected, atol=1e-5)
    assert losses.ms_ssim_fits(161) and not losses.ms_ssim_fits(160)


def test_mse_and_psnr_equal_numpy():
    a, b = image_pairs((2, 24, 30, 3), seed=3)
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    assert run(losses.mse, a, b) == pytest.approx(mse, rel=1e-5)
    per_image = run(losses.per_image_mse, a, b)
    np.testing.assert_allclose(per_image, [np.mean((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b)], rtol=1e-5)
    np.testing.assert_allclose(run(losses.psnr, per_image), [ref.psnr(x, y) for x, y in zip(a, b)], rtol=1e-5)


# The published loss of each level: MSE, VGG-19 content and 1 - SSIM terms (the PyNET paper).
PUBLISHED = {5: lambda m, c, s: 100 * m, 4: lambda m, c, s: 100 * m,
             3: lambda m, c, s: 100 * m + c, 2: lambda m, c, s: 100 * m + c,
             1: lambda m, c, s: 50 * m + c, 0: lambda m, c, s: 20 * m + c + 20 * (1 - s)}


@pytest.mark.parametrize('level', [5, 4, 3, 2, 1, 0])
def test_level_loss_is_the_published_one(level):
    mse, content, ssim = 0.0123, 0.456, 0.789
    with tf.Graph().as_default(), tf.Session() as sess:
        got = sess.run(losses.level_loss(level, tf.constant(mse), tf.constant(content), tf.constant(ssim)))
    assert got == pytest.approx(PUBLISHED[level](mse, content, ssim), rel=1e-6)
