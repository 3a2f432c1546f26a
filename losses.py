"""Every loss and metric of PyNET: the per-level training losses, the VGG-19 content loss,
MSE, PSNR, SSIM and MS-SSIM. Images are float32 [B, H, W, 3] in [0, 1] (graph ops)."""

import numpy as np
import tensorflow.compat.v1 as tf

# Loss weights per level: (mse, content, 1 - SSIM), as published.
LEVEL_WEIGHTS = {5: (100.0, 0.0, 0.0), 4: (100.0, 0.0, 0.0), 3: (100.0, 1.0, 0.0), 2: (100.0, 1.0, 0.0),
                 1: (50.0, 1.0, 0.0), 0: (20.0, 1.0, 20.0)}
MS_SSIM_LEVELS = (0, 1)          # levels whose evaluation reports MS-SSIM
SSIM_FILTER = 11                 # tf.image.ssim's default window
# tf.image.ssim_multiscale halves the image 4 times (rounding up) and needs the filter to fit
# at the smallest scale: ceil(side / 16) >= 11.
MS_SSIM_MIN_SIDE = 16 * (SSIM_FILTER - 1) + 1
PERFECT_MSE = 1e-20              # PSNR gives 200 dB, not infinity, for an identical image


def mse(output, target):
    """Mean squared error over all pixels, channels and images of the batch."""
    return tf.reduce_mean(tf.squared_difference(output, target))


def per_image_mse(output, target):
    """[B] mean squared error of each image."""
    return tf.reduce_mean(tf.squared_difference(output, target), axis=[1, 2, 3])


def psnr(mse_value):
    """PSNR in dB of images in [0, 1] from their MSE, 10 * log10(1 / mse): a graph op on a tensor,
    numpy on numbers; an MSE below PERFECT_MSE (an identical image) counts as PERFECT_MSE."""
    if tf.is_tensor(mse_value):
        return -10.0 * tf.log(tf.maximum(mse_value, PERFECT_MSE)) / np.log(10.0)
    return -10.0 * np.log10(np.maximum(mse_value, PERFECT_MSE))


def content_loss(vgg, output, target):
    """Mean squared difference of VGG-19 relu5_4 features of output and target.

    Equals sum((f_out - f_tgt)^2) / (elements of relu5_4 per image * batch).
    """
    return tf.reduce_mean(tf.squared_difference(vgg.features(output), vgg.features(target)))


def ssim(output, target):
    """Single-scale SSIM (max value 1), mean over the batch."""
    return tf.reduce_mean(tf.image.ssim(output, target, max_val=1.0))


def ms_ssim_fits(side):
    """True when images of this side are large enough for 5-scale MS-SSIM."""
    return side >= MS_SSIM_MIN_SIDE


def structural_metric(output, target, per_image=False):
    """(name, value): MS-SSIM where the images are large enough, else SSIM, never a wrong number."""
    sides = output.shape.as_list()[1:3]
    if all(s is not None and ms_ssim_fits(s) for s in sides):
        values = tf.image.ssim_multiscale(output, target, max_val=1.0)
        name = 'MS-SSIM'
    else:
        values = tf.image.ssim(output, target, max_val=1.0)
        name = 'SSIM'
    return name, values if per_image else tf.reduce_mean(values)


def level_loss(level, mse_value, content_value, ssim_value, content_scale=1.0):
    """The published training loss of a level from its parts; content_scale multiplies the
    content term's weight (1: as published)."""
    w_mse, w_content, w_ssim = LEVEL_WEIGHTS[level]
    w_content *= content_scale
    loss = w_mse * mse_value
    if w_content:
        loss += w_content * content_value
    if w_ssim:
        loss += w_ssim * (1.0 - ssim_value)
    return loss


def ms_ssim_note(side):
    """A line saying why SSIM stands in for MS-SSIM, for images of `side`."""
    return ('%d px patches are below the %d px that 5-scale MS-SSIM needs (filter %d): reporting '
            'single-scale SSIM instead' % (side, MS_SSIM_MIN_SIDE, SSIM_FILTER))
