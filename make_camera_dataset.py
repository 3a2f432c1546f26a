"""Builds a Zurich-layout training set for your own phone from pairs of its RAW files and DSLR
photos of the same scenes, aligned the way the Zurich data were.

    python make_camera_dataset.py raw_dir=phone/ photo_dir=dslr/ output_dir=my_dataset/

Each RAW (a camera file LibRaw reads, or a Zurich PNG) is paired with a photo (JPEG, PNG or TIFF)
by file-name stem, or with pair=time by capture time. A quick proxy of the RAW (bilinear
demosaicing, grey-world white balance, gamma) is matched to the photo with SIFT or ORB keypoints
and a RANSAC homography; then window by window (patch_size mosaic pixels) the photo is warped
onto the window, the shift is refined by phase correlation or ECC within search_radius, and the
window is kept if its correlation with the proxy reaches min_correlation and it has texture. Only
the photo is resampled, never the RAW. Written, built in a temporary folder and renamed at the end:
  train/huawei_raw/<i>.png, train/canon/<i>.jpg   (test/ likewise; scenes split, never patches)
  full_resolution/<name>.png                    the test scenes' RAWs, for test_model.py
  full_resolution_canon/<name>.jpg              their photos warped onto the RAW's frame
  alignment/<name>.jpg                          every aligned pair (failed ones too): its windows, coloured by outcome
  dataset.json                                  every key, per-pair statistics, every patch's source
A pair that cannot be used is reported on one line; the others are still processed; any
failure makes the exit status 2 after the dataset of the good pairs is written.
"""

import collections
import datetime
import json
import os
import shutil
import sys
import time

import cv2
import numpy as np
from PIL import Image

import image_io
import utils
from utils import Key, UserError

PHOTO_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.tif', '.tiff')
MARKER = 'dataset.json'        # written last; marks a folder this script made (and may replace)
EXIF_IFD, DATE_TIME_ORIGINAL, DATE_TIME = 0x8769, 0x9003, 0x0132
FLANN_INDEX_KDTREE = 1         # OpenCV's FLANN index type for float descriptors (SIFT)
LOWE_RATIO = 0.75              # a keypoint match is kept if clearly better than the second best
SMOOTHING_SIGMA = 1.0          # mosaic pixels: Gaussian blur before refinement and correlation (noise, demosaicing)
TEXTURE_BLOCK = 4              # mosaic pixels averaged into one before measuring texture
MAX_PHOTO_SCALE = 1.25         # photo pixels per mosaic pixel above which the photo is first shrunk (no aliasing)
OVERVIEW_SIDE = 1024           # pixels: the long side of each half of alignment/<name>.jpg
# alignment/<name>.jpg: the RGB colour of each window's outline, by outcome (None: kept), in the legend's order.
OUTCOME_COLOURS = {None: (40, 210, 40), 'correlation': (235, 40, 40), 'refinement': (255, 160, 0),
                   'texture': (70, 130, 255), 'outside photo': (150, 150, 150)}
PHOTO_BORDER_COLOUR = (255, 230, 0)

KEYS = {
    'raw_dir': Key(None, str, 'required: folder of the phone RAW files (DNG, CR2, NEF, ... or Zurich PNGs)'),
    'photo_dir': Key(None, str, 'required: folder of the DSLR photos (JPEG, PNG or TIFF, 8-bit)'),
    'output_dir': Key(None, str, 'required: folder the dataset is written to (must not exist, or be empty, '
                      'unless overwrite=true)'),
    'pair': Key('stem', str, 'stem: a RAW and a photo of the same file-name stem; time: nearest capture '
                'time (EXIF DateTimeOriginal)', choices=('stem', 'time')),
    'time_offset': Key(0.0, float, 'pair=time: seconds the DSLR clock is ahead of the phone clock'),
    'max_time_difference': Key(2.0, float, 'pair=time: largest capture-time difference of a pair, seconds'),
    'patch_size': Key(448, int, 'side of the square windows, mosaic pixels; a multiple of 32'),
    'stride': Key(None, int, 'step between windows, mosaic pixels, even; none: patch_size (no overlap)'),
    'min_correlation': Key(0.9, float, "a window is kept if its photo's correlation with the RAW proxy reaches this"),
    'min_texture': Key(1.0, float, "a window is kept if the RAW proxy's contrast in its weakest direction reaches "
                       "this: RMS difference of neighbouring 4x4-pixel blocks, 8-bit grey levels (0: no test)"),
    'detector': Key('sift', str, 'keypoints of the global alignment: sift or orb (faster, less accurate)',
                    choices=('sift', 'orb')),
    'max_features': Key(5000, int, 'keypoints detected per image'),
    'match_size': Key(1600, int, 'long side, pixels, the images are shrunk to for keypoint matching'),
    'min_inliers': Key(40, int, 'keypoint matches the homography must explain, else the pair fails'),
    'refine': Key('phase', str, 'window refinement: phase (cv2.phaseCorrelate; the more accurate in '
                  'BENCHMARKS.md) or ecc (cv2.findTransformECC, translation)', choices=('phase', 'ecc')),
    'search_radius': Key(8.0, float, 'largest shift, mosaic pixels, the refinement may add to the global alignment'),
    'test_fraction': Key(0.1, float, 'fraction of the scenes (pairs) put into test/; at least one when above 0'),
    'seed': Key(0, int, 'seed of the train/test split of the scenes'),
    'jpeg_quality': Key(95, int, 'JPEG quality of the photo crops'),
    'black_level': Key(image_io.ZURICH_BLACK_LEVEL, int, 'black level of the training sensor the PNGs use'),
    'white_level': Key(image_io.ZURICH_WHITE_LEVEL, int, 'white level of the training sensor the PNGs use'),
    'camera_black_level': Key(None, int, "override the black level of the RAW files' metadata"),
    'camera_white_level': Key(None, int, "override the white level of the RAW files' metadata"),
    'overwrite': Key(False, bool, 'replace a dataset this script made before in output_dir'),
}
USAGE = ('usage: python make_camera_dataset.py raw_dir=<phone RAWs> photo_dir=<DSLR photos> '
         'output_dir=<dataset> [key=value ...]')


class PairError(UserError):
    """One pair cannot be used; the others still are."""


# ----------------------------------------------------------------------------------------
# finding and pairing the files

def folder_files(folder, extensions, key):
    """Files of `folder` with one of `extensions`, sorted (hidden files skipped)."""
    if not os.path.isdir(folder):
        raise UserError('%s=%s: no such folder' % (key, folder))
    files = image_io.raw_files(folder, extensions)
    if not files:
        raise UserError('%s=%s holds no %s files' % (key, folder, ' '.join(e.lstrip('.') for e in extensions[:8])))
    return files


def stem(path):
    """File name without folder and extension: the name of a scene."""
    return os.path.splitext(os.path.basename(path))[0]


def distinct_names(raws):
    """(RAWs, [(file, reason)]): a RAW whose name (without extension) an earlier one has is left out, since
    the scene's name is its RAW's."""
    kept, problems, seen = [], [], {}
    for raw in raws:
        if stem(raw) in seen:
            problems.append((raw, 'another RAW has the same name (%s): rename one' % os.path.basename(seen[stem(raw)])))
        else:
            seen[stem(raw)] = raw
            kept.append(raw)
    return kept, problems


def pair_by_stem(raws, photos):
    """([(raw, photo)], [(file, reason)]): a RAW and a photo pair when their names without extension agree."""
    by_stem = {}
    for photo in photos:
        by_stem.setdefault(stem(photo), []).append(photo)
    pairs, problems = [], []
    for raw in raws:
        found = by_stem.pop(stem(raw), [])
        if not found:
            problems.append((raw, 'no photo named %s.* in photo_dir' % stem(raw)))
        elif len(found) > 1:
            problems.append((raw, 'several photos share its name: %s' % ', '.join(map(os.path.basename, found))))
        else:
            pairs.append((raw, found[0]))
    for leftover in by_stem.values():
        problems.extend((photo, 'no RAW named %s.* in raw_dir' % stem(photo)) for photo in leftover)
    return pairs, problems


def parse_exif_time(text):
    """EXIF's 'YYYY:MM:DD HH:MM:SS' -> datetime, or None."""
    try:
        return datetime.datetime.strptime(str(text).strip('\x00 ')[:19], '%Y:%m:%d %H:%M:%S')
    except ValueError:
        return None


def exif_time(path):
    """DateTimeOriginal (else DateTime) of an image file's EXIF, or None."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            return parse_exif_time(exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL) or exif.get(DATE_TIME) or '')
    except Exception:
        return None


def raw_time(path):
    """Capture time of a RAW: LibRaw's timestamp for camera files, the EXIF of a PNG; None if unknown."""
    if not image_io.is_camera_raw_path(path):
        return exif_time(path)
    import rawpy
    try:
        with rawpy.imread(path) as raw:
            stamp = raw.other.timestamp
    except Exception:
        return None
    return stamp if stamp and stamp.year > 1970 else None     # LibRaw gives 0 (1970) when unknown


def pair_by_time(raws, photos, offset, max_difference):
    """([(raw, photo)], [(file, reason)]): each RAW with the photo closest in capture time, one to one."""
    problems = []
    raw_times, photo_times = {}, {}
    for files, times, read in ((raws, raw_times, raw_time), (photos, photo_times, exif_time)):
        for path in files:
            when = read(path)
            if when is None:
                problems.append((path, 'no capture time in its metadata (use pair=stem and matching names)'))
            else:
                times[path] = when
    gaps = sorted((abs((p_time - r_time).total_seconds() - offset), raw, photo)
                  for raw, r_time in raw_times.items() for photo, p_time in photo_times.items())
    pairs, used = [], set()
    for gap, raw, photo in gaps:       # closest first: a greedy one-to-one matching
        if gap <= max_difference and raw not in used and photo not in used:
            pairs.append((raw, photo))
            used.update((raw, photo))
    for path, kind in [(r, 'photo') for r in raw_times] + [(p, 'RAW') for p in photo_times]:
        if path not in used:
            problems.append((path, 'no %s taken within max_time_difference=%g s (time_offset=%g s)'
                             % (kind, max_difference, offset)))
    return sorted(pairs), problems


# ----------------------------------------------------------------------------------------
# the RAW's proxy and the photo's grey image

def proxy_gray(mosaic, black_level, white_level):
    """A quick rendering of a Zurich-cell mosaic as grey float32 [H, W] in [0, 1]: bilinear demosaicing,
    grey-world white balance, exposure to the 99th percentile, gamma 1/2.2; enough to match features."""
    linear = cv2.cvtColor(mosaic, cv2.COLOR_BayerRGGB2RGB).astype(np.float32)
    linear = np.maximum(linear - black_level, 0) / float(white_level - black_level)
    means = linear.reshape(-1, 3).mean(axis=0) + 1e-6
    gray = linear @ (means[1] / means / 3.0).astype(np.float32)
    gray /= max(float(np.percentile(gray[::4, ::4], 99)), 1e-6)
    return np.clip(gray, 0, 1) ** (1 / 2.2)


def photo_gray(photo):
    """uint8 RGB photo -> grey float32 in [0, 1]."""
    return cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def scaling(factor):
    """Homography from an image's pixels to those of the image resized by `factor` (pixel centres)."""
    return np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1.0]])


def translation(x, y):
    """3x3 homography that adds (x, y)."""
    return np.array([[1.0, 0, x], [0, 1.0, y], [0, 0, 1.0]])


def shrink(image, factor):
    """The image resized by factor <= 1, area averaging; its pixels are scaling(factor) of the image's (OpenCV
    maps by fx, fy exactly when they are given instead of a size)."""
    if factor >= 1.0:
        return image
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------------------
# global alignment: keypoints and a RANSAC homography

def keypoints(gray01, config):
    """(keypoints, descriptors) of a grey image in [0, 1]."""
    gray8 = np.round(gray01 * 255).astype(np.uint8)
    if config['detector'] == 'sift':
        detector = cv2.SIFT_create(nfeatures=config['max_features'])
    else:
        detector = cv2.ORB_create(nfeatures=config['max_features'])
    return detector.detectAndCompute(gray8, None)


def global_homography(proxy, photo, config):
    """(3x3 homography from mosaic pixels to photo pixels, statistics); PairError if it cannot be found."""
    proxy_factor = min(1.0, config['match_size'] / max(proxy.shape))
    photo_factor = min(1.0, config['match_size'] / max(photo.shape))
    small_proxy, small_photo = shrink(proxy, proxy_factor), shrink(photo, photo_factor)
    proxy_points, proxy_descriptors = keypoints(small_proxy, config)
    photo_points, photo_descriptors = keypoints(small_photo, config)
    if proxy_descriptors is None or photo_descriptors is None or min(len(proxy_points), len(photo_points)) < 4:
        raise PairError('alignment failed: too few keypoints (%d in the RAW, %d in the photo): is either image '
                        'blank?' % (len(proxy_points), len(photo_points)))
    if config['detector'] == 'sift':    # approximate nearest neighbours (k-d trees): exact search is ~10x slower
        matcher = cv2.FlannBasedMatcher({'algorithm': FLANN_INDEX_KDTREE, 'trees': 5}, {'checks': 64})
    else:
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    matches = matcher.knnMatch(proxy_descriptors, photo_descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < LOWE_RATIO * m[1].distance]
    stats = {'keypoints': [len(proxy_points), len(photo_points)], 'matches': len(good), 'inliers': 0}
    if len(good) < max(4, config['min_inliers']):
        raise PairError('alignment failed: only %d keypoint matches (min_inliers=%d): the photo shows another '
                        'scene, or too little of the same one' % (len(good), config['min_inliers']))
    source = np.float32([proxy_points[m.queryIdx].pt for m in good])
    target = np.float32([photo_points[m.trainIdx].pt for m in good])
    # Threshold in the shrunk images' pixels; MAGSAC++ is OpenCV's most robust RANSAC variant.
    small, inliers = cv2.findHomography(source, target, cv2.USAC_MAGSAC, 3.0, maxIters=10000, confidence=0.9999)
    stats['inliers'] = int(inliers.sum()) if inliers is not None else 0
    if small is None or stats['inliers'] < config['min_inliers']:
        raise PairError('alignment failed: %d of %d keypoint matches agree on a homography (min_inliers=%d): '
                        'the photo shows another scene' % (stats['inliers'], len(good), config['min_inliers']))
    homography = np.linalg.inv(scaling(photo_factor)) @ small @ scaling(proxy_factor)
    return homography / homography[2, 2], stats


def check_homography(homography, mosaic_shape, photo_shape):
    """Refuses a homography that folds the RAW's frame or changes scale implausibly (a wrong match)."""
    height, width = mosaic_shape
    corners = map_points(homography, [[0, 0], [width, 0], [width, height], [0, height]])
    edges = np.roll(corners, -1, axis=0) - corners
    following = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]    # z of the cross products
    area = abs(cv2.contourArea(corners.astype(np.float32)))
    scale = np.sqrt(area / (width * height))
    if not (np.all(turns > 0) or np.all(turns < 0)) or not 1 / 8 < scale < 8:
        raise PairError('alignment failed: the keypoint matches give an implausible homography (the RAW frame '
                        'maps to a %s quadrilateral at scale %.2f): the photo shows another scene'
                        % ('folded' if not (np.all(turns > 0) or np.all(turns < 0)) else 'convex', scale))
    return scale


def map_points(homography, points):
    """Applies a 3x3 homography to points [N, 2] (x, y)."""
    points = np.asarray(points, np.float64)
    mapped = np.c_[points, np.ones(len(points))] @ np.asarray(homography, np.float64).T
    return mapped[:, :2] / mapped[:, 2:]


# ----------------------------------------------------------------------------------------
# windows: refinement, texture, correlation

def window_origins(shape, size, stride):
    """(top, left) of the windows on the mosaic, centred, at even positions (the Bayer cell stays R at (0,0))."""
    starts = []
    for extent in shape:
        count = (extent - size) // stride + 1 if extent >= size else 0
        first = (extent - size - (count - 1) * stride) // 2 // 2 * 2 if count else 0
        starts.append([first + k * stride for k in range(count)])
    return [(top, left) for top in starts[0] for left in starts[1]]


def warp_photo(photo, patch_to_photo, height, width, interpolation=cv2.INTER_CUBIC):
    """The photo resampled onto a height x width grid whose pixel x lies at patch_to_photo(x) in the photo."""
    return cv2.warpPerspective(photo, patch_to_photo, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)


def inside(patch_to_photo, size, photo_shape):
    """True if the whole size x size patch maps inside the photo."""
    last = size - 1
    corners = map_points(patch_to_photo, [[0, 0], [last, 0], [last, last], [0, last]])
    return bool(np.all(corners >= 0) and np.all(corners[:, 0] <= photo_shape[1] - 1)
                and np.all(corners[:, 1] <= photo_shape[0] - 1))


def texture(gray):
    """Contrast of a grey window (in [0, 1]) in its weakest direction, in 8-bit grey levels: the RMS difference
    between neighbouring 4x4-pixel blocks (averaging out sensor noise), from the smaller eigenvalue of the
    mean structure tensor, so that an edge or a gradient alone scores ~0."""
    blocks = cv2.resize(gray, None, fx=1 / TEXTURE_BLOCK, fy=1 / TEXTURE_BLOCK, interpolation=cv2.INTER_AREA)
    dx = cv2.Sobel(blocks, cv2.CV_32F, 1, 0, ksize=3) / 8.0      # Sobel / 8: difference per block
    dy = cv2.Sobel(blocks, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    xx, yy, xy = float(np.mean(dx * dx)), float(np.mean(dy * dy)), float(np.mean(dx * dy))
    smallest = 0.5 * (xx + yy) - np.sqrt(0.25 * (xx - yy) ** 2 + xy ** 2)
    return 255.0 * np.sqrt(max(smallest, 0.0))


def correlation(a, b):
    """Normalised (Pearson) correlation of two images."""
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b) / denominator) if denominator > 0 else 0.0


def refine_shift(template, moving, config):
    """(dx, dy) that best aligns `moving` (the photo, margin m around the window) with `template` (the
    window), by phase correlation or ECC (translation); None if ECC does not converge."""
    margin = (moving.shape[0] - template.shape[0]) // 2
    if config['refine'] == 'phase':
        size = template.shape[0]
        centre = moving[margin:margin + size, margin:margin + size]
        window = cv2.createHanningWindow((size, size), cv2.CV_64F)
        (dx, dy), _ = cv2.phaseCorrelate(template.astype(np.float64), centre.astype(np.float64), window)
        return dx, dy
    warp = np.array([[1, 0, margin], [0, 1, margin]], np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-4)
    try:
        _, warp = cv2.findTransformECC(template, moving, warp, cv2.MOTION_TRANSLATION, criteria, None, 1)
    except cv2.error:           # "the algorithm stopped before its convergence": images uncorrelated
        return None
    return float(warp[0, 2]) - margin, float(warp[1, 2]) - margin


def align_windows(proxy, gray_photo, homography, config):
    """Per window: a record with its position, the patch -> photo homography, shift, texture, correlation,
    and why it was rejected (None when kept). Both images grey, in [0, 1]."""
    size, radius = config['patch_size'], config['search_radius']
    margin = int(np.ceil(radius)) + 2
    smooth = lambda image: cv2.GaussianBlur(image, (0, 0), SMOOTHING_SIGMA)
    records = []
    for top, left in window_origins(proxy.shape, size, config['stride']):
        record = {'top': top, 'left': left, 'rejected': None}
        records.append(record)
        window = proxy[top:top + size, left:left + size]
        record['texture'] = round(texture(window), 3)
        start = homography @ translation(left - margin, top - margin)
        if not inside(start, size + 2 * margin, gray_photo.shape):
            record['rejected'] = 'outside photo'
            continue
        if record['texture'] < config['min_texture']:
            record['rejected'] = 'texture'
            continue
        template = smooth(window)
        moving = smooth(warp_photo(gray_photo, start, size + 2 * margin, size + 2 * margin))
        shift = refine_shift(template, moving, config)
        if shift is None or np.hypot(*shift) > radius:
            record['rejected'] = 'refinement'
            record['shift'] = None if shift is None else [round(s, 3) for s in shift]
            continue
        patch_to_photo = homography @ translation(left + shift[0], top + shift[1])
        patch_to_photo /= patch_to_photo[2, 2]
        record['shift'] = [round(s, 3) for s in shift]
        record['patch_to_photo'] = patch_to_photo.tolist()
        aligned = smooth(warp_photo(gray_photo, patch_to_photo, size, size))
        record['correlation'] = round(correlation(template, aligned), 5)
        if record['correlation'] < config['min_correlation']:
            record['rejected'] = 'correlation'
    return records


def align_pair(mosaic, photo, config):
    """(the RAW's grey proxy, homography mosaic -> photo, window records, statistics) of one RAW mosaic and
    its photo."""
    proxy = proxy_gray(mosaic, config['black_level'], config['white_level'])
    gray = photo_gray(photo)
    started = time.time()
    homography, stats = global_homography(proxy, gray, config)
    stats['global_seconds'] = round(time.time() - started, 2)
    stats['photo_scale'] = round(check_homography(homography, mosaic.shape, photo.shape[:2]), 4)
    records = align_windows(proxy, gray, homography, config)
    return proxy, homography, records, stats


# ----------------------------------------------------------------------------------------
# writing

def resampling_source(photo, scale):
    """(the photo crops are resampled from, homography photo pixels -> its pixels): a photo finer than the
    mosaic (scale photo pixels per mosaic pixel) is first shrunk to its resolution by area averaging,
    so that warping does not alias."""
    if scale <= MAX_PHOTO_SCALE:
        return photo, np.eye(3)
    return shrink(photo, 1 / scale), scaling(1 / scale)


def save_jpeg(path, rgb, quality):
    with utils.atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format='JPEG', quality=quality)


def overview(proxy, photo, homography, records, size, photo_scale):
    """One pair's alignment as a uint8 RGB picture: the RAW's proxy (left) and the photo warped onto the RAW's
    frame (right), shrunk to OVERVIEW_SIDE, every window outlined on both in the colour of its outcome
    (OUTCOME_COLOURS), the photo's border in yellow on the proxy, and a legend with the counts below.
    photo_scale: photo pixels per mosaic pixel (the photo is shrunk by area first, not aliased)."""
    scale = min(1.0, OVERVIEW_SIDE / max(proxy.shape))
    to_small = scaling(scale)
    height, width = (max(1, round(n * scale)) for n in proxy.shape)
    left = cv2.resize(np.round(proxy * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_AREA)
    left = cv2.cvtColor(left, cv2.COLOR_GRAY2RGB)
    shrunk = min(1.0, scale / photo_scale)
    # Outside the photo stays black (warp_photo's replicated border would look like scene).
    right = cv2.warpPerspective(shrink(photo, shrunk), scaling(shrunk) @ homography @ np.linalg.inv(to_small),
                                (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT)
    corners = map_points(np.linalg.inv(homography), [[0, 0], [photo.shape[1] - 1, 0],
                                                     [photo.shape[1] - 1, photo.shape[0] - 1], [0, photo.shape[0] - 1]])
    border = np.round(map_points(to_small, corners)).astype(np.int32)
    cv2.polylines(left, [border], True, PHOTO_BORDER_COLOUR, 2)
    # Kept windows last, on top of their rejected neighbours.
    for record in sorted(records, key=lambda r: r['rejected'] is None):
        (x0, y0), (x1, y1) = np.round(map_points(to_small, [[record['left'], record['top']],
                                                            [record['left'] + size - 1, record['top'] + size - 1]]))
        for panel in (left, right):
            cv2.rectangle(panel, (int(x0) + 1, int(y0) + 1), (int(x1) - 1, int(y1) - 1),
                          OUTCOME_COLOURS[record['rejected']], 2)
    legend = np.full((32, 2 * width, 3), 255, np.uint8)
    x = 8
    for outcome, colour in OUTCOME_COLOURS.items():
        text = '%s %d' % (outcome or 'kept', sum(r['rejected'] == outcome for r in records))
        cv2.putText(legend, text, (x, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2, cv2.LINE_AA)
        x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)[0][0] + 24
    return np.vstack([np.hstack([left, right]), legend])


def process_pair(raw_path, photo_path, work_dir, config):
    """Aligns one pair and writes its kept patches to work_dir/<raw stem>/; returns the pair's record."""
    started = time.time()
    mosaic, flip = image_io.read_raw_image(raw_path, config['black_level'], config['white_level'],
                                           config['camera_black_level'], config['camera_white_level'])
    photo = image_io.read_rgb_image(photo_path)
    size = config['patch_size']
    if min(mosaic.shape) < size:
        raise PairError('the RAW mosaic is %dx%d, smaller than patch_size=%d' % (mosaic.shape + (size,)))
    aligning = time.time()
    proxy, homography, records, stats = align_pair(mosaic, photo, config)
    stats['align_seconds'] = round(time.time() - aligning, 2)
    # Written for a pair none of whose windows passed too: the picture shows why.
    save_jpeg(os.path.join(work_dir, 'alignment', stem(raw_path) + '.jpg'),
              overview(proxy, photo, homography, records, size, stats['photo_scale']), config['jpeg_quality'])
    kept = [r for r in records if r['rejected'] is None]
    rejected = dict(collections.Counter(r['rejected'] for r in records if r['rejected']))
    if not kept:
        tried = [r['correlation'] for r in records if r.get('correlation') is not None]
        raise PairError('no window passed (%s%s): the photo shows another scene, or moved too much'
                        % (', '.join('%d %s' % (n, why) for why, n in sorted(rejected.items())),
                           '; best correlation %.3f, min_correlation=%g' % (max(tried), config['min_correlation'])
                           if tried else ''))
    folder = os.path.join(work_dir, stem(raw_path))
    source, to_source = resampling_source(photo, stats['photo_scale'])
    for k, record in enumerate(kept):
        top, left = record['top'], record['left']
        image_io.save_raw_png(os.path.join(folder, 'raw_%d.png' % k), mosaic[top:top + size, left:left + size])
        crop = warp_photo(source, to_source @ np.array(record['patch_to_photo']), size, size)
        save_jpeg(os.path.join(folder, 'photo_%d.jpg' % k), crop, config['jpeg_quality'])
    correlations = [r['correlation'] for r in kept]
    stats.update({'raw': raw_path, 'photo': photo_path, 'mosaic_size': list(mosaic.shape),
                  'photo_size': list(photo.shape[:2]), 'homography': (homography / homography[2, 2]).tolist(),
                  'windows': len(records), 'kept': len(kept), 'rejected': rejected,
                  'median_correlation': float(np.median(correlations)),
                  'median_shift': float(np.median([np.hypot(*r['shift']) for r in kept])),
                  'seconds': round(time.time() - started, 2), 'window_records': records})
    return stats


def split_scenes(names, test_fraction, seed):
    """The scene names put into test/: a seeded random test_fraction of them, at least one if above 0."""
    if test_fraction <= 0:
        return set()
    count = min(len(names) - 1, max(1, int(round(test_fraction * len(names)))))
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i] for i in order[:count]}


def assemble(work_dir, pairs, test_names, config):
    """Moves the pairs' files into the Zurich layout inside work_dir; returns the patch records per split."""
    patches = {'train': [], 'test': []}
    for pair in pairs:
        name = stem(pair['raw'])
        split = 'test' if name in test_names else 'train'
        pair['split'] = split
        source = os.path.join(work_dir, name)
        kept = [r for r in pair['window_records'] if r['rejected'] is None]
        for k, record in enumerate(kept):
            index = len(patches[split])
            for kind, folder, ext in (('raw', 'huawei_raw', 'png'), ('photo', 'canon', 'jpg')):
                target = os.path.join(work_dir, split, folder, '%d.%s' % (index, ext))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(source, '%s_%d.%s' % (kind, k, ext)), target)
            patches[split].append({'index': index, 'pair': name, 'top': record['top'], 'left': record['left'],
                                   'correlation': record['correlation'], 'texture': record['texture'],
                                   'shift': record['shift'], 'patch_to_photo': record['patch_to_photo']})
        if split == 'test':
            write_full_resolution(pair, work_dir, config)
        shutil.rmtree(source, ignore_errors=True)
    return patches


def write_full_resolution(pair, work_dir, config):
    """A test scene whole: its RAW as dng_to_png.py writes it, and its photo warped onto the RAW's frame."""
    name = stem(pair['raw'])
    mosaic, flip = image_io.read_raw_image(pair['raw'], config['black_level'], config['white_level'],
                                           config['camera_black_level'], config['camera_white_level'])
    image_io.save_raw_png(os.path.join(work_dir, 'full_resolution', name + '.png'), mosaic, flip)
    source, to_source = resampling_source(image_io.read_rgb_image(pair['photo']), pair['photo_scale'])
    photo = warp_photo(source, to_source @ np.array(pair['homography']), *mosaic.shape)
    save_jpeg(os.path.join(work_dir, 'full_resolution_canon', name + '.jpg'), photo, config['jpeg_quality'])


def check_config(config):
    for key, what in (('raw_dir', 'the folder of phone RAW files'), ('photo_dir', 'the folder of DSLR photos'),
                      ('output_dir', 'the folder to write the dataset to')):
        if not config[key]:
            raise UserError('%s= is required: %s (try: help)' % (key, what))
    size = config['patch_size']
    if size < 32 or size % 32:
        raise UserError('patch_size=%d: must be a positive multiple of 32 (PyNET halves the mosaic then pools '
                        'four times)' % size)
    config['stride'] = size if config['stride'] is None else config['stride']
    if config['stride'] < 2 or config['stride'] % 2:
        raise UserError('stride=%d: must be a positive even number (windows start on whole Bayer cells)'
                        % config['stride'])
    if not -1 <= config['min_correlation'] <= 1:
        raise UserError('min_correlation=%g: must be in [-1, 1] (default 0.9)' % config['min_correlation'])
    if config['min_texture'] < 0 or config['search_radius'] <= 0 or config['max_time_difference'] < 0:
        raise UserError('min_texture and max_time_difference must be >= 0, search_radius > 0')
    if not 0 <= config['test_fraction'] < 1:
        raise UserError('test_fraction=%g: must be in [0, 1)' % config['test_fraction'])
    if config['match_size'] < 256 or config['max_features'] < 100 or config['min_inliers'] < 4:
        raise UserError('match_size >= 256, max_features >= 100 and min_inliers >= 4 are needed')
    if not 1 <= config['jpeg_quality'] <= 100:
        raise UserError('jpeg_quality=%d: must be 1..100' % config['jpeg_quality'])
    image_io.check_levels(config['black_level'], config['white_level'])


def check_output_dir(out, overwrite):
    """Refuses to replace anything but an (empty folder or a) dataset this script made, with overwrite=true."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise UserError('output_dir=%s is a file: choose a folder name' % out)
    ours = os.path.isfile(os.path.join(out, MARKER))
    if ours and not overwrite:
        raise UserError('%s already holds a dataset: pass overwrite=true to replace it, or choose another '
                        'output_dir' % out)
    if os.listdir(out) and not ours:
        raise UserError('output_dir=%s exists and is not a dataset of this script (no %s): choose a new folder'
                        % (out, MARKER))


def publish(work_dir, out):
    """Puts the finished work_dir in place of output_dir (an old dataset is removed only afterwards)."""
    old = None
    if os.path.exists(out):
        old = work_dir + '.old'
        os.rename(out, old)
    os.rename(work_dir, out)
    if old:
        shutil.rmtree(old)


def build(config, say=print):
    """Builds the dataset; returns its description (also written to dataset.json)."""
    check_config(config)
    out = os.path.normpath(config['output_dir'])
    check_output_dir(out, config['overwrite'])
    raws, problems = distinct_names(folder_files(config['raw_dir'], image_io.RAW_IMAGE_EXTENSIONS, 'raw_dir'))
    photos = folder_files(config['photo_dir'], PHOTO_EXTENSIONS, 'photo_dir')
    if config['pair'] == 'stem':
        pairs, unpaired = pair_by_stem(raws, photos)
    else:
        pairs, unpaired = pair_by_time(raws, photos, config['time_offset'], config['max_time_difference'])
    problems += unpaired
    for path, reason in problems:
        say('error: %s: %s' % (path, reason), file=sys.stderr)
    failed = [{'file': path, 'reason': reason} for path, reason in problems]

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    work_dir = os.path.join(parent, '.%s.tmp-%d' % (os.path.basename(out), os.getpid()))
    done = []
    try:
        for raw_path, photo_path in pairs:
            try:
                record = process_pair(raw_path, photo_path, work_dir, config)
            except UserError as error:      # PairError, or an unreadable file
                shutil.rmtree(os.path.join(work_dir, stem(raw_path)), ignore_errors=True)
                message = str(error)
                say('error: %s + %s: %s' % (raw_path, os.path.basename(photo_path), message), file=sys.stderr)
                failed.append({'file': raw_path, 'photo': photo_path, 'reason': message})
                continue
            say('%s + %s: %d of %d windows kept (%s), median correlation %.3f, %.1f s'
                % (raw_path, os.path.basename(photo_path), record['kept'], record['windows'],
                   ', '.join('%d %s' % (n, why) for why, n in sorted(record['rejected'].items())) or 'none rejected',
                   record['median_correlation'], record['seconds']))
            done.append(record)
        if not done:
            raise UserError('no pair could be used (%d failed, see above): nothing written' % len(failed))
        names = [stem(r['raw']) for r in done]
        if config['test_fraction'] > 0 and len(names) < 2:
            raise UserError('only one scene (%s) could be used: a train/test split by scene needs two or more; '
                            'add pairs or pass test_fraction=0' % names[0])
        patches = assemble(work_dir, done, split_scenes(names, config['test_fraction'], config['seed']), config)
        info = {
            'about': 'phone RAW / DSLR photo pairs aligned by make_camera_dataset.py, in the Zurich RAW-to-RGB layout; '
                     'top/left are mosaic pixels of the RAW as dng_to_png.py writes it (Zurich cell), '
                     'patch_to_photo maps patch pixels (x, y) to photo pixels',
            'config': {k: v for k, v in config.items() if k != 'overwrite'},
            'pairs': [{k: v for k, v in r.items() if k != 'window_records'} for r in done],
            'windows': {stem(r['raw']): [{k: v for k, v in w.items() if k != 'patch_to_photo'}
                                         for w in r['window_records']] for r in done},
            'failed': failed,
            'train': patches['train'], 'test': patches['test'],
        }
        with utils.atomic_path(os.path.join(work_dir, MARKER)) as tmp:
            with open(tmp, 'w') as f:
                json.dump(info, f, indent=1)
        publish(work_dir, out)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return info


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    info = build(config)
    out = config['output_dir']
    print('wrote %s: %d training and %d test patches of %dx%d from %d pairs (%d in test/: %s)'
          % (out, len(info['train']), len(info['test']), config['patch_size'], config['patch_size'],
             len(info['pairs']), sum(p['split'] == 'test' for p in info['pairs']),
             ', '.join(stem(p['raw']) for p in info['pairs'] if p['split'] == 'test') or 'none'))
    if info['failed']:
        unpaired = sum('photo' not in f for f in info['failed'])
        raise UserError('%d unpaired file(s) and %d failed pair(s), see above; the dataset holds the %d pair(s) '
                        'that worked' % (unpaired, len(info['failed']) - unpaired, len(info['pairs'])))


if __name__ == '__main__':
    utils.run_main(main)
