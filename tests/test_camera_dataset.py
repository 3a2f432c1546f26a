"""make_camera_dataset.py on synthetic pairs with a known answer (synthetic_pairs.py): alignment accuracy,
rejection of windows that do not match, the Zurich layout and levels, pairing, bad input, atomic output."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

import dng_to_png
import image_io
import load_dataset
import make_camera_dataset as mcd
import synthetic_pairs as sp
from conftest import assert_one_line_error, run_script

MOSAIC = (768, 1024)
PATCH = 128


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('pairs'))
    return folder, sp.write_pairs(folder, 3, MOSAIC, seed=0)


@pytest.fixture(scope='module')
def built(pairs, tmp_path_factory):
    folder, truth = pairs
    out = str(tmp_path_factory.mktemp('built') / 'dataset')
    result = run_script('make_camera_dataset.py', 'raw_dir=%s/raw' % folder, 'photo_dir=%s/photos' % folder,
                        'output_dir=%s' % out, 'patch_size=%d' % PATCH, 'test_fraction=0.3')
    assert result.returncode == 0, result.stderr
    with open(os.path.join(out, mcd.MARKER)) as f:
        return out, json.load(f), truth, result


def test_kept_windows_are_aligned_to_half_a_pixel(built):
    out, info, truth, _ = built
    residuals = [sp.residual(np.array(p['patch_to_photo']), np.array(truth[p['pair']]['mosaic_to_photo']),
                             p['top'], p['left'], PATCH) for split in ('train', 'test') for p in info[split]]
    assert len(residuals) >= 45            # of 3 x 48 windows, about half are clean
    assert np.median(residuals) <= 0.5, np.median(residuals)
    assert np.percentile(residuals, 90) <= 1.0, sorted(residuals)
    # The global homography alone is already within a pixel or so: the windows refine it.
    for pair in info['pairs']:
        assert sp.residual(np.array(pair['homography']), np.array(truth[mcd.stem(pair['raw'])]['mosaic_to_photo']),
                           0, 0, max(MOSAIC)) < 2.0


def test_windows_that_do_not_match_are_rejected(built):
    out, info, truth, _ = built
    counts = {}
    for pair in info['pairs']:
        name = mcd.stem(pair['raw'])
        for w in info['windows'][name]:
            kind = sp.window_truth(truth[name], w['top'], w['left'], PATCH, pair['photo_size'])
            counts[kind] = counts.get(kind, 0) + 1
            if kind == 'flat':
                assert w['rejected'] == 'texture', w
            elif kind == 'moved':
                assert w['rejected'] in ('correlation', 'refinement'), w
            elif kind == 'outside photo':
                assert w['rejected'] == 'outside photo', w
            elif kind == 'clean' and w['rejected'] is not None:
                counts['clean rejected'] = counts.get('clean rejected', 0) + 1
            if w['rejected'] is None:
                assert w['correlation'] >= 0.9 and w['texture'] >= 1.0
        assert pair['kept'] + sum(pair['rejected'].values()) == pair['windows'] == 48
    assert counts['flat'] >= 3 and counts['moved'] >= 6 and counts['outside photo'] >= 24, counts
    # Clean windows are lost only where the scene itself is nearly flat, or at the photo's edge.
    assert counts.get('clean rejected', 0) <= 0.25 * counts['clean'], counts


def test_alignment_picture_outlines_every_window_in_its_outcome_colour():
    proxy = np.full((300, 400), 0.5, np.float32)
    photo = np.full((200, 400, 3), 90, np.uint8)        # covers the top 200 rows of the RAW's frame
    size = 64
    records = [{'top': 10, 'left': 10 + 70 * k, 'rejected': outcome} for k, outcome in enumerate(mcd.OUTCOME_COLOURS)]
    picture = mcd.overview(proxy, photo, np.eye(3), records, size, 1.0)
    assert picture.shape[:2] == (300 + 32, 800) and picture.dtype == np.uint8
    left, right = picture[:300, :400], picture[:300, 400:]
    for record in records:
        colour = mcd.OUTCOME_COLOURS[record['rejected']]
        top, middle = record['top'] + 1, record['left'] + size // 2
        assert tuple(left[top, middle]) == colour and tuple(right[top, middle]) == colour, record
        assert tuple(left[top + size // 2, middle]) == (128, 128, 128)          # inside: the proxy itself
    assert tuple(right[100, 380]) == (90, 90, 90) and tuple(right[250, 380]) == (0, 0, 0)   # outside the photo: black
    assert tuple(left[199, 200]) == mcd.PHOTO_BORDER_COLOUR                    # the photo's border on the proxy
    # A RAW larger than OVERVIEW_SIDE is shrunk, windows with it.
    big = mcd.overview(np.full((1500, 3000), 0.5, np.float32), np.full((1500, 3000, 3), 90, np.uint8), np.eye(3),
                       [{'top': 1000, 'left': 2000, 'rejected': None}], 448, 1.0)
    assert big.shape[:2] == (512 + 32, 2 * mcd.OVERVIEW_SIDE)
    assert tuple(big[round(1000 / 3000 * 1024) + 1, round(2224 / 3000 * 1024)]) == mcd.OUTCOME_COLOURS[None]


def test_a_pair_none_of_whose_windows_passed_still_gets_its_picture(pairs, tmp_path):
    folder, _ = pairs
    config = mcd.utils.parse_args(['raw_dir=.', 'photo_dir=.', 'output_dir=.', 'patch_size=%d' % PATCH,
                                   'min_correlation=1'], mcd.KEYS)
    mcd.check_config(config)
    with pytest.raises(mcd.PairError, match='no window passed'):
        mcd.process_pair(os.path.join(folder, 'raw', 'scene_0.dng'), os.path.join(folder, 'photos', 'scene_0.jpg'),
                         str(tmp_path), config)
    assert os.listdir(tmp_path / 'alignment') == ['scene_0.jpg']


def pair_photo(built, name):
    return next(p['photo'] for p in built[1]['pairs'] if mcd.stem(p['raw']) == name)


def test_zurich_layout_levels_and_split_by_scene(built, pairs, tmp_path):
    out, info, truth, result = built
    assert sorted(os.listdir(out)) == ['alignment', 'dataset.json', 'full_resolution', 'full_resolution_canon', 'test',
                                       'train']
    # One picture of every pair's windows: the proxy and the photo side by side (1024 wide each), a legend below.
    assert sorted(os.listdir(os.path.join(out, 'alignment'))) == sorted(name + '.jpg' for name in truth)
    picture = image_io.read_rgb_image(os.path.join(out, 'alignment', 'scene_0.jpg'))
    assert picture.shape[1] == 2 * MOSAIC[1] and MOSAIC[0] < picture.shape[0] <= MOSAIC[0] + 64
    test_scenes = {p['pair'] for p in info['test']}
    train_scenes = {p['pair'] for p in info['train']}
    assert len(test_scenes) == 1 and len(train_scenes) == 2 and not test_scenes & train_scenes
    assert {mcd.stem(p['raw']): p['split'] for p in info['pairs']} == \
        {**{n: 'train' for n in train_scenes}, **{n: 'test' for n in test_scenes}}
    # dng_to_png.py's conversion of each RAW: the patches are its crops, bit for bit.
    converted = {}
    for name in truth:
        png, _, _ = dng_to_png.convert(os.path.join(pairs[0], 'raw', name + '.dng'), {
            'output_dir': str(tmp_path), 'black_level': 64, 'white_level': 1023, 'camera_black_level': None,
            'camera_white_level': None})
        converted[name] = image_io.read_raw_png(png)
        assert converted[name].shape == MOSAIC      # the GRBG file lost its first column (and an odd last one)
    for split in ('train', 'test'):
        pairs_found = load_dataset.list_pairs(out, split)
        assert len(pairs_found) == len(info[split]) > 0
        load_dataset.check_headers(pairs_found, load_dataset.patch_side(pairs_found))
        for patch in info[split][:12]:
            raw_path, photo_path = pairs_found[patch['index']]
            with Image.open(raw_path) as png:
                assert png.mode == 'I;16' and png.size == (PATCH, PATCH)
            raw = image_io.read_raw_png(raw_path)
            assert patch['top'] % 2 == 0 and patch['left'] % 2 == 0          # the Zurich cell, R at (0, 0)
            top, left = patch['top'], patch['left']
            assert np.array_equal(raw, converted[patch['pair']][top:top + PATCH, left:left + PATCH])
            # The JPG is the photo resampled at patch_to_photo (up to JPEG's loss).
            photo = image_io.read_rgb_image(pair_photo(built, patch['pair']))
            expected = mcd.warp_photo(photo, np.array(patch['patch_to_photo']), PATCH, PATCH).astype(float)
            assert np.abs(image_io.read_rgb_image(photo_path) - expected).mean() < 4.0
    (name,) = test_scenes
    full = image_io.read_raw_png(os.path.join(out, 'full_resolution', name + '.png'))
    assert np.array_equal(full, converted[name])
    assert image_io.read_rgb_image(os.path.join(out, 'full_resolution_canon', name + '.jpg')).shape == MOSAIC + (3,)
    assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith('.')]     # no temporary folder left
    assert 'median correlation' in result.stdout and 'windows kept' in result.stdout


def test_pairing_by_capture_time(pairs, tmp_path):
    folder, _ = pairs
    photos = tmp_path / 'photos'
    photos.mkdir()
    # DSLR names differ from the phone's; the photos' clock runs 30 s ahead (their EXIF says so).
    for k, name in enumerate(sorted(os.listdir(os.path.join(folder, 'photos')))):
        image = Image.open(os.path.join(folder, 'photos', name))
        exif = image.getexif()
        taken = mcd.parse_exif_time(exif.get_ifd(mcd.EXIF_IFD)[mcd.DATE_TIME_ORIGINAL])
        exif.get_ifd(mcd.EXIF_IFD)[mcd.DATE_TIME_ORIGINAL] = \
            (taken + __import__('datetime').timedelta(seconds=30)).strftime('%Y:%m:%d %H:%M:%S')
        image.save(str(photos / ('IMG_%04d.jpg' % (7 - k))), exif=exif)
    Image.new('RGB', (64, 64)).save(str(photos / 'no_time.jpg'))
    raws = mcd.folder_files(os.path.join(folder, 'raw'), image_io.RAW_IMAGE_EXTENSIONS, 'raw_dir')
    found, problems = mcd.pair_by_time(raws, mcd.folder_files(str(photos), mcd.PHOTO_EXTENSIONS, 'photo_dir'),
                                       offset=30, max_difference=2)
    assert [(os.path.basename(r), os.path.basename(p)) for r, p in found] == \
        [('scene_0.dng', 'IMG_0007.jpg'), ('scene_1.dng', 'IMG_0006.jpg'), ('scene_2.dng', 'IMG_0005.jpg')]
    assert [(os.path.basename(f), 'no capture time' in why) for f, why in problems] == [('no_time.jpg', True)]
    # Without the offset the photos are 31 s away: nothing pairs, each file says why.
    found, problems = mcd.pair_by_time(raws, mcd.folder_files(str(photos), mcd.PHOTO_EXTENSIONS, 'photo_dir'),
                                       offset=0, max_difference=2)
    assert found == [] and sum('within max_time_difference=2 s' in why for _, why in problems) == 6


def test_texture_ignores_gradients_edges_and_noise():
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0.2, 0.8, 256, dtype=np.float32), (256, 1))
    edge = np.zeros((256, 256), np.float32)
    edge[:, 128:] = 1
    noise = (0.5 + 0.02 * rng.standard_normal((256, 256))).astype(np.float32)
    bricks = cv2.resize(rng.random((16, 16)).astype(np.float32), (256, 256), interpolation=cv2.INTER_NEAREST)
    assert mcd.texture(ramp) < 0.01 and mcd.texture(edge) < 0.01
    assert mcd.texture(noise) < 1.0 < 20 < mcd.texture(bricks)


def test_windows_start_on_whole_bayer_cells_and_fit():
    for shape, size, stride in (((768, 1024), 128, 128), ((3000, 4000), 448, 448), ((501, 999), 64, 50)):
        origins = mcd.window_origins(shape, size, stride)
        assert origins and all(t % 2 == 0 and l % 2 == 0 for t, l in origins)
        assert all(t + size <= shape[0] and l + size <= shape[1] for t, l in origins)
    assert len(mcd.window_origins((768, 1024), 128, 128)) == 6 * 8
    assert mcd.window_origins((100, 1000), 128, 128) == []


@pytest.fixture
def messy(pairs, tmp_path):
    """Two good pairs and every kind of bad input, side by side."""
    folder, _ = pairs
    raw, photos = tmp_path / 'raw', tmp_path / 'photos'
    raw.mkdir()
    photos.mkdir()
    copy = lambda source, target: shutil.copy(os.path.join(folder, source), str(target))
    for name in ('scene_0', 'scene_1'):
        copy('raw/%s.dng' % name, raw)
        copy('photos/%s.jpg' % name, photos)
    copy('raw/scene_2.dng', raw / 'no_photo.dng')                  # a RAW without a photo
    copy('photos/scene_2.jpg', photos / 'no_raw.jpg')              # and the reverse
    copy('raw/scene_2.dng', raw / 'other_scene.dng')               # a photo of another scene
    copy('photos/scene_0.jpg', photos / 'other_scene.jpg')
    copy('raw/scene_2.dng', raw / 'blank.dng')                     # alignment fails: nothing to match
    Image.new('RGB', (1200, 900), (120, 120, 120)).save(str(photos / 'blank.jpg'))
    with open(os.path.join(folder, 'raw', 'scene_2.dng'), 'rb') as f:
        (raw / 'truncated.dng').write_bytes(f.read()[:5000])      # unreadable RAW
    copy('photos/scene_2.jpg', photos / 'truncated.jpg')
    copy('raw/scene_2.dng', raw / 'garbled.dng')                   # unreadable photo
    (photos / 'garbled.jpg').write_bytes(b'not a JPEG')
    return tmp_path


def test_bad_input_is_reported_per_file_and_the_rest_is_built(messy):
    out = messy / 'dataset'
    result = run_script('make_camera_dataset.py', 'raw_dir=%s' % (messy / 'raw'), 'photo_dir=%s' % (messy / 'photos'),
                        'output_dir=%s' % out, 'patch_size=%d' % PATCH, 'test_fraction=0.5')
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 7 and all(l.startswith('error: ') for l in lines), result.stderr
    said = dict((name, next(l for l in lines if '/%s.' % name in l)) for name in
                ('no_photo', 'no_raw', 'other_scene', 'blank', 'truncated', 'garbled'))
    assert 'no photo named no_photo.*' in said['no_photo']
    assert 'no RAW named no_raw.*' in said['no_raw']
    assert 'another scene' in said['other_scene'] and 'alignment failed' in said['blank']
    assert 'truncated' in said['truncated'] and 'cannot read' in said['truncated']
    assert 'garbled.jpg' in said['garbled'] and 'not an image' in said['garbled']
    assert lines[-1] == 'error: 2 unpaired file(s) and 4 failed pair(s), see above; the dataset holds the 2 ' \
                        'pair(s) that worked'
    with open(out / mcd.MARKER) as f:
        info = json.load(f)
    assert sorted(mcd.stem(p['raw']) for p in info['pairs']) == ['scene_0', 'scene_1']
    assert len(info['failed']) == 6 and len(info['train']) > 10 and len(info['test']) > 10
    assert sorted(os.listdir(out / 'alignment')) == ['scene_0.jpg', 'scene_1.jpg']     # the pairs that aligned
    assert sorted(os.listdir(messy)) == ['dataset', 'photos', 'raw']      # no temporary folder left


def test_nothing_usable_or_interrupted_leaves_nothing(messy, pairs, monkeypatch):
    for name in ('scene_0', 'scene_1'):
        os.remove(messy / 'raw' / (name + '.dng'))
    result = run_script('make_camera_dataset.py', 'raw_dir=%s' % (messy / 'raw'), 'photo_dir=%s' % (messy / 'photos'),
                        'output_dir=%s' % (messy / 'dataset'), 'patch_size=%d' % PATCH)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: no pair could be used (8 failed, see above)')
    assert sorted(os.listdir(messy)) == ['photos', 'raw']
    # Interrupted in the middle (Ctrl-C during scene_1, after scene_0's patches were written to the temporary
    # folder): neither the dataset nor the temporary folder remains.
    for name in ('scene_0', 'scene_1'):
        shutil.copy(os.path.join(pairs[0], 'raw', name + '.dng'), messy / 'raw')
    calls = []

    def interrupted(raw_path, *args):
        calls.append(raw_path)
        if raw_path.endswith('scene_1.dng'):
            assert [n for n in os.listdir(messy) if n.startswith('.dataset.tmp-')]
            raise KeyboardInterrupt
        return real(raw_path, *args)
    real = mcd.process_pair
    monkeypatch.setattr(mcd, 'process_pair', interrupted)
    with pytest.raises(KeyboardInterrupt):
        mcd.build(dict(mcd.utils.parse_args(['raw_dir=%s' % (messy / 'raw'), 'photo_dir=%s' % (messy / 'photos'),
                                             'output_dir=%s' % (messy / 'dataset'), 'patch_size=%d' % PATCH],
                                            mcd.KEYS)), say=lambda *a, **k: None)
    assert [os.path.basename(c) for c in calls] == ['blank.dng', 'garbled.dng', 'other_scene.dng', 'scene_0.dng',
                                                    'scene_1.dng']
    assert sorted(os.listdir(messy)) == ['photos', 'raw']


def test_output_dir_is_never_mixed_or_wrongly_replaced(pairs, tmp_path):
    for name in ('scene_0', 'scene_1'):        # two scenes: one for train/, one for test/
        for kind, ext in (('raw', 'dng'), ('photos', 'jpg')):
            os.makedirs(tmp_path / kind, exist_ok=True)
            shutil.copy(os.path.join(pairs[0], kind, '%s.%s' % (name, ext)), tmp_path / kind)
    common = ['raw_dir=%s/raw' % tmp_path, 'photo_dir=%s/photos' % tmp_path, 'patch_size=256']
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'mine.txt').write_text('keep me')
    result = run_script('make_camera_dataset.py', 'output_dir=%s' % foreign, *common)
    assert_one_line_error(result, 'not a dataset of this script', 'choose a new folder')
    assert os.listdir(foreign) == ['mine.txt']
    out = tmp_path / 'dataset'
    assert run_script('make_camera_dataset.py', 'output_dir=%s' % out, *common).returncode == 0
    result = run_script('make_camera_dataset.py', 'output_dir=%s' % out, *common)
    assert_one_line_error(result, 'already holds a dataset', 'overwrite=true')
    result = run_script('make_camera_dataset.py', 'output_dir=%s' % out, 'overwrite=true', 'patch_size=128',
                        *common[:2])
    assert result.returncode == 0, result.stderr
    with Image.open(out / 'train' / 'huawei_raw' / '0.png') as png:
        assert png.size == (128, 128)
    assert sorted(os.listdir(tmp_path)) == ['dataset', 'foreign', 'photos', 'raw']


@pytest.mark.parametrize('args, fragments', [
    ([], ('raw_dir= is required',)),
    (['raw_dir=nowhere', 'photo_dir=.', 'output_dir=x'], ('raw_dir=nowhere: no such folder',)),
    (['raw_dir=.', 'photo_dir=.', 'output_dir=x', 'patch_size=100'], ('patch_size=100', 'multiple of 32')),
    (['raw_dir=.', 'photo_dir=.', 'output_dir=x', 'stride=101'], ('stride=101', 'even')),
    (['raw_dir=.', 'photo_dir=.', 'output_dir=x', 'detector=surf'], ('detector=surf', 'sift, orb')),
    (['raw_dir=.', 'photo_dir=.', 'output_dir=x', 'test_fraction=1'], ('test_fraction=1',)),
])
def test_bad_keys_are_one_line_errors(args, fragments, tmp_path):
    assert_one_line_error(run_script('make_camera_dataset.py', *args, cwd=str(tmp_path)), *fragments)


def test_help_lists_every_key():
    result = run_script('make_camera_dataset.py', 'help')
    assert result.returncode == 0
    for key in mcd.KEYS:
        assert '  %s ' % key in result.stdout


def test_synthetic_pairs_cli(tmp_path):
    result = run_script('synthetic_pairs.py', 'output_dir=%s' % tmp_path, 'pairs=1', 'mosaic_size=256x384')
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ['pairs.json', 'photos', 'raw']
    mosaic, _ = image_io.read_raw_image(str(tmp_path / 'raw' / 'scene_0.dng'))
    assert mosaic.shape == (256, 384)
    with open(tmp_path / 'pairs.json') as f:
        assert set(json.load(f)['pairs']['scene_0']) == {'mosaic_to_photo', 'flat', 'moved'}
    assert_one_line_error(run_script('synthetic_pairs.py', 'output_dir=%s' % tmp_path, 'mosaic_size=255x384'),
                          'mosaic_size=255x384', 'even')
