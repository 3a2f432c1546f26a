"""Phone-RAW / DSLR-photo pairs with a known answer, made from the bundled photographs: what the
tests and bench/align.py check make_camera_dataset.py against, and a way to try it without a camera.

    python synthetic_pairs.py output_dir=demo_output/pairs/ pairs=3

Each pair shows one scene (a collage of scikit-image photographs, enlarged about 2x) twice:
- the RAW: a crop of the scene "unprocessed" into a 12-bit sensor mosaic as make_synthetic_dataset.py
  does (inverse tone curve, gamma, colour matrix and white balance, Bayer sampling, noise), written
  as a DNG whose colour cell starts with green (GRBG), so the reader must shift it to the Zurich cell;
- the photo: the same scene at another resolution and field of view (it misses a strip of the
  RAW's view and sees beyond its other edges), under a random homography, with another colour
  rendering, as a JPEG; a rectangle of it shows another photograph (something that moved).
The scene also holds a flat, sky-like rectangle, and both files carry capture times 1 s apart.
`pairs.json` holds, per pair, the true homography from RAW mosaic pixels (in the Zurich cell, as
dng_to_png.py writes the mosaic) to photo pixels, and the flat and moved rectangles.
"""

import json
import os

import cv2
import numpy as np
from PIL import Image

import camera_pipeline as cp
import image_io
import make_synthetic_dataset
from make_camera_dataset import DATE_TIME_ORIGINAL, EXIF_IFD, map_points, translation
import utils
from utils import Key, UserError

CAMERA_BLACK_LEVEL, CAMERA_WHITE_LEVEL = 256, 4095     # a 12-bit phone sensor, unlike Zurich's 10 bits
CAMERA_CFA = 'GRBG'                                     # the file's cell; the reader drops its first column
SCENE_MARGIN = 0.3         # the scene extends this fraction of the RAW's size beyond it on every side
PHOTOS = ('chelsea', 'coffee', 'rocket', 'motorcycle_left')    # the scenes' collage
INTRUDER = 'astronaut'     # what the photo shows where something moved
CELL = 220                 # side of a collage piece before enlarging, pixels (fits in every photo)
TRUTH_FILE = 'pairs.json'

KEYS = {
    'output_dir': Key('demo_output/pairs/', str, 'folder for raw/, photos/ and pairs.json'),
    'pairs': Key(3, int, 'number of pairs (scenes scene_0, scene_1, ...)'),
    'mosaic_size': Key('1536x2048', str, 'HxW of the RAW mosaics (even numbers)'),
    'photo_scale': Key(1.2, float, 'photo pixels per RAW mosaic pixel (another resolution)'),
    'jpeg_quality': Key(90, int, 'JPEG quality of the photos'),
    'seed': Key(0, int, 'random seed: the same seed and keys give the same pairs'),
}
USAGE = 'python synthetic_pairs.py [key=value ...]   writes synthetic RAW/photo pairs with known alignment'


def make_scene(shape, rng, detail_scale=2.0):
    """The scene as uint8 [H, W, 3]: a collage of the bundled photographs, each enlarged only by about
    `detail_scale` so that the scene keeps their fine detail, with a flat sky-like rectangle.

    Returns (scene, flat rectangle (top, left, height, width) in scene pixels)."""
    photos = [make_synthetic_dataset.load_photo(name) for name in PHOTOS]
    cell = int(round(CELL * detail_scale))
    scene = np.empty(shape + (3,), np.uint8)
    for top in range(0, shape[0], cell):
        for left in range(0, shape[1], cell):
            photo = photos[rng.integers(len(photos))]
            scale = detail_scale * rng.uniform(0.8, 1.25)
            photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            y, x = rng.integers(photo.shape[0] - cell + 1), rng.integers(photo.shape[1] - cell + 1)
            piece = photo[y:y + cell, x:x + cell]
            piece = piece[:, ::-1] if rng.random() < 0.5 else piece
            height, width = min(cell, shape[0] - top), min(cell, shape[1] - left)
            scene[top:top + height, left:left + width] = piece[:height, :width]
    # Sky: a smooth gradient, nearly flat, over a quarter of the height and a third of the width.
    height, width = shape[0] // 4, shape[1] // 3
    top, left = int(shape[0] * 0.3), int(shape[1] * 0.55)
    colour = np.array([150.0, 185.0, 225.0]) + rng.uniform(-10, 10, 3)
    ramp = np.linspace(-6.0, 6.0, height)[:, None, None]
    scene[top:top + height, left:left + width] = np.clip(colour + ramp, 0, 255).astype(np.uint8)
    return scene, (top, left, height, width)


def render_photo(scene, scene_to_photo, photo_shape, rng, intruder):
    """The DSLR's view: the scene warped by a homography, recoloured; a rectangle replaced by `intruder`."""
    # Blur first where the photo is coarser than the scene, so that warping does not alias.
    scale = np.sqrt(abs(np.linalg.det(scene_to_photo[:2, :2])))
    source = cv2.GaussianBlur(scene, (0, 0), 0.5 / scale) if scale < 1 else scene
    photo = cv2.warpPerspective(source, scene_to_photo, (photo_shape[1], photo_shape[0]),
                                flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    # Another colour rendering: its own gamma, channel gains and saturation.
    image = photo.astype(np.float64) / 255.0
    image = image ** rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, 3)
    gray = image.mean(axis=-1, keepdims=True)
    image = gray + (image - gray) * rng.uniform(0.7, 1.3)
    photo = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    top, left, height, width = intruder['rectangle']
    photo[top:top + height, left:left + width] = cv2.resize(intruder['image'], (width, height))
    return photo


def make_pair(mosaic_shape, photo_scale, rng, detail_scale=2.0):
    """One synthetic pair: dict with the camera mosaic (file layout, GRBG, 12-bit), the photo, the truth."""
    height, width = mosaic_shape
    assert height % 2 == 0 and width % 2 == 0, mosaic_shape
    margin_y, margin_x = int(height * SCENE_MARGIN) // 2 * 2, int(width * SCENE_MARGIN) // 2 * 2
    scene, flat = make_scene((height + 2 * margin_y, width + 2 * margin_x), rng, detail_scale)

    # RAW: the Zurich-cell mosaic of the scene from 2 columns left of the view, then its first column
    # dropped, so that the file's cell is GRBG and the Zurich-cell mosaic starts at the view's column 0.
    crop = scene[margin_y:margin_y + height, margin_x - 2:margin_x + width]
    config = dict(black_level=CAMERA_BLACK_LEVEL, white_level=CAMERA_WHITE_LEVEL, shot_noise=2.0, read_noise=6.0)
    xyz_to_cam = cp.sample_camera(rng)
    camera_mosaic = make_synthetic_dataset.make_raw(crop, xyz_to_cam, cp.sample_scene(rng), rng, config)[:, 1:]

    # Photo: its field of view is the RAW's shifted right by 12% (the RAW's left strip is missing from
    # it) and reaching beyond the other edges, its corners moved at random (perspective), rotated.
    view = np.array([[0.12, -0.08], [1.08, -0.08], [1.08, 1.08], [0.12, 1.08]]) * (width, height)
    view += rng.uniform(-0.025, 0.025, (4, 2)) * (width, height)
    angle = np.deg2rad(rng.uniform(-4, 4))
    centre = view.mean(axis=0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    view = (view - centre) @ rotation.T + centre
    photo_width = int(round(np.linalg.norm(view[1] - view[0]) * photo_scale))
    photo_height = int(round(np.linalg.norm(view[3] - view[0]) * photo_scale))
    corners = np.array([[0, 0], [photo_width, 0], [photo_width, photo_height], [0, photo_height]], np.float64)
    mosaic_to_photo = cv2.getPerspectiveTransform(view.astype(np.float32), corners.astype(np.float32))
    scene_to_photo = mosaic_to_photo @ translation(-margin_x, -margin_y)

    # Something that moved: a rectangle of the photo (in the RAW's view) shows another photograph.
    # The photo's rectangle covers the whole of `moved` (the bounding box of its corners' images).
    moved = (int(height * 0.6), int(width * 0.2), int(height * 0.32), int(width * 0.26))   # mosaic pixels
    top, left, h, w = moved
    box = map_points(mosaic_to_photo, [[left, top], [left + w, top], [left + w, top + h], [left, top + h]])
    (x0, y0), (x1, y1) = np.floor(box.min(axis=0)).astype(int), np.ceil(box.max(axis=0)).astype(int)
    intruder = {'image': make_synthetic_dataset.load_photo(INTRUDER),
                'rectangle': (y0, x0, y1 - y0, x1 - x0)}
    photo = render_photo(scene, scene_to_photo, (photo_height, photo_width), rng, intruder)
    flat_mosaic = (flat[0] - margin_y, flat[1] - margin_x, flat[2], flat[3])
    return {'camera_mosaic': camera_mosaic, 'photo': photo, 'mosaic_to_photo': mosaic_to_photo,
            'flat': flat_mosaic, 'moved': moved, 'xyz_to_cam': xyz_to_cam}


def write_pair(pair, raw_path, photo_path, capture_time=None, photo_time=None, jpeg_quality=90):
    """Writes the DNG and the JPEG of a pair (with EXIF capture times if given)."""
    image_io.write_dng(raw_path, pair['camera_mosaic'], cfa_pattern=CAMERA_CFA, black_level=CAMERA_BLACK_LEVEL,
                       white_level=CAMERA_WHITE_LEVEL, color_matrix=pair['xyz_to_cam'], capture_time=capture_time)
    exif = Image.Exif()
    if photo_time is not None:
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = photo_time
    with utils.atomic_path(photo_path) as tmp:
        Image.fromarray(pair['photo']).save(tmp, format='JPEG', quality=jpeg_quality, exif=exif)


def truth_record(pair):
    """What pairs.json holds about one pair."""
    return {'mosaic_to_photo': pair['mosaic_to_photo'].tolist(),
            'flat': list(pair['flat']), 'moved': list(pair['moved'])}


def write_pairs(output_dir, count, mosaic_shape, photo_scale=1.2, seed=0, jpeg_quality=90):
    """Writes raw/scene_<k>.dng, photos/scene_<k>.jpg and pairs.json; returns the truth records by name."""
    if count < 1:
        raise UserError('pairs=%d: must be at least 1' % count)
    records = {}
    for k, sequence in enumerate(np.random.SeedSequence(seed).spawn(count)):
        name = 'scene_%d' % k
        pair = make_pair(mosaic_shape, photo_scale, np.random.default_rng(sequence))
        write_pair(pair, os.path.join(output_dir, 'raw', name + '.dng'), os.path.join(output_dir, 'photos', name + '.jpg'),
                   capture_time='2024:05:17 14:%02d:00' % k, photo_time='2024:05:17 14:%02d:01' % k,
                   jpeg_quality=jpeg_quality)
        records[name] = truth_record(pair)
    with utils.atomic_path(os.path.join(output_dir, TRUTH_FILE)) as tmp:
        with open(tmp, 'w') as f:
            json.dump({'about': 'synthetic pairs made by synthetic_pairs.py; mosaic_to_photo maps RAW mosaic '
                                'pixels (Zurich cell) to photo pixels', 'pairs': records}, f, indent=1)
    return records


def residual(patch_to_photo, mosaic_to_photo, top, left, size, points=9):
    """Mean misalignment, in mosaic pixels, of a patch whose pixels were taken from the photo at
    patch_to_photo(x) while the truth is mosaic_to_photo(x + (left, top)); over a grid of points."""
    grid = np.linspace(0, size - 1, points)
    xs, ys = np.meshgrid(grid, grid)
    patch_points = np.c_[xs.ravel(), ys.ravel()]
    in_photo = map_points(patch_to_photo, patch_points)
    found = map_points(np.linalg.inv(mosaic_to_photo), in_photo)
    return float(np.mean(np.linalg.norm(found - (patch_points + (left, top)), axis=1)))


def overlap(rectangle, top, left, size):
    """Fraction of the size x size window at (top, left) inside a rectangle (top, left, height, width)."""
    r_top, r_left, height, width = rectangle
    rows = max(0, min(top + size, r_top + height) - max(top, r_top))
    cols = max(0, min(left + size, r_left + width) - max(left, r_left))
    return rows * cols / size ** 2


def window_truth(truth, top, left, size, photo_shape):
    """What a window of the RAW truly is: 'outside photo' (not wholly in the photo's view), 'flat' (wholly in
    the flat sky), 'moved' (half or more where the photo shows something else), 'clean' (none of the sky
    nor the moved rectangle in it), or 'partial'."""
    corners = map_points(truth['mosaic_to_photo'], [[left, top], [left + size - 1, top], [left, top + size - 1],
                                                    [left + size - 1, top + size - 1]])
    if np.any(corners < 0) or np.any(corners[:, 0] > photo_shape[1] - 1) or np.any(corners[:, 1] > photo_shape[0] - 1):
        return 'outside photo'
    flat, moved = overlap(truth['flat'], top, left, size), overlap(truth['moved'], top, left, size)
    if flat == 1.0:
        return 'flat'
    if moved >= 0.5:
        return 'moved'
    return 'clean' if flat == moved == 0 else 'partial'


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    try:
        height, width = (int(v) for v in config['mosaic_size'].lower().split('x'))
    except ValueError:
        raise UserError('mosaic_size=%s: expected HxW, e.g. 1536x2048' % config['mosaic_size'])
    if height % 2 or width % 2 or min(height, width) < 256:
        raise UserError('mosaic_size=%s: need even sides of at least 256' % config['mosaic_size'])
    records = write_pairs(config['output_dir'], config['pairs'], (height, width), config['photo_scale'],
                          config['seed'], config['jpeg_quality'])
    print('wrote %d pairs to %s (raw/, photos/, %s)' % (len(records), config['output_dir'], TRUTH_FILE))


if __name__ == '__main__':
    utils.run_main(main)
