"""Training at scale: data parallelism over local devices and workers, precision, crash-safe
resumption and TensorBoard summaries, as pieces a training loop calls.

- `Distribution` places a training step on one device, on several local devices
  (`tf.compat.v1.distribute.MirroredStrategy`) or on several workers described by `TF_CONFIG`
  (`tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy` over TensorFlow's gRPC
  runtime), all in graph mode with a Session. `build_train_op` splits this worker's batch
  across its replicas and scales the loss so that the update equals the single-device update
  on the global batch.
- `precision` is float32 (default), mixed_float16 (float16 compute, float32 variables,
  dynamic loss scaling) or bfloat16 (oneDNN's rewrite on CPUs that support it, bfloat16
  compute on GPUs).
- `TrainingState` saves and restores everything besides the generator (optimiser slots,
  loss scale) next to the published-layout generator checkpoint, which stays generator-only.
- `SummaryWriter` writes TensorBoard scalars and images under `<models_dir>/tensorboard/`.
"""

import contextlib
import json
import os

import numpy as np

import utils
from utils import UserError

PRECISIONS = ('float32', 'mixed_float16', 'bfloat16')
STATE_DIR = 'training_state'        # under the models folder
TENSORBOARD_DIR = 'tensorboard'     # under the models folder
STATES_KEPT = 2                     # optimiser states are 2x the model: keep only the newest few


# ----------------------------------------------------------------------------------------
# devices and workers

def use_logical_cpus(count):
    """Splits the CPU into `count` logical devices (tests of multi-device code on a CPU-only machine).

    Must run before anything initialises TensorFlow's runtime in this process.
    """
    import tensorflow as tf2
    cpu = tf2.config.list_physical_devices('CPU')[0]
    tf2.config.set_logical_device_configuration(
        cpu, [tf2.config.LogicalDeviceConfiguration() for _ in range(count)])
    return ['/cpu:%d' % i for i in range(count)]


CPU_REPLICAS_ENV = 'PYNET_CPU_REPLICAS'


def cpu_replica_devices(environ=None):
    """Logical CPU devices to mirror over when PYNET_CPU_REPLICAS=N (N > 1) is set, else None.

    Lets multi-device training run on a machine without GPUs (tests, trying things out).
    Call before anything initialises TensorFlow's runtime.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(CPU_REPLICAS_ENV, '').strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise UserError('%s=%s: must be a whole number of logical CPU devices, 1 or more' % (CPU_REPLICAS_ENV, text))
    return use_logical_cpus(int(text)) if int(text) > 1 else None


def read_cluster(environ=None):
    """The multi-worker cluster described by TF_CONFIG, or None when it is unset or has one worker.

    Returns dict(workers=[host:port, ...], index=this worker's index).
    """
    environ = os.environ if environ is None else environ
    text = environ.get('TF_CONFIG', '').strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        workers = list(config['cluster']['worker'])
        task = config['task']
        index = int(task['index'])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError('TF_CONFIG is not valid (%s): expected {"cluster": {"worker": ["host:port", ...]}, '
                        '"task": {"type": "worker", "index": i}}' % (str(error)[:80] or type(error).__name__))
    other_jobs = sorted(set(config['cluster']) - {'worker', 'chief'})
    if other_jobs or 'chief' in config['cluster'] or task.get('type', 'worker') != 'worker':
        raise UserError('TF_CONFIG: only "worker" tasks are supported (found %s); worker 0 is the chief'
                        % ', '.join(other_jobs + (['chief'] if 'chief' in config['cluster'] else [])
                                    or [str(task.get('type'))]))
    if not 0 <= index < len(workers):
        raise UserError('TF_CONFIG: task index %d is outside the %d workers listed' % (index, len(workers)))
    if len(workers) == 1:
        return None
    return {'workers': workers, 'index': index}


class Distribution:
    """Where the training step runs: one device, local replicas, or replicas on several workers."""

    def __init__(self, num_gpus=None, use_gpu=True, cluster=None, devices=None):
        """num_gpus: local GPUs to use (None: all visible; 0 or no GPU: the CPU).

        cluster: read_cluster()'s answer for multi-worker training. devices: explicit local
        devices (e.g. logical CPUs in tests), overriding num_gpus.
        """
        import tensorflow as tf2
        import tensorflow.compat.v1 as tf
        gpus = len(tf2.config.list_physical_devices('GPU')) if use_gpu else 0
        if num_gpus is not None and num_gpus > gpus:
            raise UserError('num_gpus=%d but only %d GPU(s) are visible%s: use num_gpus=%d or fewer'
                            % (num_gpus, gpus, '' if use_gpu else ' with use_gpu=false', gpus))
        local_gpus = gpus if num_gpus is None else num_gpus
        self.cluster = cluster
        self.worker_index = cluster['index'] if cluster else 0
        self.num_workers = len(cluster['workers']) if cluster else 1
        self.is_chief = self.worker_index == 0
        self.server = None
        if cluster:
            resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec({'worker': cluster['workers']}), task_type='worker',
                task_id=self.worker_index, num_accelerators={'GPU': local_gpus}, rpc_layer='grpc')
            self.strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
            self.num_local_replicas = max(local_gpus, 1)
        else:
            if devices is None:
                devices = ['/gpu:%d' % i for i in range(local_gpus)] if local_gpus > 1 else None
            self.strategy = tf.distribute.MirroredStrategy(devices) if devices else None
            self.num_local_replicas = len(devices) if devices else 1
        self.num_replicas = self.num_local_replicas * self.num_workers

    def describe(self):
        """One line for the console."""
        if self.cluster:
            return 'worker %d of %d, %d replica(s) in sync' % (self.worker_index, self.num_workers,
                                                               self.num_replicas)
        return '%d replica(s)' % self.num_replicas if self.strategy else 'one device'

    def check_batch(self, batch_size):
        """The part of the global batch this worker feeds; the global batch must split evenly."""
        if batch_size % self.num_replicas:
            raise UserError('batch_size=%d does not split over %d replicas (%s): use a multiple of %d'
                            % (batch_size, self.num_replicas, self.describe(), self.num_replicas))
        return batch_size // self.num_workers

    def scope(self):
        """Variables created inside this scope are mirrored on every replica."""
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()

    def session_config(self, config):
        """`config` completed for collective ops between workers."""
        return self.strategy.update_config_proto(config) if self.cluster else config

    def session(self, config):
        """A Session on this worker's gRPC server (multi-worker) or in process."""
        import tensorflow.compat.v1 as tf
        config = self.session_config(config)
        if not self.cluster:
            return tf.Session(config=config)
        if self.server is None:
            host, port = self.cluster['workers'][self.worker_index].rsplit(':', 1)
            try:
                self.server = tf.distribute.Server(
                    tf.train.ClusterSpec({'worker': self.cluster['workers']}), job_name='worker',
                    task_index=self.worker_index, protocol='grpc', config=config, start=True)
            except Exception as error:   # port taken, bad address
                raise UserError('cannot start the gRPC server of worker %d on %s:%s (%s): check TF_CONFIG'
                                % (self.worker_index, host, port, str(error).splitlines()[0][:100]))
        return tf.Session(self.server.target, config=config)


def build_train_op(dist, loss_fn, inputs, optimizer, var_list):
    """A train op and the metrics of one step on the global batch.

    loss_fn(*parts) builds the loss on a part of the batch and returns a dict of scalar
    tensors with at least 'loss' (means over that part). inputs: this worker's batch tensors
    (first dimension: the batch). var_list: the variables to train, or a function returning
    them once loss_fn has run (so loss_fn may create them). The metrics returned are the means
    over the global batch.
    """
    import tensorflow.compat.v1 as tf
    variables = var_list if callable(var_list) else lambda: var_list
    if dist.strategy is None:
        metrics = loss_fn(*inputs)
        return optimizer.minimize(metrics['loss'], var_list=variables()), metrics

    # Split on the input's device, so a replica receives only its own part.
    splits = [tf.split(x, dist.num_local_replicas, axis=0) for x in inputs]
    first_local = dist.worker_index * dist.num_local_replicas

    def replica_step():
        replica_id = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
        assert replica_id is not None, 'replica ids are constants in graph mode'
        parts = [s[int(replica_id) - first_local] for s in splits]
        metrics = loss_fn(*parts)
        # compat.v1 optimisers SUM the replicas' gradients: scale each replica's mean loss
        # so that the sum is the gradient of the mean over the global batch.
        step = optimizer.minimize(metrics['loss'] / dist.num_replicas, var_list=variables())
        with tf.control_dependencies([step]):
            return {name: tf.identity(value) for name, value in metrics.items()}

    with dist.scope():
        per_replica = dist.strategy.run(replica_step)
        metrics = {name: dist.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                   for name, value in per_replica.items()}
        # Running the reduced metrics runs every replica's step.
        train_op = tf.group(*metrics.values())
    return train_op, metrics


# ----------------------------------------------------------------------------------------
# precision

def check_precision(precision, use_gpu):
    """UserError when `precision` cannot run here; returns it otherwise."""
    if precision not in PRECISIONS:
        raise UserError('precision=%s: must be one of %s' % (precision, ', '.join(PRECISIONS)))
    if precision == 'bfloat16' and not (use_gpu and utils.gpu_available()):
        if not utils.cpu_supports_bfloat16():
            raise UserError('precision=bfloat16 needs a GPU or a CPU with AVX512-BF16/AMX: '
                            'use precision=float32 on this machine')
        if os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1').strip().lower() in ('0', 'false'):
            # The bfloat16 rewrite is oneDNN's; without oneDNN it silently computes in float32.
            raise UserError('precision=bfloat16 on a CPU needs oneDNN: unset TF_ENABLE_ONEDNN_OPTS=0')
    return precision


def compute_dtype(precision, on_gpu):
    """The dtype the generator computes in (variables stay float32)."""
    import tensorflow.compat.v1 as tf
    if precision == 'mixed_float16':
        return tf.float16
    if precision == 'bfloat16' and on_gpu:
        return tf.bfloat16
    return tf.float32    # float32, and bfloat16 on CPU: oneDNN's graph rewrite converts the ops


class CastWeights:
    """A view of a PyNETWeights store that hands out its float32 variables cast to `dtype`."""

    def __init__(self, weights, dtype):
        self.weights = weights
        self.dtype = dtype

    def get(self, key, shape, initial_value):
        import tensorflow.compat.v1 as tf
        return tf.cast(self.weights.get(key, shape, initial_value), self.dtype)


def generator_outputs(packed_raw, weights, precision='float32', on_gpu=False, **model_options):
    """PyNET's six outputs (float32) for float32 input, computed in the precision's dtype."""
    import tensorflow.compat.v1 as tf
    import model
    dtype = compute_dtype(precision, on_gpu)
    if dtype == tf.float32:
        return model.PyNET(packed_raw, weights=weights, **model_options)
    outputs = model.PyNET(tf.cast(packed_raw, dtype), weights=CastWeights(weights, dtype), **model_options)
    return [tf.cast(o, tf.float32) for o in outputs]


def wrap_optimizer(optimizer, precision):
    """Adds dynamic loss scaling for float16 (its gradients underflow without it).

    Build the training graph inside an explicit `tf.Graph().as_default()`: in the global default
    graph, after TensorFlow's eager context has started, this optimiser fails to build.
    """
    import tensorflow.compat.v1 as tf
    if precision != 'mixed_float16':
        return optimizer
    return tf.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, loss_scale='dynamic')


def precision_session_config(config, precision, on_gpu=False):
    """`config` with oneDNN's bfloat16 rewrite turned on for precision=bfloat16 on a CPU."""
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
    if precision == 'bfloat16' and not on_gpu:
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = RewriterConfig.ON
    return config


# ----------------------------------------------------------------------------------------
# crash-safe resumption

def training_state_path(models_dir, level, iteration):
    """models/training_state/level_<L>_iteration_<i>.ckpt: optimiser state saved with a generator checkpoint."""
    return os.path.join(models_dir, STATE_DIR, 'level_%d_iteration_%d.ckpt' % (level, iteration))


def resume_point(models_dir, level):
    """(iteration, generator checkpoint, training state or None) to continue `level` from; (0, None, None) if none."""
    iterations = utils.saved_iterations(models_dir, level)
    if not iterations:
        return 0, None, None
    last = iterations[-1]
    state = training_state_path(models_dir, level, last)
    return last, utils.checkpoint_path(models_dir, level, last), state if utils.checkpoint_exists(state) else None


class TrainingState:
    """Saves and restores the training variables besides the generator (optimiser slots, loss scale)."""

    def __init__(self, generator_vars):
        import tensorflow.compat.v1 as tf
        generator = {v.op.name for v in generator_vars}
        self.variables = [v for v in tf.global_variables() if v.op.name not in generator]
        self.saver = tf.train.Saver(var_list=self.variables, max_to_keep=None) if self.variables else None

    def save(self, sess, models_dir, level, iteration):
        """Writes the state for `iteration` (call before the generator checkpoint) and prunes old ones."""
        if self.saver is None:
            return None
        path = utils.save_variables(sess, self.saver, training_state_path(models_dir, level, iteration))
        kept = sorted(utils.saved_iterations(models_dir, level) + [iteration])[-STATES_KEPT:]
        for old in self._state_iterations(models_dir, level):
            if old not in kept:
                for suffix in ('.index', '.data-00000-of-00001'):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(training_state_path(models_dir, level, old) + suffix)
        return path

    def restore(self, sess, path):
        """Restores the state saved at `path`."""
        if self.saver is not None:
            utils.restore_variables(sess, self.variables, path)

    @staticmethod
    def _state_iterations(models_dir, level):
        import glob
        import re
        found = []
        for index in glob.glob(os.path.join(glob.escape(os.path.join(models_dir, STATE_DIR)),
                                            'level_%d_iteration_*.ckpt.index' % level)):
            match = re.search(r'_iteration_(\d+)\.ckpt\.index$', index)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)


class Checkpoints:
    """Saving and resuming one level: generator checkpoint (published layout), optimiser state, log line.

    Save order makes a SIGKILL at any moment harmless: the state is written first, then the
    generator checkpoint (its .index renamed last commits the iteration), then the log line.
    Resuming restarts from the last committed iteration, so no log line is ever repeated.
    """

    def __init__(self, models_dir, level, generator_vars, is_chief=True):
        import tensorflow.compat.v1 as tf
        self.models_dir, self.level, self.is_chief = models_dir, level, is_chief
        self.generator_vars = list(generator_vars)
        self.generator_saver = tf.train.Saver(var_list=self.generator_vars, max_to_keep=None)
        self.state = TrainingState(self.generator_vars)

    def resume(self, sess):
        """Restores the last committed iteration of this level; returns it (0: nothing to resume)."""
        remove_stale_temporaries(self.models_dir)
        iteration, generator, state = resume_point(self.models_dir, self.level)
        if iteration:
            utils.restore_variables(sess, self.generator_vars, generator)
            if state is not None:
                self.state.restore(sess, state)
            else:
                print('note: no optimiser state saved with %s: Adam restarts from zero moments' % generator)
        return iteration

    def save(self, sess, iteration, log_line=None, log_path=None):
        """Commits `iteration` (chief only): state, generator checkpoint, then the log line."""
        if not self.is_chief:
            return None
        self.state.save(sess, self.models_dir, self.level, iteration)
        path = utils.save_variables(sess, self.generator_saver,
                                    utils.checkpoint_path(self.models_dir, self.level, iteration))
        if log_line is not None:
            utils.append_line(log_path or os.path.join(self.models_dir, 'logs.txt'), log_line)
        return path


def remove_stale_temporaries(models_dir):
    """Deletes half-written checkpoint files left by killed processes (`.tmp-<pid>-...`)."""
    import glob
    import re
    for folder in (models_dir, os.path.join(models_dir, STATE_DIR)):
        for path in glob.glob(os.path.join(glob.escape(folder), '.tmp-*')):
            match = re.match(r'\.tmp-(\d+)-', os.path.basename(path))
            if match and not _process_alive(int(match.group(1))):
                import shutil
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------------------
# TensorBoard

def tensorboard_dir(models_dir, level):
    """models/tensorboard/level_<L>/"""
    return os.path.join(models_dir, TENSORBOARD_DIR, 'level_%d' % level)


class SummaryWriter:
    """TensorBoard event files for one level: scalars and images, written without graph ops."""

    def __init__(self, models_dir, level, resume_from=None):
        import tensorflow.compat.v1 as tf
        self.tf = tf
        with tf.Graph().as_default():   # FileWriter refuses to start under eager execution
            self.writer = tf.summary.FileWriter(tensorboard_dir(models_dir, level))
        if resume_from is not None:
            # Tells TensorBoard to drop what a killed run wrote after this step.
            self.writer.add_session_log(tf.SessionLog(status=tf.SessionLog.START), resume_from)

    def scalars(self, step, values):
        """values: tag -> number."""
        summary = self.tf.Summary(value=[self.tf.Summary.Value(tag=tag, simple_value=float(value))
                                         for tag, value in values.items()])
        self.writer.add_summary(summary, step)

    def images(self, step, tag, images01):
        """images01: float [H, W, 3] images in [0, 1], shown as tag/0, tag/1, ..."""
        import io
        from PIL import Image
        import image_io
        values = []
        for i, image in enumerate(images01):
            image = np.asarray(image)
            assert image.ndim == 3 and image.shape[-1] == 3, image.shape
            buffer = io.BytesIO()
            Image.fromarray(image_io.to_uint(image, 8)).save(buffer, format='PNG')
            values.append(self.tf.Summary.Value(tag='%s/%d' % (tag, i), image=self.tf.Summary.Image(
                height=image.shape[0], width=image.shape[1], colorspace=3,
                encoded_image_string=buffer.getvalue())))
        self.writer.add_summary(self.tf.Summary(value=values), step)

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()


def read_event_tags(folder):
    """{tag: [(step, value or None for images)]} from the event files under `folder`."""
    import glob
    import tensorflow.compat.v1 as tf
    tags = {}
    for path in sorted(glob.glob(os.path.join(folder, 'events.out.tfevents.*'))):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                number = value.simple_value if value.HasField('simple_value') else None
                tags.setdefault(value.tag, []).append((event.step, number))
    return tags
