"""Builds a RAW-to-RGB dataset in the Zurich layout from photographs that ship with
scikit-image (or your own), by "unprocessing" each photo into a plausible phone RAW.

    python make_synthetic_dataset.py output_dir=demo_output/raw_images/ patch_size=448

Writes <output_dir>/train/huawei_raw/<i>.png (16-bit single-channel 10-bit mosaics),
<output_dir>/train/canon/<i>.jpg (the aligned photo crops), the same under test/, each
test photo whole as test/huawei_full_resolution/<name>.png, as a DNG in test/dng/<name>.dng
and as its target in test/canon_full_resolution/<name>.jpg, and synthetic_dataset.json
(every setting and every patch's camera parameters). Same keys and seed, same bytes.
"""

import json
import os
import shutil

import numpy as np

import camera_pipeline as cp
import image_io
import utils
from utils import Key, UserError

MARKER = 'synthetic_dataset.json'    # written last; marks a folder this script may replace
PHOTO_CREDITS = {   # scikit-image's bundled photographs: source and licence
    'astronaut': 'Eileen Collins, NASA Great Images database; public domain',
    'chelsea': 'Chelsea the cat, Stefan van der Walt; CC0',
    'coffee': 'Coffee cup, Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0',
    'rocket': 'DSCOVR launch on Falcon 9, SpaceX; public domain (CC0)',
    'motorcycle_left': 'Middlebury 2014 stereo dataset (Scharstein et al., GCPR 2014), left view',
    'motorcycle_right': 'Middlebury 2014 stereo dataset (Scharstein et al., GCPR 2014), right view',
}

KEYS = {
    'output_dir': Key('demo_output/raw_images/', str, 'folder to write the dataset into'),
    'patch_size': Key(448, int, 'side of the square RAW mosaics and target crops; a multiple of 32'),
    'train_patches': Key(400, int, 'number of training patch pairs'),
    'test_patches': Key(40, int, 'number of test patch pairs'),
    'train_photos': Key('chelsea,coffee,rocket,motorcycle_left,motorcycle_right', str,
                        'comma-separated photos for training: scikit-image names (%s) or image files'
                        % ', '.join(PHOTO_CREDITS)),
    'test_photos': Key('astronaut', str, 'comma-separated photos for the test patches and full-resolution RAWs'),
    'seed': Key(0, int, 'random seed: the same seed and keys give the same files'),
    'black_level': Key(image_io.ZURICH_BLACK_LEVEL, int,
                       'sensor black level (DN); kept in the PNGs, as in the Zurich data'),
    'white_level': Key(image_io.ZURICH_WHITE_LEVEL, int, 'sensor white level (DN); 10-bit sensor'),
    'shot_noise': Key(0.5, float, 'shot noise: variance in DN^2 per DN of signal above black (gain, DN per electron)'),
    'read_noise': Key(1.5, float, 'read noise: standard deviation in DN'),
    'jpeg_quality': Key(95, int, 'JPEG quality of the targets'),
    'overwrite': Key(False, bool, 'replace a dataset this script made before in output_dir'),
}
USAGE = 'python make_synthetic_dataset.py [key=value ...]   builds a synthetic Zurich-layout dataset'


# ----------------------------------------------------------------------------------------
# photographs

def load_photo(name):
    """A photo as uint8 [H, W, 3]: a scikit-image photo name, or an image file."""
    if name in PHOTO_CREDITS:
        import skimage.data
        if name.startswith('motorcycle_'):
            left, right, _ = skimage.data.stereo_motorcycle()
            photo = left if name == 'motorcycle_left' else right
        else:
            photo = getattr(skimage.data, name)()
    elif os.path.isfile(name):
        photo = image_io.read_rgb_image(name)
    else:
        raise UserError("photo '%s' is neither a scikit-image photo (%s) nor an image file"
                        % (name, ', '.join(PHOTO_CREDITS)))
    assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.uint8, (name, photo.shape, photo.dtype)
    return photo


def fit_to(photo, size, name):
    """Enlarges a photo whose shorter side is below `size` so that patches fit into it."""
    from PIL import Image
    short = min(photo.shape[:2])
    if short >= size:
        return photo
    scale = size / short
    new_size = (max(size, int(np.ceil(photo.shape[1] * scale))), max(size, int(np.ceil(photo.shape[0] * scale))))
    print('note: %s (%dx%d) is smaller than patch_size=%d; enlarged to %dx%d'
          % (name, photo.shape[1], photo.shape[0], size, new_size[0], new_size[1]))
    return np.asarray(Image.fromarray(photo).resize(new_size, Image.LANCZOS))


def photo_list(text, key):
    names = [n.strip() for n in text.split(',') if n.strip()]
    if not names:
        raise UserError('%s= is empty: name at least one photo' % key)
    return names


# ----------------------------------------------------------------------------------------
# one RAW / target pair

def make_raw(photo_u8, xyz_to_cam, scene, rng, config):
    """uint8 photo crop [H, W, 3] -> uint16 sensor mosaic [H, W] in the Zurich layout."""
    camera = cp.unprocess(photo_u8 / 255.0, xyz_to_cam, **scene)
    return cp.to_sensor(cp.mosaic(camera), rng, config['black_level'], config['white_level'],
                        config['shot_noise'], config['read_noise'])


def write_patches(split, count, photos, xyz_to_cam, rng, config):
    """Random crops of `photos` as RAW/target pairs <split>/huawei_raw/<i>.png, <split>/canon/<i>.jpg."""
    size, out = config['patch_size'], config['output_dir']
    records = []
    names = list(photos)
    for i in utils.progress(range(count), desc='%s patches' % split, unit='patch'):
        name = names[rng.integers(len(names))]
        photo = photos[name]
        top = int(rng.integers(photo.shape[0] - size + 1))
        left = int(rng.integers(photo.shape[1] - size + 1))
        crop = photo[top:top + size, left:left + size]
        scene = cp.sample_scene(rng)
        raw = make_raw(crop, xyz_to_cam, scene, rng, config)
        image_io.save_raw_png(os.path.join(out, split, 'huawei_raw', '%d.png' % i), raw)
        image_io.save_image(os.path.join(out, split, 'canon', '%d.jpg' % i), crop / 255.0,
                            quality=config['jpeg_quality'])
        records.append(dict(index=i, photo=name, top=top, left=left, **scene))
    return records


def write_full_resolution(photos, xyz_to_cam, rng, config):
    """Each test photo whole: RAW PNG, DNG (with CFA pattern, levels, colours) and target JPG."""
    out = os.path.join(config['output_dir'], 'test')
    records = []
    for name, photo in photos.items():
        stem = os.path.splitext(os.path.basename(name))[0]
        photo = photo[:photo.shape[0] // 2 * 2, :photo.shape[1] // 2 * 2]   # whole Bayer cells
        scene = cp.sample_scene(rng)
        raw = make_raw(photo, xyz_to_cam, scene, rng, config)
        image_io.save_raw_png(os.path.join(out, 'huawei_full_resolution', stem + '.png'), raw)
        # The DNG holds the same numbers as the PNG: the Zurich PNGs keep the black level.
        image_io.write_dng(os.path.join(out, 'dng', stem + '.dng'), raw, cfa_pattern='RGGB',
                           black_level=config['black_level'], white_level=config['white_level'],
                           color_matrix=xyz_to_cam,
                           as_shot_neutral=cp.as_shot_neutral(scene['red_gain'], scene['blue_gain']))
        image_io.save_image(os.path.join(out, 'canon_full_resolution', stem + '.jpg'), photo / 255.0,
                            quality=config['jpeg_quality'])
        records.append(dict(name=stem, photo=name, height=photo.shape[0], width=photo.shape[1], **scene))
    return records


# ----------------------------------------------------------------------------------------

def check_config(config):
    if config['patch_size'] < 32 or config['patch_size'] % 32:
        raise UserError('patch_size=%d: must be a positive multiple of 32 (PyNET halves the mosaic '
                        'then pools four times)' % config['patch_size'])
    for key in ('train_patches', 'test_patches'):
        if config[key] < 1:
            raise UserError('%s=%d: must be at least 1' % (key, config[key]))
    if not 0 <= config['black_level'] < config['white_level'] <= 65535:
        raise UserError('black_level=%d, white_level=%d: need 0 <= black_level < white_level <= 65535'
                        % (config['black_level'], config['white_level']))
    if config['white_level'] > image_io.ZURICH_MAX_VALUE:
        print('note: white_level=%d is above the 10-bit range of the Zurich data (%d); the training '
              'loader refuses such PNGs' % (config['white_level'], image_io.ZURICH_MAX_VALUE))
    if config['shot_noise'] < 0 or config['read_noise'] < 0:
        raise UserError('shot_noise and read_noise must be >= 0')
    if not 1 <= config['jpeg_quality'] <= 100:
        raise UserError('jpeg_quality=%d: must be 1..100' % config['jpeg_quality'])


def prepare_output_dir(out, overwrite):
    """Refuses to mix with, or delete, anything this script did not make."""
    ours = os.path.isfile(os.path.join(out, MARKER))
    present = [d for d in ('train', 'test') if os.path.exists(os.path.join(out, d))]
    if ours and not overwrite:
        raise UserError('%s already holds a synthetic dataset: pass overwrite=true to replace it, '
                        'or choose another output_dir' % out)
    if present and not ours:
        raise UserError('%s already has %s/ not made by this script (no %s): choose another output_dir'
                        % (out, present[0], MARKER))
    if ours:
        os.remove(os.path.join(out, MARKER))   # first, so an interrupted rebuild is never taken as whole
        for folder in present:
            shutil.rmtree(os.path.join(out, folder))


def build(config):
    """Writes the whole dataset; returns its description (also saved as synthetic_dataset.json)."""
    check_config(config)
    out = config['output_dir']
    train_names = photo_list(config['train_photos'], 'train_photos')
    test_names = photo_list(config['test_photos'], 'test_photos')
    overlap = sorted(set(train_names) & set(test_names))
    if overlap:
        print('note: %s used for training and testing alike: test scores will be optimistic' % ', '.join(overlap))
    size = config['patch_size']
    train = {n: fit_to(load_photo(n), size, n) for n in train_names}
    test = {n: fit_to(load_photo(n), size, n) for n in test_names}
    prepare_output_dir(out, config['overwrite'])

    # Independent streams, so that e.g. more training patches leave the test set unchanged.
    camera_seq, train_seq, test_seq, full_seq = np.random.SeedSequence(config['seed']).spawn(4)
    xyz_to_cam = cp.sample_camera(np.random.default_rng(camera_seq))
    info = {
        'about': 'synthetic RAW-to-RGB dataset made by make_synthetic_dataset.py; sensor values = '
                 'black_level + unprocessed photo * (white_level - black_level) + noise',
        'config': {k: v for k, v in config.items() if k not in ('output_dir', 'overwrite')},
        'cfa': 'R at (0,0), Gb at (0,1), Gr at (1,0), B at (1,1)',
        'xyz_to_cam': xyz_to_cam.tolist(),
        'credits': {n: PHOTO_CREDITS.get(n, 'user file') for n in train_names + test_names},
        'train': write_patches('train', config['train_patches'], train, xyz_to_cam,
                               np.random.default_rng(train_seq), config),
        'test': write_patches('test', config['test_patches'], test, xyz_to_cam,
                              np.random.default_rng(test_seq), config),
    }
    info['full_resolution'] = write_full_resolution(test, xyz_to_cam, np.random.default_rng(full_seq), config)
    with utils.atomic_path(os.path.join(out, MARKER)) as tmp:
        with open(tmp, 'w') as f:
            json.dump(info, f, indent=1)
    return info


def read_info(dataset_dir):
    """The description a dataset of this script carries; a UserError for other folders."""
    path = os.path.join(dataset_dir, MARKER)
    if not os.path.isfile(path):
        raise UserError('%s not found: %s was not made by make_synthetic_dataset.py (or is incomplete)'
                        % (path, dataset_dir))
    with open(path) as f:
        return json.load(f)


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    info = build(config)
    out = config['output_dir']
    print('wrote %d training and %d test pairs of %dx%d to %s, full-resolution RAWs %s'
          % (len(info['train']), len(info['test']), config['patch_size'], config['patch_size'], out,
             ', '.join(os.path.join(out, 'test', 'huawei_full_resolution', r['name'] + '.png')
                       for r in info['full_resolution'])))


if __name__ == '__main__':
    utils.run_main(main)
