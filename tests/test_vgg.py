"""vgg.py: both MatConvNet layouts, feature extractor against numpy, broken files; the content loss."""
import numpy as np
import pytest
import scipy.io
import tensorflow.compat.v1 as tf

import losses
import vgg
from utils import UserError


def numpy_features(records, images01):
    """relu5_4 of VGG-19 written out in numpy from the raw .mat records (reference)."""
    x = images01.astype(np.float64) * 255.0 - np.array(vgg.MEAN_RGB)
    for record in records[:len(vgg.LAYERS)]:
        kind = record['type']
        if kind == 'conv':
            stored, bias = record['weights'][0, 0], record['weights'][0, 1]
            kernel = stored.transpose(1, 0, 2, 3)          # (w, h, in, out) -> (h, w, in, out)
            padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            h, w = x.shape[1:3]
            out = np.zeros(x.shape[:3] + (kernel.shape[3],))
            for dy in range(3):
                for dx in range(3):
                    out += np.einsum('bhwc,co->bhwo', padded[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
            x = out + bias.reshape(-1)
        elif kind == 'relu':
            x = np.maximum(x, 0)
        else:   # 2x2 max pool, stride 2, SAME: pad the odd edge with -inf
            b, h, w, c = x.shape
            x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-np.inf)
            x = x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c).max(axis=(2, 4))
    return x


def tf_features(path, images):
    with tf.Graph().as_default(), tf.Session() as sess:
        net = vgg.VGG19(path)
        return sess.run(net.features(tf.constant(images, tf.float32)))


@pytest.mark.parametrize('layout', ['beta16', 'new'])
def test_both_layouts_load_and_match_numpy(tmp_path, layout):
    path = vgg.write_random_vgg(str(tmp_path / 'vgg.mat'), layout, seed=1)
    images = np.random.default_rng(0).random((2, 20, 20, 3))
    got = tf_features(path, images)
    expected = numpy_features(vgg.random_layer_records(layout, seed=1), images)
    assert got.shape == expected.shape == (2, 2, 2, 8)      # 20 -> 10 -> 5 -> 3 -> 2 (SAME pools)
    assert np.abs(expected).max() > 1e-2                  # the features are not trivially zero
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_kernel_orientation_matters(tmp_path):
    # Storing the kernels as (h, w) instead of MatConvNet's (w, h) must change the features.
    records = vgg.random_layer_records('beta16', seed=2)
    for record in records:
        if record['type'] == 'conv':
            kernel = record['weights'][0, 0]
            record['weights'][0, 0] = np.ascontiguousarray(kernel.transpose(1, 0, 2, 3))
    images = np.random.default_rng(1).random((1, 16, 16, 3))
    a = tf_features(vgg.write_random_vgg(str(tmp_path / 'a.mat'), seed=2), images)
    b = tf_features(vgg.write_vgg_mat(str(tmp_path / 'b.mat'), records), images)
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match='not found.*imagenet-vgg-verydeep-19.mat'):
        vgg.load_weights(str(tmp_path / 'nothere.mat'))


def test_not_a_mat_file(tmp_path):
    path = tmp_path / 'vgg.mat'
    path.write_text('<html>quota exceeded</html>')
    with pytest.raises(UserError, match='not a readable MATLAB .mat file.*matconvnet'):
        vgg.load_weights(str(path))


def test_mat_without_layers(tmp_path):
    path = str(tmp_path / 'vgg.mat')
    scipy.io.savemat(path, {'net': np.zeros(3)})
    with pytest.raises(UserError, match='no MatConvNet layer list'):
        vgg.load_weights(path)


def test_wrong_network(tmp_path):
    # VGG-16 has no conv3_4: its layer 17 is pool3.
    records = vgg.random_layer_records('new')
    del records[16:18]
    records += records[-2:]
    path = vgg.write_vgg_mat(str(tmp_path / 'vgg16.mat'), records, 'new')
    with pytest.raises(UserError, match="layer 17 is 'pool3'.*'conv3_4'.*verydeep-19"):
        vgg.load_weights(path)


def test_conv_without_weights(tmp_path):
    records = vgg.random_layer_records('beta16')
    del records[2]['weights']
    path = vgg.write_vgg_mat(str(tmp_path / 'vgg.mat'), records)
    with pytest.raises(UserError, match="conv1_2 has no field 'weights'"):
        vgg.load_weights(path)


def test_wrong_kernel_shape(tmp_path):
    records = vgg.random_layer_records('beta16')
    records[0]['weights'][0, 0] = np.zeros((3, 3, 1, 4), np.float32)
    path = vgg.write_vgg_mat(str(tmp_path / 'vgg.mat'), records)
    with pytest.raises(UserError, match='conv1_1 has kernel 3x3x1x4.*expected 3x3x3xN'):
        vgg.load_weights(path)


def test_content_loss_zero_for_identical_positive_otherwise(tmp_path):
    path = vgg.write_random_vgg(str(tmp_path / 'vgg.mat'))
    rng = np.random.default_rng(3)
    a = rng.random((2, 32, 32, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        net = vgg.VGG19(path)
        x, y = tf.placeholder(tf.float32, [None, 32, 32, 3]), tf.placeholder(tf.float32, [None, 32, 32, 3])
        loss = losses.content_loss(net, x, y)
        same, different = sess.run(loss, {x: a, y: a}), sess.run(loss, {x: a, y: b})
        fa, fb = sess.run([net.features(x), net.features(y)], {x: a, y: b})
    assert same == 0.0
    assert different > 0
    # It is the mean over all relu5_4 elements of the batch.
    np.testing.assert_allclose(different, np.mean((fa - fb) ** 2), rtol=1e-5)
