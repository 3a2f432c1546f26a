"""Where a graph runs: the CPU or the GPUs (session settings), and training's data parallelism
over local devices and over workers (tf.distribute), in graph mode with a Session.

`Distribution` places a training step on one device, on several local devices
(`tf.compat.v1.distribute.MirroredStrategy`) or on several workers described by `TF_CONFIG`
(`tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy` over TensorFlow's gRPC
runtime). `build_train_op` splits this worker's batch across its replicas and scales the loss
so that the update equals the single-device update on the global batch.
"""

import contextlib
import json
import os

import tensorflow as tf2
import tensorflow.compat.v1 as tf

from utils import UserError

CPU_REPLICAS_ENV = 'PYNET_CPU_REPLICAS'


# ----------------------------------------------------------------------------------------
# the CPU or the GPU

def gpu_available():
    """True when TensorFlow sees a GPU."""
    return bool(tf2.config.list_physical_devices('GPU'))


def session_config(use_gpu=True):
    """A ConfigProto for the GPU (memory grown as needed) or, with use_gpu=False, the CPU alone."""
    config = tf.ConfigProto(allow_soft_placement=True)
    if not use_gpu:
        config.device_count['GPU'] = 0
    else:
        config.gpu_options.allow_growth = True
    return config


# ----------------------------------------------------------------------------------------
# replicas and workers

def use_logical_cpus(count):
    """Splits the CPU into `count` logical devices (tests of multi-device code on a CPU-only machine).

    Must run before anything initialises TensorFlow's runtime in this process.
    """
    cpu = tf2.config.list_physical_devices('CPU')[0]
    tf2.config.set_logical_device_configuration(
        cpu, [tf2.config.LogicalDeviceConfiguration() for _ in range(count)])
    return ['/cpu:%d' % i for i in range(count)]


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
