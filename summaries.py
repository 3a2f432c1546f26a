"""TensorBoard summaries of training: scalars and output|target pictures per level, under
<models_dir>/tensorboard/level_<L>/, written without graph ops."""

import io
import os

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

import image_io

TENSORBOARD_DIR = 'tensorboard'     # under the models folder


def tensorboard_dir(models_dir, level):
    """models/tensorboard/level_<L>/"""
    return os.path.join(models_dir, TENSORBOARD_DIR, 'level_%d' % level)


class SummaryWriter:
    """TensorBoard event files for one level: scalars and images."""

    def __init__(self, models_dir, level, resume_from=None):
        with tf.Graph().as_default():   # FileWriter refuses to start under eager execution
            self.writer = tf.summary.FileWriter(tensorboard_dir(models_dir, level))
        if resume_from is not None:
            # Tells TensorBoard to drop what a killed run wrote after this step.
            self.writer.add_session_log(tf.SessionLog(status=tf.SessionLog.START), resume_from)

    def scalars(self, step, values):
        """values: tag -> number."""
        summary = tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(value))
                                    for tag, value in values.items()])
        self.writer.add_summary(summary, step)

    def images(self, step, tag, images01):
        """images01: float [H, W, 3] images in [0, 1], shown as tag/0, tag/1, ..."""
        values = []
        for i, image in enumerate(images01):
            image = np.asarray(image)
            assert image.ndim == 3 and image.shape[-1] == 3, image.shape
            buffer = io.BytesIO()
            Image.fromarray(image_io.to_uint(image, 8)).save(buffer, format='PNG')
            values.append(tf.Summary.Value(tag='%s/%d' % (tag, i), image=tf.Summary.Image(
                height=image.shape[0], width=image.shape[1], colorspace=3,
                encoded_image_string=buffer.getvalue())))
        self.writer.add_summary(tf.Summary(value=values), step)

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()
