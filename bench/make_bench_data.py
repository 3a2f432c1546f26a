"""Writes a Zurich-layout dataset of full-size (448x448) synthetic patches for benchmarks.

Usage: python bench/make_bench_data.py out_dir=/tmp/pynet-bench-data unique=400 total=30000

`unique` patches are generated (natural-image-like: smooth shapes, texture, sensor noise,
10-bit RAW stored as 16-bit PNG, photo as a quality-95 JPG, about the sizes of the real
files); further indices up to `total` are hard links to them, so a large train_size can be
sampled without tens of GB on disk.
"""
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import image_io  # noqa: E402
import utils  # noqa: E402

KEYS = {
    'out_dir': utils.Key('/tmp/pynet-bench-data', str, 'where to write <out_dir>/train and test'),
    'unique': utils.Key(400, int, 'patches generated per split (train); test gets unique/4'),
    'total': utils.Key(400, int, 'training indices in all (hard links beyond unique)'),
    'side': utils.Key(448, int, 'mosaic side in pixels'),
    'seed': utils.Key(0, int, 'random seed'),
}


def scene(rng, side):
    """A natural-looking RGB image [side, side, 3] in [0, 1]: smooth colour field, discs, texture."""
    coarse = rng.random((6, 6, 3))
    img = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC),
                     np.float32) / 255.0
    yy, xx = np.mgrid[0:side, 0:side]
    for _ in range(6):
        cy, cx, r = rng.integers(0, side, 2).tolist() + [int(rng.integers(side // 16, side // 4))]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)
    texture = np.sin(xx * rng.uniform(0.05, 0.5)) * np.cos(yy * rng.uniform(0.05, 0.5))
    return np.clip(img + 0.05 * texture[..., None], 0, 1)


def write_patch(root, split, index, rng, side):
    rgb = scene(rng, side)
    mosaic = np.zeros((side, side), np.float32)
    for channel, (r, c) in zip((2, 1, 0, 1), image_io.PACKED_CHANNEL_OFFSETS):
        mosaic[r::2, c::2] = rgb[r::2, c::2, channel]
    mosaic = mosaic * 800 + 30 + rng.normal(0, 6, mosaic.shape)      # dark level, gain, sensor noise
    image_io.save_raw_png(os.path.join(root, split, 'huawei_raw', '%d.png' % index),
                          np.clip(np.round(mosaic), 0, 1023).astype(np.uint16))
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(
        os.path.join(root, split, 'canon', '%d.jpg' % index), quality=95)


def main(argv):
    config = utils.parse_args(argv, KEYS, __doc__.splitlines()[2])
    root, side, rng = config['out_dir'], config['side'], np.random.default_rng(config['seed'])
    for split, count, total in (('train', config['unique'], config['total']),
                                ('test', max(1, config['unique'] // 4), max(1, config['unique'] // 4))):
        for folder in ('huawei_raw', 'canon'):
            os.makedirs(os.path.join(root, split, folder), exist_ok=True)
        for i in utils.progress(range(count), desc=split):
            if not os.path.exists(os.path.join(root, split, 'canon', '%d.jpg' % i)):
                write_patch(root, split, i, rng, side)
        for i in range(count, total):      # hard links: more indices, no more disk
            for folder, ext in (('huawei_raw', 'png'), ('canon', 'jpg')):
                link = os.path.join(root, split, folder, '%d.%s' % (i, ext))
                if not os.path.exists(link):
                    os.link(os.path.join(root, split, folder, '%d.%s' % (i % count, ext)), link)
    print('wrote %s' % root)


if __name__ == '__main__':
    utils.run_main(main)
