"""Builds a tiny dataset in the Zurich RAW-to-RGB layout for tests (no downloads), and reads its
patches back in numpy as the training pipeline should deliver them (the tests' reference).

Each patch is a smooth random RGB scene: the photo is the scene as an 8-bit JPG and the RAW is
the same scene sampled through the Zurich Bayer cell (R at (0,0), Gb (0,1), Gr (1,0), B (1,1))
as 10-bit values, so a network can learn the mapping and geometry can be checked.
"""
import os

import numpy as np
from PIL import Image

import image_io
import load_dataset


def scene(rng, side):
    """A smooth random RGB image [side, side, 3] in [0, 1] with a bright top-left corner."""
    coarse = rng.random((4, 4, 3))
    img = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR))
    img = img.astype(np.float64) / 255.0
    img[: side // 4, : side // 4] = 0.95        # makes orientation visible
    return img


def mosaic_of(rgb, max_value=1000):
    """Bayer-samples an RGB image [H, W, 3] in [0, 1] into a uint16 mosaic."""
    h, w, _ = rgb.shape
    mosaic = np.zeros((h, w), np.float64)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return np.round(mosaic * max_value).astype(np.uint16)


def make_dataset(root, n_train=6, n_test=3, side=64, seed=0):
    """Writes root/train|test/huawei_raw/<i>.png and canon/<i>.jpg; returns root."""
    rng = np.random.default_rng(seed)
    for split, count in (('train', n_train), ('test', n_test)):
        for folder in ('huawei_raw', 'canon'):
            os.makedirs(os.path.join(root, split, folder), exist_ok=True)
        for i in range(count):
            rgb = scene(rng, side)
            image_io.save_raw_png(os.path.join(root, split, 'huawei_raw', '%d.png' % i), mosaic_of(rgb))
            Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(
                os.path.join(root, split, 'canon', '%d.jpg' % i), quality=95)
    return str(root)


def augment(planes, target, rotations, flip):
    """Rotates both by rotations*90 degrees, then flips both upside down if flip."""
    planes, target = np.rot90(planes, rotations), np.rot90(target, rotations)
    if flip:
        planes, target = planes[::-1], target[::-1]
    return np.ascontiguousarray(planes), np.ascontiguousarray(target)


def read_subset(pairs, side, level, indices, augmentation=None):
    """Reads the patches at `indices` into two stacked uint arrays, augmented by (rotations, flip) pairs."""
    planes, targets = [], []
    for n, i in enumerate(indices):
        p, t = load_dataset.read_patch(*pairs[i], side, level)
        if augmentation is not None:
            p, t = augment(p, t, *augmentation[n])
        planes.append(p)
        targets.append(t)
    return np.stack(planes), np.stack(targets)
