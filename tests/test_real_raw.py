"""Camera files written by other people (tests/data/realraw/, see its README): both readers, the
camera-file reader of test_model.py (image_io.read_raw_image) and dng_to_png.py, on each of them.

The Bayer ones must give LibRaw's own visible mosaic from its first R site on, with each channel's
black level and the white level mapped onto the Zurich 64..1023 (as image_io.map_levels documents);
the others must be refused on one line that names the real cause.
"""
import os

import numpy as np
import pytest
import rawpy

import image_io
from conftest import DATA, assert_one_line_error, run_script
from test_test_model import shared_models_dir

REAL = os.path.join(DATA, 'realraw')
# name: (visible shape LibRaw reports, per-channel black levels R, G, B, G2, white level)
BAYER = {'imagemeta_CRW.CRW': ((1448, 2176), [127, 128, 128, 128], 4095),
         'ohos_test_dng_mock.dng': ((32, 32), [7414, 8021, 8675, 7639], 16383)}
# name: fragments of its one-line refusal
REFUSED = {'aosp-mediaprovider_lg_g4_iso_800_dng.dng': ('LinearRaw DNG', 'not a Bayer mosaic'),
           'ohos_test_dng_readmetadata001.dng': ('LinearRaw DNG', 'already demosaiced'),
           'gopro-gpr_Hero6_GOPR0024.GPR': ('compressed with VC-5', 'LibRaw cannot decode'),
           'filetype_fixture-Leica-M10.dng': ('truncated', 'the file ends at byte 100000')}
ZURICH_BLACK, ZURICH_WHITE = 64, 1023

models_dir = pytest.fixture(shared_models_dir, name='models_dir', scope='session')


def libraw_mosaic(path, one_black=False):
    """LibRaw's visible mosaic from its first R site on, levels mapped per pixel, computed here in numpy.

    one_black=True maps every pixel with the R channel's black (a wrong reading, for contrast).
    """
    with rawpy.imread(path) as raw:
        visible = raw.raw_image_visible.astype(np.float64)
        colors = raw.raw_colors_visible.copy()
        letters = raw.color_desc.decode()
        blacks = np.array(raw.black_level_per_channel, np.float64)
        white = float(raw.white_level)
    cell = [[letters[c] for c in row] for row in colors[:2, :2]]
    row, col = next((r, c) for r in range(2) for c in range(2) if cell[r][c] == 'R')
    black = blacks[np.zeros_like(colors) if one_black else colors]
    mapped = (visible - black) * (ZURICH_WHITE - ZURICH_BLACK) / (white - black) + ZURICH_BLACK
    mapped = np.clip(np.round(mapped), 0, ZURICH_WHITE)[row:, col:]
    return mapped[:mapped.shape[0] // 2 * 2, :mapped.shape[1] // 2 * 2].astype(np.uint16)


def test_the_files_are_those_of_the_readme():
    names = sorted(n for n in os.listdir(REAL) if n not in ('README.md', 'LICENSE-APACHE-2.0'))
    assert names == sorted(list(BAYER) + list(REFUSED))
    readme = open(os.path.join(REAL, 'README.md')).read()
    for name in names:
        assert '| `%s` | %s |' % (name, format(os.path.getsize(os.path.join(REAL, name)), ',')) in readme, name


@pytest.mark.parametrize('name', sorted(BAYER))
def test_bayer_files_read_as_libraw_mosaic(name):
    path = os.path.join(REAL, name)
    shape, blacks, white = BAYER[name]
    with rawpy.imread(path) as raw:
        assert raw.raw_image_visible.shape == shape
        assert list(raw.black_level_per_channel) == blacks and raw.white_level == white
    expected = libraw_mosaic(path)
    assert expected.shape == shape          # both files have R at (0, 0) and even sizes
    mosaic, flip = image_io.read_raw_image(path)      # test_model.py's reader
    assert flip == 0 and mosaic.dtype == np.uint16
    np.testing.assert_array_equal(mosaic, expected)
    # The test can tell: the picture has contrast, and one black for every channel gives other numbers.
    assert mosaic.std() > 20 and (libraw_mosaic(path, one_black=True) != expected).mean() > 0.1


@pytest.mark.parametrize('name', sorted(REFUSED))
def test_other_files_are_refused_naming_the_cause(name, tmp_path):
    path = os.path.join(REAL, name)
    result = run_script('dng_to_png.py', path, 'output_dir=%s' % tmp_path, cwd=str(tmp_path))
    assert_one_line_error(result, name, *REFUSED[name])
    assert result.returncode == 2 and 'damaged' not in result.stderr
    assert os.listdir(tmp_path) == []


def test_dng_to_png_converts_a_folder_of_them(tmp_path):
    folder = tmp_path / 'camera'
    folder.mkdir()
    for name in list(BAYER) + list(REFUSED):
        os.symlink(os.path.join(REAL, name), folder / name)
    out = tmp_path / 'out'
    result = run_script('dng_to_png.py', folder, 'output_dir=%s' % out, cwd=str(tmp_path))
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(REFUSED) + 1 and '4 of the files' in errors[-1], result.stderr
    for name, fragments in REFUSED.items():
        line = next(l for l in errors if name in l)
        assert line.startswith('error: ') and all(f in line for f in fragments), line
    assert sorted(os.listdir(out)) == sorted(os.path.splitext(n)[0] + '.png' for n in BAYER)
    for name in BAYER:
        png = image_io.read_raw_png(str(out / (os.path.splitext(name)[0] + '.png')))
        np.testing.assert_array_equal(png, libraw_mosaic(os.path.join(REAL, name)))


def test_test_model_renders_the_bayer_ones_and_refuses_the_others(models_dir, tmp_path):
    out = tmp_path / 'out'
    # One file: refused on one line before the model loads.
    for name, fragments in REFUSED.items():
        result = run_script('test_model.py', 'level=5', 'use_gpu=false', 'models_dir=%s' % models_dir,
                            'input=%s' % os.path.join(REAL, name), 'output_dir=%s' % out, cwd=str(tmp_path))
        assert_one_line_error(result, name, *fragments)
    # The folder: the Bayer files rendered (level 5: small and quick), the others reported.
    result = run_script('test_model.py', 'level=5', 'use_gpu=false', 'models_dir=%s' % models_dir,
                        'input=%s' % REAL, 'output_dir=%s' % out, cwd=str(tmp_path))
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
    assert len(errors) == len(REFUSED) + 1 and '4 of 6 files' in errors[-1], result.stderr
    assert sorted(os.listdir(out)) == sorted('%s_level_5_iteration_7.png' % os.path.splitext(n)[0] for n in BAYER)
