"""Reading and writing every image and RAW file the project touches, and the packing
of a Bayer mosaic into PyNET's 4-channel input.

Zurich convention: a single-channel PNG holding 10-bit sensor values, the 2x2 cell
being R at (0,0), Gb at (0,1), Gr at (1,0), B at (1,1). Packed input channels are
B, Gb, R, Gr, divided by 4*255.
"""

import logging
import os
import sys

import cv2
import numpy as np
import rawpy
import tifffile
from PIL import Image
from pidng.core import RAW2DNG
from pidng.defs import DNGVersion, PhotometricInterpretation
from pidng.dng import DNGTags, Tag

import utils
from utils import UserError, atomic_path

RAW_SCALE = 4.0 * 255.0     # Zurich values are divided by 1020, not 1023
ZURICH_MAX_VALUE = 1023     # 10-bit sensor
ZURICH_CELL = {'R': (0, 0), 'Gb': (0, 1), 'Gr': (1, 0), 'B': (1, 1)}   # (row, col) in the 2x2 Bayer cell
PACKED_CHANNELS = ('B', 'Gb', 'R', 'Gr')      # PyNET's four input channels, in order
PACKED_CHANNEL_OFFSETS = tuple(ZURICH_CELL[site] for site in PACKED_CHANNELS)

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


def read_rgb16_png(path):
    """A 16-bit RGB PNG (as save_image writes with bits=16) as uint16 [H, W, 3]."""
    bgr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.ndim != 3 or bgr.dtype != np.uint16:
        raise UserError('%s is not a 16-bit RGB PNG' % path)
    return bgr[..., ::-1].copy()


def bayer_planes(mosaic):
    """Bayer mosaic [H, W] (H and W even) -> its four planes [H/2, W/2, 4] in B, Gb, R, Gr order, same dtype."""
    assert mosaic.ndim == 2 and mosaic.shape[0] % 2 == 0 and mosaic.shape[1] % 2 == 0, mosaic.shape
    return np.stack([mosaic[r::2, c::2] for r, c in PACKED_CHANNEL_OFFSETS], axis=-1)


def mosaic_from_planes(planes):
    """The inverse of bayer_planes: four planes [h, w, 4] in B, Gb, R, Gr order -> Bayer mosaic [2h, 2w]."""
    assert planes.ndim == 3 and planes.shape[-1] == 4, planes.shape
    mosaic = np.empty((2 * planes.shape[0], 2 * planes.shape[1]), planes.dtype)
    for k, (r, c) in enumerate(PACKED_CHANNEL_OFFSETS):
        mosaic[r::2, c::2] = planes[..., k]
    return mosaic


def pack_raw(mosaic):
    """Bayer mosaic [H, W] (H and W even) -> float32 [H/2, W/2, 4] in B, Gb, R, Gr order, /1020."""
    return bayer_planes(mosaic).astype(np.float32) / RAW_SCALE


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
        if bits == 16:     # Pillow cannot write 16-bit RGB PNGs; OpenCV can (in BGR order)
            if not cv2.imwrite(tmp, to_uint(image01, 16)[..., ::-1]):
                raise OSError('OpenCV could not write %s' % tmp)
        else:
            fmt = 'JPEG' if ext in ('.jpg', '.jpeg') else 'PNG'
            options = {'quality': quality} if fmt == 'JPEG' else {}
            Image.fromarray(to_uint(image01, 8)).save(tmp, format=fmt, **options)
    return path


def save_raw_png(path, mosaic, flip=0):
    """Writes a uint16 Bayer mosaic as a 16-bit single-channel PNG, atomically.

    A non-zero `flip` (LibRaw orientation code) is stored as EXIF Orientation; read_raw_flip reads it.
    """
    assert mosaic.ndim == 2, mosaic.shape
    options = {}
    if flip:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = FLIP_TO_EXIF_ORIENTATION[flip]
        options['exif'] = exif
    with atomic_path(path) as tmp:
        Image.fromarray(mosaic.astype(np.uint16)).save(tmp, format='PNG', **options)
    return path


# ----------------------------------------------------------------------------------------
# DNG writing (tests, the synthetic dataset)

CFA_PATTERNS = {'RGGB': (0, 1, 1, 2), 'BGGR': (2, 1, 1, 0), 'GRBG': (1, 0, 2, 1), 'GBRG': (1, 2, 0, 1)}


def write_dng(path, mosaic, cfa_pattern='RGGB', black_level=64, white_level=1023, bits=16,
              orientation=1, color_matrix=None, as_shot_neutral=None, make='PyNET', model='synthetic',
              default_crop=None, capture_time=None):
    """Writes a Bayer mosaic as an uncompressed DNG with its CFA pattern and levels, atomically.

    `black_level` is one number or four (per position of the 2x2 cell, row-major). `cfa_pattern` is
    'RGGB', 'BGGR', 'GRBG' or 'GBRG'; or, to test refusals, a 2-D array of colour indices
    (0 R, 1 G, 2 B) such as a 4x4 Quad Bayer or 6x6 X-Trans cell, or None for a monochrome sensor.
    `default_crop` (x, y, width, height) writes DefaultCropOrigin/DefaultCropSize. `capture_time`
    ('YYYY:MM:DD HH:MM:SS', EXIF's form) writes DateTimeOriginal and DateTime.
    """
    mosaic = np.ascontiguousarray(mosaic, dtype=np.uint16)
    height, width = mosaic.shape
    blacks = [black_level] * 4 if np.isscalar(black_level) else list(black_level)
    tags = DNGTags()
    tags.set(Tag.ImageWidth, width)
    tags.set(Tag.ImageLength, height)
    tags.set(Tag.TileWidth, width)
    tags.set(Tag.TileLength, height)
    tags.set(Tag.Orientation, orientation)
    tags.set(Tag.SamplesPerPixel, 1)
    tags.set(Tag.BitsPerSample, bits)
    if cfa_pattern is None:
        tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Linear_Raw)
    else:
        cell = np.asarray(CFA_PATTERNS[cfa_pattern] if isinstance(cfa_pattern, str) else cfa_pattern)
        cell = cell.reshape(2, 2) if cell.ndim == 1 else cell
        tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
        tags.set(Tag.CFARepeatPatternDim, list(cell.shape))
        tags.set(Tag.CFAPattern, [int(c) for c in cell.ravel()])
    tags.set(Tag.BlackLevelRepeatDim, [2, 2])
    tags.set(Tag.BlackLevel, [int(b) for b in blacks])
    tags.set(Tag.WhiteLevel, int(white_level))
    if default_crop is not None:
        x, y, crop_width, crop_height = (int(v) for v in default_crop)
        tags.set(Tag.DefaultCropOrigin, [x, y])
        tags.set(Tag.DefaultCropSize, [crop_width, crop_height])
    matrix = color_matrix if color_matrix is not None else np.eye(3)
    tags.set(Tag.ColorMatrix1, [[int(round(v * 10000)), 10000] for v in np.ravel(matrix)])
    tags.set(Tag.CalibrationIlluminant1, 21)   # D65
    neutral = as_shot_neutral if as_shot_neutral is not None else (1.0, 1.0, 1.0)
    tags.set(Tag.AsShotNeutral, [[int(round(v * 10000)), 10000] for v in neutral])
    tags.set(Tag.Make, make)
    tags.set(Tag.Model, model)
    if capture_time is not None:
        tags.set(Tag.DateTimeOriginal, capture_time)
        tags.set(Tag.DateTime, capture_time)
    tags.set(Tag.DNGVersion, DNGVersion.V1_4)
    tags.set(Tag.DNGBackwardVersion, DNGVersion.V1_2)
    writer = RAW2DNG()
    writer.options(tags, path='', compress=False)
    data = writer.convert(mosaic)
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
    return path


# ----------------------------------------------------------------------------------------
# Camera RAW files (DNG and the other formats LibRaw reads), brought to the Zurich convention

# Levels of the sensor the model was trained on (Sony IMX380 in the Huawei P20): a camera's own
# black and white levels are mapped onto these, since the Zurich data keep their black level.
ZURICH_BLACK_LEVEL = 64
ZURICH_WHITE_LEVEL = 1023
CAMERA_RAW_EXTENSIONS = ('.dng', '.3fr', '.arw', '.cr2', '.cr3', '.crw', '.dcr', '.erf', '.fff', '.iiq',
                         '.kdc', '.mef', '.mos', '.mrw', '.nef', '.nrw', '.orf', '.pef', '.raf', '.raw',
                         '.rw2', '.rwl', '.sr2', '.srf', '.srw', '.x3f', '.gpr')
RAW_IMAGE_EXTENSIONS = ('.png',) + CAMERA_RAW_EXTENSIONS     # what test_model.py renders
# EXIF Orientation (1..8) <-> LibRaw's `flip` code (bit 1: mirror columns, 2: mirror rows, 4: transpose).
EXIF_ORIENTATION_TO_FLIP = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 6, 7: 7, 8: 5}
FLIP_TO_EXIF_ORIENTATION = {flip: exif for exif, flip in EXIF_ORIENTATION_TO_FLIP.items()}
EXIF_ORIENTATION_TAG = 0x0112


def raw_files(folder, extensions=RAW_IMAGE_EXTENSIONS):
    """Files of `folder` (not recursive) with one of `extensions`, sorted; hidden and temporary files skipped."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith('.'))
    return [os.path.join(folder, n) for n in names
            if os.path.splitext(n)[1].lower() in extensions and os.path.isfile(os.path.join(folder, n))]


def is_camera_raw_path(path):
    """True for file names with a camera RAW extension (.dng, .cr2, .nef, ...)."""
    return os.path.splitext(path)[1].lower() in CAMERA_RAW_EXTENSIONS


def apply_flip(image, flip):
    """Orients an image [H, W, ...] as LibRaw's `flip` code says: mirror rows (2), columns (1), then transpose (4)."""
    if flip not in FLIP_TO_EXIF_ORIENTATION:
        raise ValueError('flip=%r is not a LibRaw orientation code 0..7' % (flip,))
    if flip & 2:
        image = image[::-1]
    if flip & 1:
        image = image[:, ::-1]
    if flip & 4:
        image = np.swapaxes(image, 0, 1)
    return np.ascontiguousarray(image)


def crop_to_even(mosaic, path='', note=None):
    """Drops the last row and/or column of an odd-sized mosaic (the Bayer cell must be whole), saying so via note()."""
    height, width = mosaic.shape
    even = mosaic[:height - height % 2, :width - width % 2]
    if even.shape != mosaic.shape:
        dropped = ' and '.join(w for w, odd in (('the last row', height % 2), ('the last column', width % 2)) if odd)
        _note(note, '%s: %dx%d mosaic has an odd size: dropped %s' % (path or 'image', height, width, dropped))
    if even.shape[0] < 2 or even.shape[1] < 2:
        raise UserError('%s: the mosaic is only %dx%d pixels; a Bayer image needs at least 2x2'
                        % (path or 'image', height, width))
    return even


def _note(note, message):
    if note is None:
        print('note: ' + message, file=sys.stderr)
    else:
        note('note: ' + message)


def bayer_phase(cell, path=''):
    """(row, col) where R sits in a 2x2 cell of colour letters like 'RGGB' (row-major); refuses non-Bayer cells."""
    letters = ''.join(cell)
    greens_on_a_diagonal = letters[0] == letters[3] == 'G' or letters[1] == letters[2] == 'G'
    if sorted(letters) != ['B', 'G', 'G', 'R'] or not greens_on_a_diagonal:
        raise UserError('%s: colour filter cell %s is not a Bayer pattern (RGGB, BGGR, GRBG, GBRG; Quad Bayer and '
                        'others are not supported): PyNET needs a 2x2 Bayer sensor' % (path, letters))
    index = letters.index('R')
    return index // 2, index % 2


def map_levels(mosaic, black, white, black_level=ZURICH_BLACK_LEVEL, white_level=ZURICH_WHITE_LEVEL):
    """Camera numbers -> Zurich numbers: subtract the camera black, scale its white onto `white_level`, add `black_level`.

    `black` is a number or an array broadcasting against `mosaic` (per-pixel black). Rounded, clipped
    to [0, white_level], uint16.
    """
    black = np.asarray(black, np.float64)
    scale = (white_level - black_level) / (float(white) - black)
    values = (mosaic.astype(np.float64) - black) * scale + black_level
    return np.clip(np.round(values), 0, white_level).astype(np.uint16)


def check_levels(black_level, white_level, what='black_level/white_level'):
    """Refuses target levels outside the 10-bit Zurich range or with black >= white."""
    if not 0 <= black_level < white_level <= ZURICH_MAX_VALUE:
        raise UserError('%s = %s/%s: need 0 <= black < white <= %d (the model was trained on 10-bit data; '
                        'defaults %d/%d)' % (what, black_level, white_level, ZURICH_MAX_VALUE,
                                             ZURICH_BLACK_LEVEL, ZURICH_WHITE_LEVEL))


# What a DNG's tags say, to explain what LibRaw refuses. Compression tag values (TIFF, DNG 1.7;
# 9 is the VC-5 of GoPro's GPR files) and those LibRaw decodes.
DNG_COMPRESSIONS = {1: 'no compression', 7: 'lossless JPEG', 8: 'Deflate', 9: 'VC-5',
                    34892: 'lossy JPEG', 52546: 'JPEG XL'}
LIBRAW_DNG_COMPRESSIONS = (1, 7, 8, 34892)
DNG_LINEAR_RAW = 34892          # PhotometricInterpretation of a demosaiced DNG (CFA data is 32803)


def tiff_facts(path):
    """What tifffile reads of a TIFF-based file: dict(dng, compression, photometric, data_end, size); None otherwise.

    compression and photometric are a DNG's full-size raw image's (NewSubfileType 0; None for other
    files); data_end is where the image data of its directories end (past `size`: the file is truncated).
    """
    logger = logging.getLogger('tifffile')
    quiet, logger.disabled = logger.disabled, True     # it logs each tag it cannot read, on stderr
    try:
        with tifffile.TiffFile(path) as tif:
            size = tif.filehandle.size
            pages = [p for page in tif.pages for p in [page] + list(getattr(page, 'pages', None) or [])]
            dng = 'DNGVersion' in tif.pages[0].tags
            raw = [p for p in pages if p.subfiletype == 0] if dng else []
            ends = [offset + count for p in (raw[:1] or pages)
                    for offset, count in zip(p.dataoffsets, p.databytecounts) if offset]
            return {'dng': dng, 'compression': int(raw[0].compression) if raw else None,
                    'photometric': int(raw[0].photometric) if raw else None,
                    'data_end': max(ends, default=0), 'size': size}
    except Exception:       # not TIFF-based, or too damaged to say more than LibRaw did
        return None
    finally:
        logger.disabled = quiet


def unreadable(path, libraw_said):
    """The UserError for a file LibRaw cannot read: truncated, compressed in a way LibRaw cannot decode, or else."""
    facts = tiff_facts(path)
    if facts and facts['data_end'] > facts['size']:
        return UserError('cannot read %s: the file is truncated (its image data run to byte %d, the file ends at '
                         'byte %d): copy or download it again' % (path, facts['data_end'], facts['size']))
    if facts and facts['dng'] and facts['compression'] not in LIBRAW_DNG_COMPRESSIONS + (None,):
        name = DNG_COMPRESSIONS.get(facts['compression'], 'an unknown method')
        return UserError('cannot read %s: its raw image is compressed with %s (DNG Compression %d), which LibRaw '
                         'cannot decode: convert it to an uncompressed DNG first (GoPro\'s gpr_tools does so for '
                         'GPR files)' % (path, name, facts['compression']))
    return UserError('cannot read %s (%s): the file is damaged, truncated or not a camera RAW file'
                     % (path, libraw_said))


def read_camera_raw(path, black_level=ZURICH_BLACK_LEVEL, white_level=ZURICH_WHITE_LEVEL,
                    camera_black_level=None, camera_white_level=None, note=None):
    """A camera RAW file (DNG, CR2, NEF, ... as LibRaw reads it) -> (uint16 Zurich mosaic [H, W], flip).

    The visible area (LibRaw's, narrowed to a DNG's DefaultCrop if there is one) is cropped to the
    Zurich phase (R at (0,0)) by dropping the first row and/or column, never by rotating the mosaic; an odd size then loses its last row/column (said via note()).
    The camera's per-channel black and its white level (from the metadata, or the camera_* overrides)
    are mapped onto black_level/white_level. `flip` is LibRaw's orientation code: apply_flip() it to
    the rendered photo.
    """
    check_levels(black_level, white_level)
    if not os.path.isfile(path):
        raise UserError('camera RAW file %s not found' % path)
    with utils.captured_stderr() as said:      # what LibRaw prints, e.g. 'photo.dng: Unexpected end of file'
        try:
            with rawpy.imread(path) as raw:
                flat = raw.raw_type == rawpy.RawType.Flat
                num_colors = raw.num_colors
                pattern = raw.raw_pattern
                color_desc = raw.color_desc.decode('ascii', 'replace')
                visible = raw.raw_image_visible.copy() if flat else None
                colors = raw.raw_colors_visible.copy() if flat else None
                blacks = list(raw.black_level_per_channel)
                white = raw.white_level
                sizes = raw.sizes
        except rawpy.LibRawFileUnsupportedError:
            error = 'not a camera RAW file LibRaw can read'
        except (rawpy.LibRawError, MemoryError, ValueError) as caught:
            error = str(caught).strip("b'\"") or type(caught).__name__
        else:
            error = None
    if error is not None:
        raise unreadable(path, '; '.join(dict.fromkeys([error] + [line.split(': ', 1)[-1] for line in said])))
    facts = tiff_facts(path)
    dng = bool(facts and facts['dng'])

    # Sensor layout: only whole 2x2 Bayer cells can be packed into PyNET's four channels.
    if not flat or visible.ndim != 2:
        if dng and facts['photometric'] == DNG_LINEAR_RAW:
            raise UserError('%s is a LinearRaw DNG (as Apple ProRAW and converted DNGs are): already demosaiced, '
                            'not a Bayer mosaic; PyNET needs the mosaic of a 2x2 Bayer sensor (the camera\'s own '
                            'RAW file or a CFA DNG)' % path)
        raise UserError('%s holds several values per pixel (a linear, already demosaiced RAW or a Foveon '
                        'sensor), not a Bayer mosaic: PyNET needs the mosaic of a 2x2 Bayer sensor' % path)
    if num_colors == 1 or pattern is None or pattern.size == 1:
        raise UserError('%s: monochrome sensor (no colour filter array): PyNET needs a 2x2 Bayer sensor' % path)
    if pattern.shape != (2, 2):
        raise UserError('%s: %dx%d colour filter pattern (X-Trans or Quad Bayer?): PyNET needs a 2x2 Bayer '
                        'sensor (RGGB, BGGR, GRBG or GBRG)' % ((path,) + pattern.shape))
    # A DNG's DefaultCrop (LibRaw gives it in raw-frame coordinates) narrows the visible area. Other
    # formats keep LibRaw's whole visible area: their crop there is a maker's suggestion for its JPEGs.
    top, left = sizes.crop_top_margin - sizes.top_margin, sizes.crop_left_margin - sizes.left_margin
    height, width = sizes.crop_height, sizes.crop_width
    if dng and height and width and top >= 0 and left >= 0 and top + height <= visible.shape[0] \
            and left + width <= visible.shape[1]:
        visible = visible[top:top + height, left:left + width]
        colors = colors[top:top + height, left:left + width]
    if visible.shape[0] < 3 or visible.shape[1] < 3:
        raise UserError('%s: the visible area is only %dx%d pixels' % ((path,) + visible.shape))
    cell = colors[:2, :2]
    # Colours must repeat with period 2 over the whole image, else this is no Bayer sensor.
    even_h, even_w = colors.shape[0] // 2 * 2, colors.shape[1] // 2 * 2
    if not np.array_equal(colors[:even_h, :even_w], np.tile(cell, (even_h // 2, even_w // 2))):
        raise UserError('%s: the colour filter pattern does not repeat every 2x2 pixels: PyNET needs a 2x2 '
                        'Bayer sensor' % path)
    letters = [color_desc[c] if c < len(color_desc) else '?' for c in cell.ravel()]
    row, col = bayer_phase(letters, path)

    # Levels per cell position (the two greens may differ), overridable as a whole.
    cell_black = np.array([[blacks[c] for c in r] for r in cell], np.float64)
    if camera_black_level is not None:
        cell_black[:] = camera_black_level
    if camera_white_level is not None:
        white = camera_white_level
    if cell_black.max() >= white:
        source = 'as given' if camera_black_level is not None or camera_white_level is not None else \
            'in its metadata'
        raise UserError('%s: black level %g >= white level %g (%s): pass camera_black_level= and '
                        'camera_white_level= with the right values' % (path, cell_black.max(), white, source))

    mosaic = visible[row:, col:]
    cell_black = np.roll(cell_black, (-row, -col), axis=(0, 1))
    mosaic = crop_to_even(mosaic, path, note)
    black = np.tile(cell_black, (mosaic.shape[0] // 2, mosaic.shape[1] // 2))
    return map_levels(mosaic, black, white, black_level, white_level), int(sizes.flip)


def read_raw_flip(path):
    """LibRaw orientation code stored (as EXIF Orientation) in a RAW PNG written by dng_to_png.py; 0 if none."""
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 0    # read_raw_png reports unreadable files
    return EXIF_ORIENTATION_TO_FLIP.get(orientation, 0)


def read_raw_image(path, black_level=ZURICH_BLACK_LEVEL, white_level=ZURICH_WHITE_LEVEL,
                   camera_black_level=None, camera_white_level=None, note=None):
    """Any RAW input -> (even-sized uint16 Zurich mosaic, flip): a Zurich PNG as stored, a camera file mapped."""
    if os.path.splitext(path)[1].lower() == '.png':
        mosaic = read_raw_png(path)
        return crop_to_even(mosaic, path, note), read_raw_flip(path)
    return read_camera_raw(path, black_level, white_level, camera_black_level, camera_white_level, note)
