"""A simple camera pipeline, forwards and backwards: sRGB photo <-> linear camera RAW.

Backwards ("unprocessing", after Brooks et al. 2019, *Unprocessing Images for Learned Raw
Denoising*) turns an 8-bit photo into a plausible phone RAW: inverse tone curve, inverse
sRGB gamma, inverse colour correction, inverse white balance and exposure, Bayer sampling
in the Zurich layout (R at (0,0), Gb at (0,1), Gr at (1,0), B at (1,1)), then 10-bit
sensor values with black level, shot noise and read noise. Forwards is the classical
pipeline that undoes it (bilinear demosaicing, white balance, colour matrix, gamma, tone
curve), used as the baseline PyNET is compared against.

All images are float64 in [0, 1] unless named *_dn (sensor numbers).
"""

import numpy as np
from scipy.ndimage import convolve

import image_io

# sRGB (linear, D65) -> CIE XYZ.
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])

# XYZ -> camera matrices (D65) of four real cameras, as published in DNG colour tables;
# a random convex mix of them makes a plausible, unknown camera.
XYZ_TO_CAMERAS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]]])

# Plausible ranges for a daylight phone shot (Brooks et al.): white-balance gains that the
# ISP multiplies red and blue by, and the exposure the RAW was taken at relative to the photo.
RED_GAIN_RANGE = (1.9, 2.4)
BLUE_GAIN_RANGE = (1.5, 1.9)
EXPOSURE_MEAN, EXPOSURE_STD, EXPOSURE_RANGE = 0.8, 0.1, (0.5, 1.0)

# ((row, col), RGB channel) of each site of the Zurich 2x2 Bayer cell.
BAYER_SITES = tuple((cell, 'RGB'.index(site[0])) for site, cell in image_io.ZURICH_CELL.items())


# ----------------------------------------------------------------------------------------
# random camera and scene

def sample_camera(rng):
    """XYZ -> camera matrix of a random camera, rows scaled so that sRGB white gives camera white."""
    weights = rng.uniform(1e-8, 1.0, size=len(XYZ_TO_CAMERAS))
    xyz_to_cam = np.tensordot(weights / weights.sum(), XYZ_TO_CAMERAS, axes=1)
    # Normalising here (not only in rgb_to_camera) makes this the matrix a DNG declares.
    return xyz_to_cam / (xyz_to_cam @ SRGB_TO_XYZ).sum(axis=1, keepdims=True)


def rgb_to_camera(xyz_to_cam):
    """Linear sRGB -> camera RGB matrix; each row sums to 1 (white stays white)."""
    rgb_to_cam = xyz_to_cam @ SRGB_TO_XYZ
    return rgb_to_cam / rgb_to_cam.sum(axis=1, keepdims=True)


def sample_scene(rng):
    """White-balance gains and exposure of one shot, drawn from the plausible ranges."""
    exposure = float(np.clip(rng.normal(EXPOSURE_MEAN, EXPOSURE_STD), *EXPOSURE_RANGE))
    return {'red_gain': float(rng.uniform(*RED_GAIN_RANGE)),
            'blue_gain': float(rng.uniform(*BLUE_GAIN_RANGE)),
            'exposure': exposure}


def as_shot_neutral(red_gain, blue_gain):
    """Camera RGB of a white object (green = 1): what a DNG's AsShotNeutral tag holds."""
    return (1.0 / red_gain, 1.0, 1.0 / blue_gain)


# ----------------------------------------------------------------------------------------
# the individual steps, each with its inverse

def tone_curve(x):
    """The global S-shaped tone curve of a phone ISP (smoothstep)."""
    x = np.clip(x, 0.0, 1.0)
    return 3.0 * x ** 2 - 2.0 * x ** 3


def inverse_tone_curve(y):
    """Exact inverse of tone_curve on [0, 1]."""
    y = np.clip(y, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


def srgb_gamma(linear):
    """Linear light -> sRGB-encoded values (IEC 61966-2-1)."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def inverse_srgb_gamma(encoded):
    """sRGB-encoded values -> linear light."""
    encoded = np.clip(encoded, 0.0, 1.0)
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def apply_matrix(image, matrix):
    """Multiplies every pixel's RGB vector by a 3x3 matrix."""
    assert image.shape[-1] == 3 and matrix.shape == (3, 3), (image.shape, matrix.shape)
    return image @ matrix.T


def white_balance_gains(red_gain, blue_gain, exposure):
    """Per-channel gains an ISP applies to camera RGB: white balance and digital exposure."""
    return np.array([red_gain, 1.0, blue_gain]) / exposure


def inverse_white_balance(image, red_gain, blue_gain, exposure):
    """Divides by the ISP's gains, easing them out near white so highlights stay saturated."""
    inverse = 1.0 / white_balance_gains(red_gain, blue_gain, exposure)
    gray = image.mean(axis=-1, keepdims=True)
    # Without this, a clipped white sky would become a dim grey in the RAW, which no
    # sensor records: near white, the gain goes smoothly to 1 (Brooks et al., sec. 3.2).
    near_white = (np.maximum(gray - 0.9, 0.0) / 0.1) ** 2
    gains = np.maximum(near_white + (1.0 - near_white) * inverse, inverse)
    return image * gains


def mosaic(image):
    """RGB [H, W, 3] -> Bayer mosaic [H, W] in the Zurich layout (H, W even)."""
    height, width, channels = image.shape
    assert channels == 3 and height % 2 == 0 and width % 2 == 0, image.shape
    out = np.empty((height, width), image.dtype)
    for (row, col), channel in BAYER_SITES:
        out[row::2, col::2] = image[row::2, col::2, channel]
    return out


def bilinear_demosaic(bayer):
    """Bayer mosaic [H, W] (Zurich layout) -> RGB [H, W, 3] by bilinear interpolation."""
    assert bayer.ndim == 2 and bayer.shape[0] % 2 == 0 and bayer.shape[1] % 2 == 0, bayer.shape
    green_kernel = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4.0
    red_blue_kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0
    out = np.empty(bayer.shape + (3,))
    for channel, kernel in ((0, red_blue_kernel), (1, green_kernel), (2, red_blue_kernel)):
        sparse = np.zeros(bayer.shape)
        for (row, col), site_channel in BAYER_SITES:
            if site_channel == channel:
                sparse[row::2, col::2] = bayer[row::2, col::2]
        # 'mirror' reflects about the edge pixel, which keeps every site's colour at the border.
        out[..., channel] = convolve(sparse, kernel, mode='mirror')
    return out


# ----------------------------------------------------------------------------------------
# sensor numbers

def to_sensor(bayer, rng, black_level=64, white_level=1023, shot_noise=0.5, read_noise=1.5):
    """Bayer mosaic in [0, 1] -> noisy integer sensor values (uint16) with a black level.

    Noise is Gaussian with variance `shot_noise * signal + read_noise**2`, in sensor numbers
    (DN) above black: shot_noise is the sensor's gain in DN per electron, read_noise a
    standard deviation in DN. Values are rounded and clipped to [0, white_level].
    """
    signal = np.clip(bayer, 0.0, 1.0) * (white_level - black_level)
    sigma = np.sqrt(shot_noise * signal + read_noise ** 2)
    noisy = black_level + signal + sigma * rng.standard_normal(signal.shape)
    return np.clip(np.round(noisy), 0, white_level).astype(np.uint16)


def from_sensor(bayer_dn, black_level=64, white_level=1023):
    """Sensor values -> mosaic in [0, 1] (black subtracted, white at 1)."""
    return (np.asarray(bayer_dn, np.float64) - black_level) / float(white_level - black_level)


# ----------------------------------------------------------------------------------------
# whole pipelines

def unprocess(photo, xyz_to_cam, red_gain, blue_gain, exposure):
    """sRGB photo [H, W, 3] in [0, 1] -> linear camera RGB in [0, 1] before Bayer sampling."""
    linear = inverse_srgb_gamma(inverse_tone_curve(photo))
    camera = apply_matrix(linear, rgb_to_camera(xyz_to_cam))
    return np.clip(inverse_white_balance(np.clip(camera, 0.0, 1.0), red_gain, blue_gain, exposure), 0.0, 1.0)


def process(camera, xyz_to_cam, red_gain, blue_gain, exposure):
    """Linear camera RGB [H, W, 3] -> sRGB photo in [0, 1]: the inverse of unprocess."""
    balanced = np.clip(camera * white_balance_gains(red_gain, blue_gain, exposure), 0.0, 1.0)
    linear = apply_matrix(balanced, np.linalg.inv(rgb_to_camera(xyz_to_cam)))
    return tone_curve(srgb_gamma(np.clip(linear, 0.0, 1.0)))
