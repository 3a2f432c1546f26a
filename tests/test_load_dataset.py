"""load_dataset.py: the Zurich layout, what it checks, and the streaming tf.data pipeline."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import image_io
import load_dataset
import tiny_zurich
from utils import UserError


@pytest.fixture
def dataset(tmp_path):
    return tiny_zurich.make_dataset(str(tmp_path / 'data'), n_train=8, n_test=2, side=64)


def raw(dataset, i, split='train'):
    return os.path.join(dataset, split, 'huawei_raw', '%d.png' % i)


def jpg(dataset, i, split='train'):
    return os.path.join(dataset, split, 'canon', '%d.jpg' % i)


def run_all(dataset_op):
    """Every element of a tf.data dataset, as numpy arrays."""
    iterator = tf.data.make_initializable_iterator(dataset_op)
    element, out = iterator.get_next(), []
    with tf.Session() as sess:
        sess.run(iterator.initializer)
        while True:
            try:
                out.append(sess.run(element))
            except tf.errors.OutOfRangeError:
                return out


@pytest.mark.parametrize('level', [0, 1, 3, 5])
def test_reads_packs_and_resizes_like_the_spec(dataset, level):
    pairs = load_dataset.list_pairs(dataset, 'train')
    assert [os.path.basename(r) for r, _ in pairs] == ['%d.png' % i for i in range(8)]
    side = load_dataset.patch_side(pairs)
    assert side == 64
    planes, target = load_dataset.read_patch(*pairs[3], side, level)
    mosaic = np.asarray(Image.open(raw(dataset, 3))).astype(np.uint16)
    # B, Gb, R, Gr planes of the R(0,0) Gb(0,1) Gr(1,0) B(1,1) cell
    expected_planes = np.stack([mosaic[1::2, 1::2], mosaic[0::2, 1::2], mosaic[0::2, 0::2], mosaic[1::2, 0::2]], -1)
    assert planes.dtype == np.uint16 and np.array_equal(planes, expected_planes)
    np.testing.assert_allclose(planes.astype(np.float32) / 1020, image_io.pack_raw(mosaic), rtol=1e-7)
    t = 64 >> level
    expected_target = np.asarray(Image.open(jpg(dataset, 3)).convert('RGB').resize((t, t), Image.BICUBIC))
    assert target.dtype == np.uint8 and target.shape == (t, t, 3)
    assert np.array_equal(target, expected_target)


def test_eight_bit_raw_png_is_read_as_stored(dataset):
    small = np.random.default_rng(0).integers(0, 200, (64, 64)).astype(np.uint8)
    Image.fromarray(small, mode='L').save(raw(dataset, 2))
    pairs = load_dataset.list_pairs(dataset, 'train')
    planes, _ = load_dataset.read_patch(*pairs[2], 64, 0)
    assert planes.max() == small.max() and np.array_equal(planes[..., 2], small[0::2, 0::2])


def test_missing_pair_is_named(dataset):
    os.remove(jpg(dataset, 5))
    with pytest.raises(UserError, match=r'5\.png has no partner .*5\.jpg'):
        load_dataset.list_pairs(dataset, 'train')


def test_missing_raw_of_a_photo_is_named(dataset):
    os.remove(raw(dataset, 0, 'test'))
    with pytest.raises(UserError, match=r'test/canon/0\.jpg has no partner .*0\.png'):
        load_dataset.list_pairs(dataset, 'test')


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(UserError, match='dataset folder .*huawei_raw not found'):
        load_dataset.list_pairs(str(tmp_path / 'nothing'), 'train')


def test_wrong_mosaic_size_is_named(dataset):
    image_io.save_raw_png(raw(dataset, 4), np.zeros((32, 64), np.uint16))
    pairs = load_dataset.list_pairs(dataset, 'train')
    with pytest.raises(UserError, match=r'4\.png is 64x32, the other patches are 64x64'):
        load_dataset.check_headers(pairs, 64)
    with pytest.raises(UserError, match=r'4\.png is 64x32, the other patches are 64x64.*multiple of 32'):
        load_dataset.read_patch(*pairs[4], 64, 0)


def test_side_must_be_a_multiple_of_32(tmp_path):
    root = tiny_zurich.make_dataset(str(tmp_path / 'd'), n_train=2, n_test=1, side=48)
    with pytest.raises(UserError, match=r'0\.png is 48x48: .*multiple of 32'):
        load_dataset.patch_side(load_dataset.list_pairs(root, 'train'))


def test_photo_of_another_size_is_named(dataset):
    Image.new('RGB', (32, 32)).save(jpg(dataset, 1))
    pairs = load_dataset.list_pairs(dataset, 'train')
    with pytest.raises(UserError, match=r'1\.jpg is 32x32, its RAW mosaic is 64x64'):
        load_dataset.read_patch(*pairs[1], 64, 2)


def test_rgb_raw_png_is_named(dataset):
    Image.new('RGB', (64, 64)).save(raw(dataset, 6))
    pairs = load_dataset.list_pairs(dataset, 'train')
    with pytest.raises(UserError, match=r'6\.png has 3 channels.*single-channel'):
        load_dataset.check_headers(pairs, 64)
    with pytest.raises(UserError, match=r'6\.png has 3 channels'):
        load_dataset.read_patch(*pairs[6], 64, 0)


def test_values_above_ten_bits_are_named(dataset):
    image_io.save_raw_png(raw(dataset, 7), np.full((64, 64), 4095, np.uint16))
    pairs = load_dataset.list_pairs(dataset, 'train')
    with pytest.raises(UserError, match=r'7\.png holds values up to 4095, above the 1023'):
        load_dataset.read_patch(*pairs[7], 64, 0)


def test_corrupt_file_is_named(dataset):
    with open(raw(dataset, 3), 'r+b') as f:      # keep the header, destroy the data
        f.seek(60)
        f.write(b'\x00' * 200)
    pairs = load_dataset.list_pairs(dataset, 'train')
    with pytest.raises(UserError, match=r'cannot read RAW image .*3\.png.*damaged'):
        load_dataset.read_patch(*pairs[3], 64, 0)


def test_sampling_keeps_the_published_meaning():
    n, batch, train_size, every, iterations = 40, 6, 5, 4, 16
    with tf.Graph().as_default():
        picks = run_all(load_dataset.train_picks(n, batch, train_size, iterations, seed=7, resample_every=every))
        resumed = run_all(load_dataset.train_picks(n, batch, train_size, iterations, seed=7, first_iteration=6,
                                                   resample_every=every))
        other_seed = run_all(load_dataset.train_picks(n, batch, train_size, iterations, seed=8,
                                                      resample_every=every))
    assert len(picks) == iterations
    subsets = []
    for block in range(iterations // every):
        used = set(np.concatenate([picks[i][0] for i in range(block * every, (block + 1) * every)]).tolist())
        assert len(used) <= train_size and used <= set(range(n))
        subsets.append(frozenset(used))
    assert len(set(subsets)) > 1                       # the subset is drawn again every `every` iterations
    # starting at iteration 6 gives what the uninterrupted stream gave from there on
    assert len(resumed) == iterations - 6
    for a, b in zip(picks[6:], resumed):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(picks, other_seed))
    rotations, flips = np.concatenate([p[1] for p in picks]), np.concatenate([p[2] for p in picks])
    assert set(rotations.tolist()) == {0, 1, 2, 3} and set(flips.tolist()) == {0, 1}


@pytest.mark.parametrize('level', [0, 1])
def test_pipeline_batches_equal_the_numpy_reading(dataset, level):
    pairs = load_dataset.list_pairs(dataset, 'train')
    kwargs = dict(batch_size=4, train_size=5, num_iterations=6, seed=1, resample_every=2)
    with tf.Graph().as_default():
        picks = run_all(load_dataset.train_picks(len(pairs), kwargs['batch_size'], kwargs['train_size'],
                                                 kwargs['num_iterations'], 1, resample_every=2))
        batches = run_all(load_dataset.train_dataset(pairs, 64, level, **kwargs))
    assert len(batches) == 6
    # all 8 rotation and flip combinations are met, each must equal numpy's augment()
    assert len({(r, f) for p in picks for r, f in zip(p[1].tolist(), p[2].tolist())}) == 8
    for (indices, rotations, flips), (planes, targets) in zip(picks, batches):
        # held as the stored samples, never as float
        assert planes.dtype == np.uint16 and targets.dtype == np.uint8
        expected = tiny_zurich.read_subset(pairs, 64, level, indices, list(zip(rotations, flips)))
        assert np.array_equal(planes, expected[0]) and np.array_equal(targets, expected[1])


def test_augmentation_is_identical_on_input_and_target(dataset):
    # At level 1 the target has the packed size: its red channel must sit where the R plane is.
    pairs = load_dataset.list_pairs(dataset, 'train')
    with tf.Graph().as_default():
        picks = run_all(load_dataset.train_picks(len(pairs), 8, 8, 6, seed=2))
        batches = run_all(load_dataset.train_dataset(pairs, 64, 1, batch_size=8, train_size=8, num_iterations=6,
                                                     seed=2))
    rotations = np.concatenate([p[1] for p in picks])
    flips = np.concatenate([p[2] for p in picks])
    assert len(set(zip(rotations.tolist(), flips.tolist()))) >= 6        # many different augmentations seen
    for planes, targets in batches:
        red_raw = planes[..., 2].astype(np.float64) / 1000
        red_rgb = targets[..., 0].astype(np.float64) / 255
        assert np.abs(red_raw - red_rgb).mean(axis=(1, 2)).max() < 0.08
        # an unaugmented target would not fit a rotated input this well
        assert np.abs(red_raw - np.rot90(red_rgb, 1, axes=(1, 2))).mean(axis=(1, 2)).min() > 0.08


def test_test_dataset_is_in_order_with_a_partial_last_batch(dataset):
    pairs = load_dataset.list_pairs(dataset, 'test')
    with tf.Graph().as_default():
        batches = run_all(load_dataset.test_dataset(pairs, 64, 0, batch_size=1)) + \
            run_all(load_dataset.test_dataset(pairs + pairs[:1], 64, 0, batch_size=2))
    assert [b[0].shape[0] for b in batches] == [1, 1, 2, 1]
    expected = tiny_zurich.read_subset(pairs, 64, 0, [0, 1])
    assert np.array_equal(np.concatenate([b[0] for b in batches[:2]]), expected[0])


def test_pipeline_error_names_the_file(dataset):
    with open(raw(dataset, 2), 'wb') as f:
        f.write(b'not a png')
    pairs = load_dataset.list_pairs(dataset, 'train')
    with tf.Graph().as_default():
        with pytest.raises(tf.errors.OpError) as info:
            run_all(load_dataset.test_dataset(pairs, 64, 0, batch_size=8))
    error = load_dataset.user_error(info.value)
    assert error is not None and 'cannot read RAW image' in str(error) and '2.png' in str(error)
    assert '\n' not in str(error)
