"""PSNR, SSIM and MS-SSIM computed without TensorFlow, to check losses.py and the scripts' numbers
against an independent implementation: SSIM by scikit-image, MS-SSIM in numpy after Wang, Simoncelli
and Bovik (2003). Images are float [H, W, 3] in [0, 1]; the settings are SSIM's usual ones, which
tf.image.ssim uses too: Gaussian window of 11 with sigma 1.5, K1 0.01, K2 0.03, data range 1, and
the mean taken over the positions where the whole window fits.
"""
import numpy as np
from scipy import signal
from skimage.metrics import structural_similarity

SIGMA, WINDOW, K1, K2 = 1.5, 11, 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)     # the paper's, finest scale first


def psnr(a, b):
    """20 log10(1 / RMSE) of two images in [0, 1]."""
    return 10 * np.log10(1 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def ssim(a, b):
    """Mean SSIM over the three channels, by scikit-image (its Gaussian window for sigma 1.5 has 11 taps)."""
    return structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), gaussian_weights=True,
                                 sigma=SIGMA, use_sample_covariance=False, data_range=1.0, K1=K1, K2=K2,
                                 channel_axis=-1)


def gaussian_window():
    x = np.arange(WINDOW) - (WINDOW - 1) / 2
    g = np.exp(-x ** 2 / (2 * SIGMA ** 2))
    return np.outer(g, g) / g.sum() ** 2


def ssim_and_contrast_structure(a, b):
    """Per channel: (mean SSIM, mean contrast-structure term cs) over the positions where the window fits."""
    window = gaussian_window()
    local = lambda x: signal.correlate2d(x, window, mode='valid')
    c1, c2 = K1 ** 2, K2 ** 2
    ssims, css = [], []
    for channel in range(a.shape[-1]):
        x, y = a[..., channel].astype(np.float64), b[..., channel].astype(np.float64)
        mx, my = local(x), local(y)
        vx, vy, cxy = local(x * x) - mx ** 2, local(y * y) - my ** 2, local(x * y) - mx * my
        cs = (2 * cxy + c2) / (vx + vy + c2)
        luminance = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
        ssims.append(np.mean(luminance * cs))
        css.append(np.mean(cs))
    return np.array(ssims), np.array(css)


def halve(x):
    """2x2 means; an odd side first repeats its last row or column."""
    x = np.pad(x, ((0, x.shape[0] % 2), (0, x.shape[1] % 2), (0, 0)), mode='symmetric')
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, x.shape[2]).mean(axis=(1, 3))


def ms_ssim(a, b):
    """5-scale MS-SSIM, mean over channels: cs at the four finer scales, SSIM at the coarsest (negative
    terms count as 0, as in TensorFlow, whose fractional powers need them non-negative)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    terms = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        if scale:
            a, b = halve(a), halve(b)
        full, cs = ssim_and_contrast_structure(a, b)
        terms.append(full if scale == len(MS_SSIM_WEIGHTS) - 1 else cs)
    terms = np.maximum(np.array(terms), 0.0)
    return float(np.mean(np.prod(terms ** np.array(MS_SSIM_WEIGHTS)[:, None], axis=0)))
