"""Converts camera RAW files (DNG and the other formats LibRaw reads) into Zurich RAW PNGs.

    python dng_to_png.py photo.dng [more files or folders] [key=value ...]

Each file becomes <name>.png next to it (or in output_dir=): a 16-bit single-channel PNG of the
visible Bayer mosaic in the Zurich convention (R at row 0, column 0 of each 2x2 cell; levels mapped
onto the training sensor's black and white), exactly what test_model.py makes of the file itself.
The camera's orientation is kept as the PNG's EXIF Orientation, which test_model.py applies to the
rendered photo. A file that cannot be converted is reported on one line; the others still are.
"""

import os
import sys

import image_io
import utils
from utils import Key, UserError

USAGE = __doc__.split('\n\n')[1]
KEYS = {
    'output_dir': Key(None, str, 'folder for the PNGs (default: next to each file)'),
    'black_level': Key(image_io.ZURICH_BLACK_LEVEL, int, 'black level of the training sensor the PNG uses'),
    'white_level': Key(image_io.ZURICH_WHITE_LEVEL, int, 'white level of the training sensor the PNG uses'),
    'camera_black_level': Key(None, int, "override the black level of the files' metadata"),
    'camera_white_level': Key(None, int, "override the white level of the files' metadata"),
}


def split_argv(argv):
    """(paths, key=value words): a word is a path if it exists, or has no '=' and does not ask for help."""
    paths = [w for w in argv if os.path.exists(w) or ('=' not in w and w not in ('help', '-h', '--help'))]
    return paths, [w for w in argv if w not in paths]


def expand(path):
    """The camera RAW files named by one argument: the file itself, or a folder's files with a RAW extension."""
    if os.path.isdir(path):
        files = image_io.raw_files(path, image_io.CAMERA_RAW_EXTENSIONS)
        if not files:
            raise UserError('no camera RAW files (%s ...) in folder %s'
                            % (' '.join(image_io.CAMERA_RAW_EXTENSIONS[:6]), path))
        return files
    if not os.path.isfile(path):
        raise UserError('%s: no such file or folder' % path)
    return [path]


def convert(path, config, note=None):
    """Writes the Zurich PNG of one camera file; returns its path."""
    folder = config['output_dir'] or os.path.dirname(path)
    output = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + '.png')
    if os.path.abspath(output) == os.path.abspath(path):
        raise UserError('%s is already a PNG, not a camera RAW file' % path)
    mosaic, flip = image_io.read_camera_raw(path, config['black_level'], config['white_level'],
                                            config['camera_black_level'], config['camera_white_level'], note)
    try:
        image_io.save_raw_png(output, mosaic, flip)
    except OSError as error:
        raise UserError('cannot write %s (%s)' % (output, error.strerror or error))
    return output, mosaic.shape, flip


def main(argv):
    paths, words = split_argv(argv)
    config = utils.parse_args(words, KEYS, USAGE)
    if not paths:
        raise UserError('no files given: python dng_to_png.py photo.dng [more files or folders] [key=value ...]')
    image_io.check_levels(config['black_level'], config['white_level'])
    items, failed = [], 0
    for path in paths:
        try:
            items.extend(expand(path))
        except UserError as error:
            if len(paths) == 1:
                raise
            print('error: %s' % error, file=sys.stderr)
            failed += 1
    for path in items:
        try:
            output, shape, flip = convert(path, config)
        except UserError as error:
            if len(paths) == 1 and len(items) == 1:
                raise   # a single file: its error is the one line
            print('error: %s' % error, file=sys.stderr)
            failed += 1
            continue
        oriented = ', EXIF orientation %d' % image_io.FLIP_TO_EXIF_ORIENTATION[flip] if flip else ''
        print('wrote %s (%dx%d%s)' % (output, shape[0], shape[1], oriented))
    if failed:
        raise UserError('%d of the files and folders given could not be converted (see above)' % failed)


if __name__ == '__main__':
    utils.run_main(main)
