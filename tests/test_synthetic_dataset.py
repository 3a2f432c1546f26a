"""make_synthetic_dataset.py: Zurich layout and formats, noise as configured, the DNG, determinism."""
import json
import os

import numpy as np
import pytest
import rawpy
from PIL import Image

import camera_pipeline as cp
import image_io
import make_synthetic_dataset as msd
from conftest import assert_one_line_error

SMALL = ['patch_size=64', 'train_patches=4', 'test_patches=2', 'test_photos=chelsea', 'train_photos=coffee']


def build(out, *args):
    msd.main(['output_dir=%s' % out] + SMALL + list(args))
    with open(os.path.join(out, msd.MARKER)) as f:
        return json.load(f)


def all_bytes(folder):
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('synthetic'))
    return out, build(out, 'seed=3')


def test_zurich_layout_and_formats(dataset):
    out, info = dataset
    for split, count in (('train', 4), ('test', 2)):
        assert sorted(os.listdir(os.path.join(out, split, 'huawei_raw'))) == ['%d.png' % i for i in range(count)]
        assert sorted(os.listdir(os.path.join(out, split, 'canon'))) == ['%d.jpg' % i for i in range(count)]
        for i in range(count):
            with Image.open(os.path.join(out, split, 'huawei_raw', '%d.png' % i)) as png:
                assert png.format == 'PNG' and png.mode == 'I;16' and png.size == (64, 64)
            with Image.open(os.path.join(out, split, 'canon', '%d.jpg' % i)) as jpg:
                assert jpg.format == 'JPEG' and jpg.mode == 'RGB' and jpg.size == (64, 64)
            raw = image_io.read_raw_png(os.path.join(out, split, 'huawei_raw', '%d.png' % i))
            assert raw.dtype == np.uint16 and raw.max() <= 1023
            assert image_io.pack_raw(raw).shape == (32, 32, 4)
    chelsea = msd.load_photo('chelsea')
    full = image_io.read_raw_png(os.path.join(out, 'test', 'huawei_full_resolution', 'chelsea.png'))
    assert full.shape == (chelsea.shape[0] // 2 * 2, chelsea.shape[1] // 2 * 2)
    target = image_io.read_rgb_image(os.path.join(out, 'test', 'canon_full_resolution', 'chelsea.jpg'))
    assert target.shape == full.shape + (3,)
    assert os.path.isfile(os.path.join(out, 'test', 'dng', 'chelsea.dng'))
    assert [r['photo'] for r in info['train']] == ['coffee'] * 4


def test_patches_are_aligned_crops_of_the_photo(dataset):
    out, info = dataset
    photo = msd.load_photo('coffee')
    for record in info['train']:
        top, left = record['top'], record['left']
        crop = photo[top:top + 64, left:left + 64].astype(float)
        target = image_io.read_rgb_image(os.path.join(out, 'train', 'canon', '%d.jpg' % record['index']))
        error = np.abs(target - crop).mean()
        assert error < 5.0                                # JPEG, quality 95, 4:2:0 chroma
        shifted = photo[top + 2:top + 66, left + 2:left + 66].astype(float)
        if shifted.shape == crop.shape:
            assert error < np.abs(target - shifted).mean()
        # The RAW is the unprocessed crop plus noise of the configured size: a misaligned
        # crop or a wrong Bayer order would leave residuals far above the noise.
        scene = {k: record[k] for k in ('red_gain', 'blue_gain', 'exposure')}
        signal = cp.mosaic(cp.unprocess(crop / 255.0, np.array(info['xyz_to_cam']), **scene)) * (1023 - 64)
        raw = image_io.read_raw_png(os.path.join(out, 'train', 'huawei_raw', '%d.png' % record['index']))
        normalised = (raw - 64.0 - signal) ** 2 / (0.5 * signal + 1.5 ** 2 + 1 / 12.0)
        assert abs(normalised.mean() - 1) < 0.15, normalised.mean()


def flat_photo(tmp_path, grey):
    path = str(tmp_path / 'flat.png')
    Image.fromarray(np.full((96, 96, 3), grey, np.uint8)).save(path)
    return path


@pytest.mark.parametrize('shot,read,black', [(0.5, 1.5, 64), (0.0, 4.0, 16), (2.0, 0.0, 64)])
def test_noise_and_levels_as_configured(tmp_path, shot, read, black):
    photo = flat_photo(tmp_path, 140)
    out = str(tmp_path / 'flat')
    info = build(out, 'train_photos=%s' % photo, 'test_photos=%s' % photo, 'train_patches=6',
                 'shot_noise=%s' % shot, 'read_noise=%s' % read, 'black_level=%d' % black)
    xyz_to_cam = np.array(info['xyz_to_cam'])
    for record in info['train']:
        scene = {k: record[k] for k in ('red_gain', 'blue_gain', 'exposure')}
        camera = cp.unprocess(np.full((1, 1, 3), 140 / 255.0), xyz_to_cam, **scene)[0, 0]
        raw = image_io.read_raw_png(os.path.join(out, 'train', 'huawei_raw', '%d.png' % record['index']))
        for (row, col), channel in cp.BAYER_SITES:
            values = raw[row::2, col::2].astype(float).ravel()
            signal = camera[channel] * (1023 - black)
            expected_var = shot * signal + read ** 2 + 1 / 12.0    # + rounding to integers
            assert abs(values.mean() - (black + signal)) < 0.6 + 4 * np.sqrt(expected_var / values.size)
            assert abs(values.var() / expected_var - 1) < 0.2, (values.var(), expected_var)


def test_dng_readable_by_rawpy_with_pattern_levels_and_colours(tmp_path):
    out = str(tmp_path / 'd')
    info = build(out, 'black_level=48', 'white_level=1000')
    full = info['full_resolution'][0]
    png = image_io.read_raw_png(os.path.join(out, 'test', 'huawei_full_resolution', 'chelsea.png'))
    with rawpy.imread(os.path.join(out, 'test', 'dng', 'chelsea.dng')) as raw:
        colours = raw.color_desc.decode()
        pattern = [[colours[c] for c in row] for row in raw.raw_pattern]
        assert pattern == [['R', 'G'], ['G', 'B']]          # Zurich: R at (0,0), B at (1,1)
        assert list(raw.black_level_per_channel) == [48] * 4
        assert raw.white_level == 1000
        assert np.array_equal(raw.raw_image_visible, png)
        wb = raw.camera_whitebalance
        assert wb[0] / wb[1] == pytest.approx(full['red_gain'], rel=1e-3)
        assert wb[2] / wb[1] == pytest.approx(full['blue_gain'], rel=1e-3)
        # LibRaw's own colour pipeline, from the DNG's colour matrix and white balance,
        # must give back the photo's linear light (times the exposure) on every channel.
        linear = raw.postprocess(use_camera_wb=True, no_auto_bright=True, gamma=(1, 1), output_bps=16,
                                 output_color=rawpy.ColorSpace.sRGB, user_flip=0) / 65535.0
    photo = image_io.read_rgb_image(os.path.join(out, 'test', 'canon_full_resolution', 'chelsea.jpg')) / 255.0
    truth = cp.inverse_srgb_gamma(cp.inverse_tone_curve(photo)) * full['exposure']
    usable = (truth > 0.05).all(axis=-1) & (truth < 0.6).all(axis=-1)
    for channel in range(3):
        ratio = np.median(linear[usable, channel] / truth[usable, channel])
        assert ratio == pytest.approx(1.0, abs=0.05), (channel, ratio)


def test_same_seed_same_bytes_other_seed_other_files(tmp_path, dataset):
    out, _ = dataset
    again = str(tmp_path / 'again')
    other = str(tmp_path / 'other')
    build(again, 'seed=3')
    build(other, 'seed=4')
    first, second, third = all_bytes(out), all_bytes(again), all_bytes(other)
    assert len(first) == 4 * 2 + 2 * 2 + 3 + 1
    assert first == second
    assert sorted(first) == sorted(third)
    differing = [name for name in first if first[name] != third[name]]
    assert all(name in differing for name in first if name.endswith(('.png', '.dng')))


def test_more_training_patches_leave_the_test_set_unchanged(tmp_path, dataset):
    out, _ = dataset
    bigger = str(tmp_path / 'bigger')
    build(bigger, 'seed=3', 'train_patches=6')
    first, second = all_bytes(out), all_bytes(bigger)
    assert all(first[name] == second[name] for name in first
               if name.startswith('test') or name.startswith(os.path.join('train', 'huawei_raw', '3')))


def test_round_trip_of_the_camera_pipeline():
    rng = np.random.default_rng(0)
    photo = rng.uniform(0.02, 0.85, (8, 8, 3))
    xyz_to_cam = cp.sample_camera(rng)
    scene = cp.sample_scene(rng)
    back = cp.process(cp.unprocess(photo, xyz_to_cam, **scene), xyz_to_cam, **scene)
    np.testing.assert_allclose(back, photo, atol=1e-6)
    flat = cp.bilinear_demosaic(cp.mosaic(np.full((6, 8, 3), [0.2, 0.5, 0.7])))
    np.testing.assert_allclose(flat, np.full((6, 8, 3), [0.2, 0.5, 0.7]), atol=1e-12)


def test_bad_input_one_line_errors(run, tmp_path):
    out = str(tmp_path / 'x')
    assert_one_line_error(run('make_synthetic_dataset.py', 'output_dir=' + out, 'patch_size=100'),
                          'patch_size=100', 'multiple of 32')
    assert_one_line_error(run('make_synthetic_dataset.py', 'output_dir=' + out, 'train_photos=nosuchphoto'),
                          'nosuchphoto')
    os.makedirs(os.path.join(out, 'train'))
    assert_one_line_error(run('make_synthetic_dataset.py', 'output_dir=' + out, *SMALL),
                          'not made by this script')
    assert os.path.isdir(os.path.join(out, 'train'))         # never deleted


def test_rebuild_needs_overwrite(dataset, tmp_path):
    out = str(tmp_path / 'y')
    build(out)
    with pytest.raises(msd.UserError, match='overwrite=true'):
        build(out)
    build(out, 'overwrite=true', 'train_patches=2')
    assert sorted(os.listdir(os.path.join(out, 'train', 'huawei_raw'))) == ['0.png', '1.png']


def test_baseline_scores_fall_with_noise(tmp_path):
    import baseline
    scores = {}
    for noise in ('0', '8'):
        out = str(tmp_path / ('noise' + noise))
        build(out, 'test_photos=astronaut', 'test_patches=3', 'shot_noise=' + noise, 'read_noise=' + noise)
        scores[noise] = baseline.evaluate(out, baseline.METHODS)
    for method in baseline.METHODS:
        assert scores['0'][method]['patches'] == 3
        assert scores['0'][method]['psnr'] > scores['8'][method]['psnr'] + 3
        assert scores['0'][method]['ssim'] > scores['8'][method]['ssim']
    # With the true parameters and no noise, only bilinear demosaicing stands between RAW and photo.
    assert scores['0']['isp']['psnr'] > 28
