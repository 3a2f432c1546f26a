"""The Zurich RAW-to-RGB dataset: finding its patch pairs, reading and checking them, and
streaming them to the training graph through tf.data.

Layout: <dataset_dir>/<train|test>/huawei_raw/<i>.png (single-channel Bayer mosaic, 10-bit
values) next to <dataset_dir>/<train|test>/canon/<i>.jpg (the aligned DSLR photo, same size).

Patches travel as their stored samples (uint16 Bayer planes, uint8 photos) and become
float32 only inside the graph, so host memory holds a few batches, whatever train_size is.
"""

import os
import re

import numpy as np
import tensorflow as tf2
from PIL import Image

import image_io
from utils import UserError

RAW_FOLDER = 'huawei_raw'
RGB_FOLDER = 'canon'
SPLITS = ('train', 'test')
MOSAIC_MULTIPLE = 32      # PyNET needs the packed side divisible by 16
RESAMPLE_EVERY = 1000     # iterations between two draws of the train_size subset (published)


# ----------------------------------------------------------------------------------------
# finding and checking files

def _indexed_files(folder, ext):
    """{index: path} of the files named <i><ext> in folder."""
    found = {}
    for name in os.listdir(folder):
        match = re.fullmatch(r'(\d+)' + re.escape(ext), name, flags=re.IGNORECASE)
        if match:
            found[int(match.group(1))] = os.path.join(folder, name)
    return found


def list_pairs(dataset_dir, split):
    """[(raw_png, rgb_jpg), ...] of one split, by index; every RAW must have its photo and back."""
    assert split in SPLITS, split
    split_dir = os.path.join(dataset_dir, split)
    raw_dir, rgb_dir = os.path.join(split_dir, RAW_FOLDER), os.path.join(split_dir, RGB_FOLDER)
    for folder in (raw_dir, rgb_dir):
        if not os.path.isdir(folder):
            raise UserError('dataset folder %s not found: extract the Zurich RAW-to-RGB dataset into %s '
                            '(or pass dataset_dir=)' % (folder, dataset_dir))
    raws, rgbs = _indexed_files(raw_dir, '.png'), _indexed_files(rgb_dir, '.jpg')
    for index in sorted(set(raws) ^ set(rgbs)):
        have, missing = (raws[index], os.path.join(rgb_dir, '%d.jpg' % index)) if index in raws else \
                        (rgbs[index], os.path.join(raw_dir, '%d.png' % index))
        raise UserError('%s has no partner %s: every RAW patch needs its photo and back; '
                        'restore the missing file or remove the other' % (have, missing))
    if not raws:
        raise UserError('no patches (<i>.png in %s) found: extract the Zurich dataset into %s'
                        % (raw_dir, dataset_dir))
    return [(raws[i], rgbs[i]) for i in sorted(raws)]


SIZE_RULE = ('patches must be square Bayer mosaics with a side that is a multiple of %d (448x448 in the '
             'Zurich dataset), each with a photo of the same size' % MOSAIC_MULTIPLE)


def patch_side(pairs):
    """Mosaic side of the dataset's patches (448 for Zurich), from the first RAW; checked."""
    raw_path = pairs[0][0]
    width, height = _header(raw_path, 'RAW image')[:2]
    if height != width or height % MOSAIC_MULTIPLE:
        raise UserError('RAW image %s is %dx%d: %s' % (raw_path, width, height, SIZE_RULE))
    return height


def _header(path, what):
    """(width, height, bands) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size + (len(image.getbands()),)
    except FileNotFoundError:
        raise UserError('%s %s not found' % (what, path))
    except Exception as error:
        raise UserError('cannot read %s %s (%s): the file is damaged or not an image; replace it'
                        % (what, path, str(error).splitlines()[0][:100] if str(error) else type(error).__name__))


def check_headers(pairs, side):
    """Checks sizes and channel counts of every pair from the file headers (fast: no decoding)."""
    for raw_path, rgb_path in pairs:
        width, height, bands = _header(raw_path, 'RAW image')
        if bands != 1:
            raise UserError('RAW image %s has %d channels; a RAW PNG must be a single-channel Bayer mosaic'
                            % (raw_path, bands))
        if (height, width) != (side, side):
            raise UserError('RAW image %s is %dx%d, the other patches are %dx%d: %s'
                            % (raw_path, width, height, side, side, SIZE_RULE))
        width, height, _ = _header(rgb_path, 'photo')
        if (height, width) != (side, side):
            raise UserError('photo %s is %dx%d, its RAW mosaic is %dx%d: %s'
                            % (rgb_path, width, height, side, side, SIZE_RULE))


def target_side(side, level):
    """Side of the level-L target for mosaics of `side` (Zurich: 448 at level 0 ... 14 at level 5)."""
    assert side % (1 << level) == 0, (side, level)
    return side >> level


def read_patch(raw_path, rgb_path, side, level):
    """(uint16 Bayer planes [side/2, side/2, 4], uint8 target [t, t, 3]) with every check of the spec."""
    mosaic = image_io.read_raw_png(raw_path)      # checks: missing, damaged, channels, > 10 bits
    if mosaic.shape != (side, side):
        raise UserError('RAW image %s is %dx%d, the other patches are %dx%d: %s'
                        % (raw_path, mosaic.shape[1], mosaic.shape[0], side, side, SIZE_RULE))
    photo = image_io.read_rgb_image(rgb_path)
    if photo.shape[:2] != (side, side):
        raise UserError('photo %s is %dx%d, its RAW mosaic is %dx%d: %s'
                        % (rgb_path, photo.shape[1], photo.shape[0], side, side, SIZE_RULE))
    t = target_side(side, level)
    if t != side:
        # PIL's bicubic on the 8-bit photo, as published; the result stays uint8.
        photo = np.asarray(Image.fromarray(photo).resize((t, t), resample=Image.BICUBIC))
    return image_io.bayer_planes(mosaic), photo


# ----------------------------------------------------------------------------------------
# tf.data pipelines

USER_ERROR_TAG = '[pynet-user-error]'


def dihedral(image, rotations, flip):
    """np.rot90 of [H, W, C] by `rotations` quarter turns, then an upside-down flip if `flip`; contiguous."""
    image = np.rot90(image, int(rotations))
    return np.ascontiguousarray(image[::-1] if flip else image)


def _loader(pairs, side, level):
    """A numpy function (index, rotations, flip) -> (planes, target), augmented, for tf.numpy_function."""
    def load(index, rotations, flip):
        try:
            planes, target = read_patch(*pairs[int(index)], side, level)
            # Augmented in numpy: TensorFlow's oneDNN build logs an error line for an integer Transpose.
            return dihedral(planes, rotations, flip), dihedral(target, rotations, flip)
        except UserError as error:
            # tf.data wraps Python exceptions; the tag lets user_error() find our message again.
            raise ValueError('%s%s%s' % (USER_ERROR_TAG, error, USER_ERROR_TAG))
    return load


def user_error(op_error):
    """The UserError a loader raised inside tf.data, recovered from TensorFlow's error, or None."""
    match = re.search(re.escape(USER_ERROR_TAG) + '(.*?)' + re.escape(USER_ERROR_TAG), str(op_error), re.S)
    return UserError(match.group(1)) if match else None


def _decode(pairs, side, level):
    """A tf.data map function: (index, rotations, flip) -> (uint16 planes, uint8 target), augmented."""
    load, t = _loader(pairs, side, level), target_side(side, level)

    def decode(index, rotations, flip):
        # Decoding, resizing (PIL, for the published bicubic) and augmenting run in Python.
        planes, target = tf2.numpy_function(load, [index, rotations, flip], [tf2.uint16, tf2.uint8],
                                            stateful=False)
        planes.set_shape([side // 2, side // 2, 4])
        target.set_shape([t, t, 3])
        return planes, target
    return decode


def _options(threads):
    options = tf2.data.Options()
    options.deterministic = True        # the same seed gives the same batches in the same order
    if threads:
        options.threading.private_threadpool_size = threads
    return options


def train_picks(n, batch_size, train_size, num_iterations, seed=0, first_iteration=0,
                resample_every=RESAMPLE_EVERY):
    """Per iteration: (patch indices [B], rotations [B] in 0..3, flips [B] in 0..1), int64.

    Published sampling: every `resample_every` iterations a random subset of `train_size`
    of the n patches is drawn (without replacement), and each iteration's batch is drawn
    from that subset. Every draw is a pure function of (seed, iteration), so the stream can
    start at any iteration and then matches an uninterrupted run.
    """
    train_size = min(train_size, n)
    assert batch_size > 0 and train_size > 0 and resample_every > 0
    # Separate random streams for the subset, the picks, the rotations and the flips.
    stream = lambda k, x: tf2.stack([tf2.constant(seed * 4 + k, tf2.int64), tf2.cast(x, tf2.int64)])

    def block_iterations(block):
        subset = tf2.random.experimental.stateless_shuffle(tf2.range(n, dtype=tf2.int64), stream(0, block))
        subset = subset[:train_size]
        first = tf2.maximum(tf2.constant(first_iteration, tf2.int64), block * resample_every)
        last = tf2.minimum(tf2.constant(num_iterations, tf2.int64), (block + 1) * resample_every)

        def picks(iteration):
            chosen = tf2.random.stateless_uniform([batch_size], stream(1, iteration), 0, train_size, tf2.int64)
            rotations = tf2.random.stateless_uniform([batch_size], stream(2, iteration), 0, 4, tf2.int64)
            flips = tf2.random.stateless_uniform([batch_size], stream(3, iteration), 0, 2, tf2.int64)
            return tf2.gather(subset, chosen), rotations, flips
        return tf2.data.Dataset.range(first, last).map(picks)

    first_block, last_block = first_iteration // resample_every, -(-num_iterations // resample_every)
    return tf2.data.Dataset.range(first_block, last_block).flat_map(block_iterations)


def train_dataset(pairs, side, level, batch_size, train_size, num_iterations, seed=0,
                  first_iteration=0, resample_every=RESAMPLE_EVERY, threads=None, shard=(0, 1)):
    """Augmented training batches (uint16 planes [B, s/2, s/2, 4], uint8 targets [B, t, t, 3]).

    The batches of train_picks(), decoded, packed, resized and augmented in parallel and
    prefetched. Patches are read when used: only the subset's indices scale with train_size.
    shard=(worker, workers): only this worker's slice of every batch of batch_size is read
    (multi-worker training), so the workers together see exactly the one-process batches.
    """
    worker, workers = shard
    assert 0 <= worker < workers and batch_size % workers == 0, (shard, batch_size)
    dataset = train_picks(len(pairs), batch_size, train_size, num_iterations, seed, first_iteration,
                          resample_every)
    part = batch_size // workers
    if workers > 1:
        begin = worker * part
        dataset = dataset.map(lambda *picks: tuple(p[begin:begin + part] for p in picks))
    dataset = dataset.unbatch().map(_decode(pairs, side, level), num_parallel_calls=tf2.data.AUTOTUNE)
    dataset = dataset.batch(part, drop_remainder=True).prefetch(2)
    return dataset.with_options(_options(threads))


def test_dataset(pairs, side, level, batch_size, threads=None):
    """The patches in order, unaugmented, in batches of batch_size (the last one may be smaller)."""
    zero = tf2.constant(0, tf2.int64)
    dataset = tf2.data.Dataset.range(len(pairs)).map(lambda i: (i, zero, zero))
    dataset = dataset.map(_decode(pairs, side, level), num_parallel_calls=tf2.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(1).with_options(_options(threads))


def to_float(planes, target):
    """Graph ops: uint16 planes -> packed RAW / 1020 and uint8 target -> [0, 1], both float32."""
    return (tf2.cast(planes, tf2.float32) / image_io.RAW_SCALE,
            tf2.cast(target, tf2.float32) / 255.0)
