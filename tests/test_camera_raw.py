"""Camera RAW files: packing order, Bayer phase, levels, orientation, dng_to_png.py, and refusals on one line."""
import os

import numpy as np
import pytest
import rawpy
from PIL import Image

import image_io
from conftest import assert_one_line_error, run_script
from test_test_model import EXACT_ENV, shared_models_dir

# (row, col) where each pattern's DNG starts relative to the Zurich (RGGB) scene: one row and/or
# column earlier moves R off (0, 0) and gives the other three patterns.
PATTERN_SHIFTS = {'RGGB': (0, 0), 'GRBG': (0, 1), 'GBRG': (1, 0), 'BGGR': (1, 1)}
# Per-site black levels of the test camera (the Zurich cell: R, G of R rows, G of B rows, B) and a 12-bit white.
SITE_BLACKS = {(0, 0): 48, (0, 1): 128, (1, 0): 200, (1, 1): 256}
CAMERA_WHITE = 4095
SCENE_SHAPE = (34, 50)

models_dir = pytest.fixture(shared_models_dir, name='models_dir', scope='session')


def zurich_scene(seed=0):
    """A 10-bit Zurich-convention mosaic one row and column larger than SCENE_SHAPE (row/col -1 first)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SCENE_SHAPE[0] + 1, 0:SCENE_SHAPE[1] + 1]
    base = 450 + 350 * np.sin(x / 5.0) * np.cos(y / 4.0)
    return np.clip(base + rng.normal(0, 40, base.shape), 64, 1023).astype(np.uint16)


def write_pattern_dng(path, big, pattern, orientation=6):
    """The scene big[1:, 1:] as a 12-bit camera DNG with `pattern`: starts one row/column early as needed."""
    sr, sc = PATTERN_SHIFTS[pattern]
    zurich = big[1 - sr:, 1 - sc:].astype(np.float64)
    black = np.zeros(zurich.shape)
    for (r, c), value in SITE_BLACKS.items():
        black[(r + sr) % 2::2, (c + sc) % 2::2] = value
    # Inverse of the level mapping: Zurich 64..1023 -> camera black..4095.
    camera = np.round((zurich - 64) * (CAMERA_WHITE - black) / (1023 - 64) + black)
    blacks = [SITE_BLACKS[((i + sr) % 2, (j + sc) % 2)] for i in range(2) for j in range(2)]
    return image_io.write_dng(path, camera, pattern, black_level=blacks, white_level=CAMERA_WHITE,
                              orientation=orientation)


def test_pack_unpack_is_lossless_in_the_spec_channel_order():
    rng = np.random.default_rng(0)
    mosaic = rng.integers(0, 1024, (32, 48)).astype(np.uint16)
    packed = image_io.pack_raw(mosaic)
    assert packed.shape == (16, 24, 4) and packed.dtype == np.float32
    # B, Gb, R, Gr: raw[1::2, 1::2], raw[0::2, 1::2], raw[0::2, 0::2], raw[1::2, 0::2], divided by 1020.
    for channel, (r, c) in enumerate(((1, 1), (0, 1), (0, 0), (1, 0))):
        np.testing.assert_array_equal(packed[..., channel], mosaic[r::2, c::2].astype(np.float32) / 1020)
    np.testing.assert_array_equal(np.round(packed * 1020).astype(np.uint16), image_io.bayer_planes(mosaic))  # lossless
    np.testing.assert_array_equal(image_io.mosaic_from_planes(image_io.bayer_planes(mosaic)), mosaic)   # the inverse


def test_rggb_with_the_training_levels_is_the_exact_mosaic(tmp_path):
    rng = np.random.default_rng(1)
    mosaic = rng.integers(0, 1024, SCENE_SHAPE).astype(np.uint16)    # below black too: kept as is
    path = image_io.write_dng(str(tmp_path / 'plain.dng'), mosaic, 'RGGB', black_level=64, white_level=1023)
    with rawpy.imread(path) as raw:
        visible = raw.raw_image_visible.copy()
    np.testing.assert_array_equal(visible, mosaic)
    got, flip = image_io.read_camera_raw(path)
    assert flip == 0 and got.dtype == np.uint16
    np.testing.assert_array_equal(got, visible)


def test_four_patterns_give_the_same_zurich_mosaic(tmp_path):
    big = zurich_scene()
    mosaics = {}
    for pattern in PATTERN_SHIFTS:
        path = write_pattern_dng(str(tmp_path / (pattern + '.dng')), big, pattern)
        notes = []
        mosaics[pattern], flip = image_io.read_camera_raw(path, note=notes.append)
        assert flip == 6 and notes == []
    for pattern, mosaic in mosaics.items():
        np.testing.assert_array_equal(mosaic, mosaics['RGGB'], err_msg=pattern)
    # The level mapping undoes the camera's per-site blacks and 12-bit white (up to rounding).
    assert mosaics['RGGB'].shape == SCENE_SHAPE
    assert np.abs(mosaics['RGGB'].astype(int) - big[1:, 1:]).max() <= 1
    # Same-size DNGs cut from one RGGB scene at offsets 0 or 1: the phase crop drops a row/column
    # at the top/left, so each reads the scene from row/column 0 or 2 on, the same values there.
    height, width = SCENE_SHAPE
    for pattern, (sr, sc) in PATTERN_SHIFTS.items():
        path = image_io.write_dng(str(tmp_path / ('cut_%s.dng' % pattern)), big[sr:sr + height, sc:sc + width],
                                  pattern)
        got, _ = image_io.read_camera_raw(path)
        assert got.shape == (height - 2 * sr, width - 2 * sc), pattern
        np.testing.assert_array_equal(got, big[2 * sr:height, 2 * sc:width], err_msg=pattern)
    # Other training levels: the camera's black goes to black_level and its white to white_level.
    low, _ = image_io.read_camera_raw(str(tmp_path / 'BGGR.dng'), black_level=0, white_level=511)
    expected = np.round((big[1:, 1:].astype(float) - 64) * 511 / 959)
    assert np.abs(low.astype(int) - expected).max() <= 1


def test_odd_sizes_drop_a_row_or_column_and_say_so(tmp_path):
    mosaic = np.random.default_rng(2).integers(64, 1024, (35, 51)).astype(np.uint16)
    image_io.write_dng(str(tmp_path / 'odd.dng'), mosaic, 'RGGB')
    notes = []
    got, _ = image_io.read_camera_raw(str(tmp_path / 'odd.dng'), note=notes.append)
    np.testing.assert_array_equal(got, mosaic[:34, :50])
    assert len(notes) == 1 and '35x51' in notes[0] and 'the last row and the last column' in notes[0]
    # BGGR: the phase crop takes the first row and column, which leaves an even size.
    image_io.write_dng(str(tmp_path / 'odd_bggr.dng'), mosaic, 'BGGR')
    notes = []
    got, _ = image_io.read_camera_raw(str(tmp_path / 'odd_bggr.dng'), note=notes.append)
    np.testing.assert_array_equal(got, mosaic[1:, 1:])
    assert notes == []


def test_dng_default_crop_narrows_the_visible_area(tmp_path):
    mosaic = np.random.default_rng(5).integers(64, 1024, (40, 64)).astype(np.uint16)
    path = image_io.write_dng(str(tmp_path / 'crop.dng'), mosaic, 'GRBG', default_crop=(4, 6, 50, 30))
    got, _ = image_io.read_camera_raw(path, note=lambda message: None)
    # Crop rows 6..35 and columns 4..53, then one column for the GRBG phase, then the odd last column.
    np.testing.assert_array_equal(got, mosaic[6:36, 5:53])


def test_flip_orients_like_libraw(tmp_path):
    mosaic = np.random.default_rng(3).integers(64, 1024, (32, 48)).astype(np.uint16)
    for orientation in range(1, 9):
        path = image_io.write_dng(str(tmp_path / ('o%d.dng' % orientation)), mosaic, orientation=orientation)
        _, flip = image_io.read_camera_raw(path)
        assert image_io.FLIP_TO_EXIF_ORIENTATION[flip] == orientation
        with rawpy.imread(path) as raw:
            options = dict(no_auto_bright=True, output_bps=16, half_size=True)
            upright, oriented = raw.postprocess(user_flip=0, **options), raw.postprocess(**options)
        np.testing.assert_array_equal(image_io.apply_flip(upright, flip), oriented)


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """A folder of camera DNGs (four patterns of one scene, upright and turned; the training levels) and a
    broken one, converted by one dng_to_png.py run into out/."""
    folder = tmp_path_factory.mktemp('camera')
    big = zurich_scene()
    for pattern in PATTERN_SHIFTS:
        write_pattern_dng(str(folder / (pattern + '.dng')), big, pattern)
    write_pattern_dng(str(folder / 'upright.dng'), big, 'GBRG', orientation=1)
    plain = np.random.default_rng(1).integers(0, 1024, SCENE_SHAPE).astype(np.uint16)
    image_io.write_dng(str(folder / 'plain.dng'), plain, 'RGGB')
    (folder / 'broken.dng').write_text('not a raw file\n')
    (folder / 'notes.txt').write_text('skipped: not a camera RAW extension\n')
    result = run_script('dng_to_png.py', str(folder), 'output_dir=%s' % (folder / 'out'), cwd=str(folder))
    return folder, result


def test_dng_to_png_writes_the_mosaic_and_reports_bad_files(converted):
    folder, result = converted
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and 'broken.dng' in errors[0] and 'cannot read' in errors[0], result.stderr
    out = folder / 'out'
    assert sorted(os.listdir(out)) == ['BGGR.png', 'GBRG.png', 'GRBG.png', 'RGGB.png', 'plain.png', 'upright.png']
    reference, flip = image_io.read_camera_raw(str(folder / 'RGGB.dng'))
    for name in ('RGGB', 'GRBG', 'GBRG', 'BGGR', 'upright'):
        png = image_io.read_raw_png(str(out / (name + '.png')))
        np.testing.assert_array_equal(png, reference, err_msg=name)
        assert image_io.read_raw_flip(str(out / (name + '.png'))) == (0 if name == 'upright' else 6)
    with Image.open(out / 'RGGB.png') as image:
        assert image.mode == 'I;16'      # 16-bit single channel
    with rawpy.imread(str(folder / 'plain.dng')) as raw:
        np.testing.assert_array_equal(image_io.read_raw_png(str(out / 'plain.png')), raw.raw_image_visible)


def test_dng_and_its_png_render_alike_for_every_pattern(converted, models_dir, tmp_path):
    """One test_model.py run (the published-model path, 16 bits) over DNGs of the four patterns and their PNGs."""
    folder, _ = converted
    inputs = tmp_path / 'inputs'
    inputs.mkdir()
    for name in ('RGGB', 'GRBG', 'GBRG', 'BGGR', 'upright'):
        os.link(folder / (name + '.dng'), inputs / (name + '.dng'))
        os.link(folder / 'out' / (name + '.png'), inputs / (name + '.png'))
    out = tmp_path / 'out'
    result = run_script('test_model.py', 'level=0', 'orig=true', 'bits=16', 'use_gpu=false', 'input=%s' % inputs,
                        'models_dir=%s' % models_dir, 'output_dir=%s' % out, cwd=str(tmp_path), env=EXACT_ENV)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == sorted('%s_%s_level_0_orig.png' % (name, ext) for ext in ('dng', 'png')
                                             for name in ('RGGB', 'GRBG', 'GBRG', 'BGGR', 'upright'))
    photos = {name: image_io.read_rgb16_png(str(out / name)) for name in os.listdir(out)}
    upright = photos.pop('upright_dng_level_0_orig.png')
    np.testing.assert_array_equal(photos.pop('upright_png_level_0_orig.png'), upright)
    assert upright.shape == SCENE_SHAPE + (3,) and upright.std() > 100
    turned = image_io.apply_flip(upright, 6)     # EXIF 6: turned 90 degrees clockwise
    assert turned.shape == (SCENE_SHAPE[1], SCENE_SHAPE[0], 3)
    for name, photo in photos.items():
        np.testing.assert_array_equal(photo, turned, err_msg=name)


# ----------------------------------------------------------------------------------------
# bad input: one line, exit status 2

def bad_files(folder):
    """{name: (path, fragment of the error)} for every kind of file that must be refused."""
    mosaic = np.random.default_rng(4).integers(64, 1024, (32, 48)).astype(np.uint16)
    good = image_io.write_dng(str(folder / 'good.dng'), mosaic)
    files = {}
    (folder / 'text.dng').write_text('hello\n')
    files['text'] = (folder / 'text.dng', 'cannot read')
    Image.fromarray((mosaic // 4).astype(np.uint8)).convert('RGB').save(folder / 'photo.dng', format='JPEG')
    files['jpeg'] = (folder / 'photo.dng', 'not a camera RAW file')
    data = open(good, 'rb').read()
    (folder / 'truncated.dng').write_bytes(data[:len(data) // 2])
    files['truncated'] = (folder / 'truncated.dng', 'truncated')
    files['monochrome'] = (image_io.write_dng(str(folder / 'mono.dng'), mosaic, None), 'monochrome')
    xtrans = [[1, 1, 0, 1, 1, 2], [1, 1, 2, 1, 1, 0], [2, 0, 1, 0, 2, 1],
              [1, 1, 2, 1, 1, 0], [1, 1, 0, 1, 1, 2], [0, 2, 1, 2, 0, 1]]
    files['x-trans'] = (image_io.write_dng(str(folder / 'xtrans.dng'), mosaic[:30], xtrans), '6x6')
    quad = np.kron([[0, 1], [1, 2]], np.ones((2, 2), int))
    files['quad'] = (image_io.write_dng(str(folder / 'quad.dng'), mosaic, quad), 'not a Bayer pattern')
    files['black>=white'] = (image_io.write_dng(str(folder / 'levels.dng'), mosaic, black_level=1000,
                                                white_level=900), 'black level 1000 >= white level 900')
    return good, files


def test_bad_camera_files_fail_on_one_line(models_dir, tmp_path):
    good, files = bad_files(tmp_path)
    models = 'models_dir=%s' % models_dir
    for name, (path, fragment) in files.items():
        for script, args in (('dng_to_png.py', [path]), ('test_model.py', ['level=0', models, 'input=%s' % path])):
            result = run_script(script, *args, cwd=str(tmp_path))
            assert_one_line_error(result, fragment, os.path.basename(path))
            assert result.returncode == 2
    empty = tmp_path / 'empty'
    empty.mkdir()
    cases = [
        ('dng_to_png.py', [good, 'camera_black_level=5000'], 'black level 5000 >= white level 1023'),
        ('test_model.py', ['level=0', models, 'input=%s' % good, 'camera_white_level=10'], '>= white level 10'),
        ('dng_to_png.py', [good, 'black_level=900', 'white_level=100'], 'black < white'),
        ('dng_to_png.py', [good, 'white_level=4095'], '<= 1023'),
        ('dng_to_png.py', [good, 'colour=true'], "unknown key 'colour'"),
        ('dng_to_png.py', [tmp_path / 'missing.dng'], 'no such file or folder'),
        ('dng_to_png.py', [empty], 'no camera RAW files'),
        ('dng_to_png.py', [], 'no files given'),
    ]
    for script, args, fragment in cases:
        assert_one_line_error(run_script(script, *args, cwd=str(tmp_path)), fragment)
    assert not any(p.endswith('.png') for p in os.listdir(tmp_path)), 'nothing written'
