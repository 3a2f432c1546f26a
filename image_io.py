"""Reading and writing every image and RAW file the project touches, and the packing
of a Bayer mosaic into PyNET's 4-channel input.

Zurich convention: a single-channel PNG holding 10-bit sensor values, the 2x2 cell
being R at (0,0), Gb at (0,1), Gr at (1,0), B at (1,1). Packed input channels are
B, Gb, R, Gr, divided by 4*255.
"""

import os

import numpy as np
from PIL import Image

from utils import UserError, atomic_path

RAW_SCALE = 4.0 * 255.0     # Zurich values are divided by 1020, not 1023
ZURICH_MAX_VALUE = 1023     # 10-bit sensor
# (row, col) inside the 2x2 cell of each packed channel, in the order B, Gb, R, Gr.
PACKED_CHANNEL_OFFSETS = ((1, 1), (0, 1), (0, 0), (1, 0))

Image.MAX_IMAGE_PIXELS = None   # full-resolution photos are large by design


def _open_image(path, what):
    if not os.path.isfile(path):
        raise UserError('%s %s not found' % (what, path))
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Exception as error:
        raise UserError('cannot read %s %s (%s): the file is damaged or not an image; replace it'
                        % (what, path, str(error).splitlines()[0][:100] if str(error) else type(error).__name__))


def read_raw_png(path, max_value=ZURICH_MAX_VALUE):
    """A Zurich RAW PNG as a uint16 [H, W] mosaic; the stored numbers, never rescaled by bit depth."""
    image = _open_image(path, 'RAW image')
    mosaic = np.asarray(image)
    if mosaic.ndim != 2:
        raise UserError('RAW image %s has %d channels; a RAW PNG must be a single-channel Bayer mosaic '
                        '(convert camera files with dng_to_png.py)' % (path, mosaic.shape[-1]))
    mosaic = mosaic.astype(np.uint16)
    if max_value is not None and mosaic.size and int(mosaic.max()) > max_value:
        raise UserError('RAW image %s holds values up to %d, above the %d of 10-bit Zurich data; '
                        'convert camera files with dng_to_png.py, which maps their levels'
                        % (path, int(mosaic.max()), max_value))
    return mosaic


def read_rgb_image(path):
    """An 8-bit RGB photo (JPG or PNG) as uint8 [H, W, 3]."""
    image = _open_image(path, 'image')
    if image.mode != 'RGB':
        image = image.convert('RGB')
    return np.asarray(image)


def pack_raw(mosaic):
    """Bayer mosaic [H, W] (H and W even) -> float32 [H/2, W/2, 4] in B, Gb, R, Gr order, /1020."""
    assert mosaic.ndim == 2 and mosaic.shape[0] % 2 == 0 and mosaic.shape[1] % 2 == 0, mosaic.shape
    planes = [mosaic[r::2, c::2] for r, c in PACKED_CHANNEL_OFFSETS]
    return np.stack(planes, axis=-1).astype(np.float32) / RAW_SCALE


def unpack_raw(packed):
    """Inverse of pack_raw: float [H/2, W/2, 4] -> uint16 mosaic [H, W]."""
    assert packed.ndim == 3 and packed.shape[-1] == 4, packed.shape
    height, width = packed.shape[0] * 2, packed.shape[1] * 2
    mosaic = np.zeros((height, width), np.uint16)
    for channel, (r, c) in enumerate(PACKED_CHANNEL_OFFSETS):
        mosaic[r::2, c::2] = np.round(packed[..., channel] * RAW_SCALE).astype(np.uint16)
    return mosaic


def to_uint(image01, bits=8):
    """Float image in [0, 1] (clipped, never rescaled) -> uint8 or uint16."""
    top = (1 << bits) - 1
    values = np.round(np.clip(image01, 0.0, 1.0) * top)
    return values.astype(np.uint8 if bits == 8 else np.uint16)


def save_image(path, image01, bits=8, quality=95):
    """Writes a float [H, W, 3] image in [0, 1] as PNG (8 or 16 bit) or JPG, atomically."""
    ext = os.path.splitext(path)[1].lower()
    if bits not in (8, 16):
        raise UserError('bits=%s: must be 8 or 16' % bits)
    if bits == 16 and ext != '.png':
        raise UserError('16-bit output needs a .png file, not %s' % path)
    with atomic_path(path) as tmp:
        if bits == 16:
            _write_png16_rgb(tmp, to_uint(image01, 16))
        else:
            fmt = 'JPEG' if ext in ('.jpg', '.jpeg') else 'PNG'
            options = {'quality': quality} if fmt == 'JPEG' else {}
            Image.fromarray(to_uint(image01, 8)).save(tmp, format=fmt, **options)
    return path


def _write_png16_rgb(path, rgb16):
    # Pillow cannot write 16-bit RGB PNGs; imageio's PNG writer can.
    import imageio.v3 as iio
    iio.imwrite(path, rgb16, extension='.png')


def save_raw_png(path, mosaic):
    """Writes a uint16 Bayer mosaic as a 16-bit single-channel PNG, atomically."""
    assert mosaic.ndim == 2, mosaic.shape
    with atomic_path(path) as tmp:
        Image.fromarray(mosaic.astype(np.uint16)).save(tmp, format='PNG')
    return path


# ----------------------------------------------------------------------------------------
# DNG writing (tests, the synthetic dataset)

CFA_PATTERNS = {'RGGB': (0, 1, 1, 2), 'BGGR': (2, 1, 1, 0), 'GRBG': (1, 0, 2, 1), 'GBRG': (1, 2, 0, 1)}


def write_dng(path, mosaic, cfa_pattern='RGGB', black_level=64, white_level=1023, bits=16,
              orientation=1, color_matrix=None, as_shot_neutral=None, make='PyNET', model='synthetic'):
    """Writes a Bayer mosaic as an uncompressed DNG with its CFA pattern and levels, atomically.

    `black_level` is one number or four (per position of the 2x2 cell, row-major).
    """
    from pidng.core import RAW2DNG
    from pidng.defs import DNGVersion, PhotometricInterpretation
    from pidng.dng import DNGTags, Tag
    mosaic = np.ascontiguousarray(mosaic, dtype=np.uint16)
    height, width = mosaic.shape
    blacks = [black_level] * 4 if np.isscalar(black_level) else list(black_level)
    tags = DNGTags()
    tags.set(Tag.ImageWidth, width)
    tags.set(Tag.ImageLength, height)
    tags.set(Tag.TileWidth, width)
    tags.set(Tag.TileLength, height)
    tags.set(Tag.Orientation, orientation)
    tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    tags.set(Tag.SamplesPerPixel, 1)
    tags.set(Tag.BitsPerSample, bits)
    tags.set(Tag.CFARepeatPatternDim, [2, 2])
    tags.set(Tag.CFAPattern, list(CFA_PATTERNS[cfa_pattern]))
    tags.set(Tag.BlackLevelRepeatDim, [2, 2])
    tags.set(Tag.BlackLevel, [int(b) for b in blacks])
    tags.set(Tag.WhiteLevel, int(white_level))
    matrix = color_matrix if color_matrix is not None else np.eye(3)
    tags.set(Tag.ColorMatrix1, [[int(round(v * 10000)), 10000] for v in np.ravel(matrix)])
    tags.set(Tag.CalibrationIlluminant1, 21)   # D65
    neutral = as_shot_neutral if as_shot_neutral is not None else (1.0, 1.0, 1.0)
    tags.set(Tag.AsShotNeutral, [[int(round(v * 10000)), 10000] for v in neutral])
    tags.set(Tag.Make, make)
    tags.set(Tag.Model, model)
    tags.set(Tag.DNGVersion, DNGVersion.V1_4)
    tags.set(Tag.DNGBackwardVersion, DNGVersion.V1_2)
    writer = RAW2DNG()
    writer.options(tags, path='', compress=False)
    data = writer.convert(mosaic)
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
    return path
