"""Device set-up for training: GPU memory, logical CPU replicas, precision, strategy, seeds.

`configure_devices` must run before TensorFlow first touches a device (before any dataset,
model or tensor is created); the trainers call it first thing. The same holds for the
"multi_worker_mirrored" strategy: it starts this worker's gRPC server and configures
collective ops, which TensorFlow allows only before its first tensor, so a trainer creates it
with `make_strategy` right after `configure_devices`; later calls return that same instance.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf
from absl import logging

from modeling.errors import ModelError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored")
PRECISIONS = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}

# A process can join one cluster only once (one gRPC server, collective ops configured at
# startup), so the multi-worker strategy is made once and handed out again.
_multi_worker_strategy = None
_keras_fixed = False


def configure_devices(*, memory_growth=True, gpu_memory_limit_mb=None, cpu_replicas=1):
  """Sets how TensorFlow takes GPU memory and how many logical CPU devices it sees.

  Args:
    memory_growth: let TensorFlow grow its GPU memory as needed instead of taking nearly all
      of it at start (a desktop may share the card). Ignored without a GPU.
    gpu_memory_limit_mb: hard cap on the memory TensorFlow takes per GPU (a logical device of
      that size); None for no cap. Ignored without a GPU.
    cpu_replicas: split the CPU into this many logical devices, so that the mirrored strategy
      can be tried on a machine without GPUs.

  Raises:
    ModelError: TensorFlow has already initialized its devices in this process.
  """
  try:
    for gpu in tf.config.list_physical_devices("GPU"):
      if gpu_memory_limit_mb:
        tf.config.set_logical_device_configuration(
            gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(gpu_memory_limit_mb))])
      elif memory_growth:
        tf.config.experimental.set_memory_growth(gpu, True)
    if cpu_replicas > 1:
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(cpu_replicas))])
  except RuntimeError as error:
    raise ModelError(f"cannot configure devices after TensorFlow initialized them ({error}); "
                     "configure devices before creating datasets or models") from None


def set_precision(mode):
  """Sets Keras' global dtype policy: "off" (float32), "bf16" or "fp16" (mixed precision)."""
  if mode not in PRECISIONS:
    raise ModelError(f"mixed precision must be one of {sorted(PRECISIONS)}, got {mode!r}")
  keras.mixed_precision.set_global_policy(PRECISIONS[mode])


def set_seed(seed, deterministic=False):
  """Seeds Python, NumPy and TensorFlow; with `deterministic`, makes TF ops deterministic."""
  keras.utils.set_random_seed(int(seed))
  if deterministic:
    # Deterministic kernels can be slower, and some GPU ops then raise instead of running.
    tf.config.experimental.enable_op_determinism()


@dataclasses.dataclass(frozen=True)
class ClusterTask:
  """This process's place in a TF_CONFIG cluster (see `cluster_task`)."""
  task_type: str
  index: int
  num_workers: int
  is_chief: bool


def cluster_task():
  """This process's task from TF_CONFIG; a lone chief ("worker", 0, 1 worker) without it.

  Keras' and tf.distribute's convention decides the chief, the one worker that should write
  the real run dir: the "chief" task when the cluster has one, else worker 0.

  Raises:
    ModelError: TF_CONFIG is set but is not the cluster JSON that tf.distribute reads.
  """
  text = os.environ.get("TF_CONFIG", "").strip()
  if not text:
    return ClusterTask("worker", 0, 1, True)
  hint = "see docs/DISTRIBUTED.md for its form"
  try:
    config = json.loads(text)
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    task_type, index = str(task.get("type", "")), int(task.get("index", 0))
  except (ValueError, TypeError, AttributeError) as error:
    raise ModelError(f"TF_CONFIG is not valid cluster JSON ({error}); {hint}") from None
  members = {"chief": chiefs, "worker": workers}
  if task_type not in members or not 0 <= index < len(members[task_type]):
    raise ModelError(f"TF_CONFIG's task {task!r} is not one of its cluster's chief or worker "
                     f"tasks {members}; {hint}")
  is_chief = task_type == "chief" or (not chiefs and index == 0)
  return ClusterTask(task_type, index, len(chiefs) + len(workers), is_chief)


def _tensorflow_started():
  """Whether TensorFlow's eager context exists already (a tensor or dataset was made)."""
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  return getattr(context.context(), "_context_handle", None) is not None


def _fix_keras_multi_worker():
  """Works around two bugs of Keras 3's TensorFlow trainer under MultiWorkerMirroredStrategy.

  Keras 3 (checked with 3.15) fails every fit() across workers (keras-team/keras#20585,
  tensorflow/tensorflow#72388):
  - `_maybe_symbolic_build` all-reduces (MEAN) the first input batch across the workers only
    to learn its shape; collective ops take no uint8, so our uint8 images fail with "Value
    for attr 'T' of uint8 is not in the list of allowed values" (and any dtype pays a needless
    all-reduce of a batch). The fix builds from this worker's own part of the batch.
  - `reduce_per_replica` means the per-replica metric values with
    `strategy.reduce("MEAN", v, axis=0)`, which fails for scalars ("Invalid reduction
    dimension 0 for input with 0 dimensions"), and every Keras metric is a scalar. The fix
    all-reduces scalars with axis=None: the mean over the replicas of every worker, as the
    one-worker path computes it.
  Both wrap Keras' own functions and change nothing outside multi-worker mode. Applied once
  per process, by make_strategy, only when the cluster has more than one worker.
  """
  # pylint: disable=g-import-not-at-top,protected-access
  global _keras_fixed
  if _keras_fixed:
    return
  try:
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer
    multi_worker = tf_trainer._collective_all_reduce_multi_worker
    keras_reduce = tf_trainer.reduce_per_replica
    keras_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
  except (ImportError, AttributeError) as error:
    logging.warning("Keras %s changed its TensorFlow trainer (%s); multi-worker training runs "
                    "without celeba-stream's workarounds", keras.__version__, error)
    return

  def reduce_per_replica(values, strategy, reduction):
    if reduction not in ("auto", "mean") or not multi_worker(strategy):
      return keras_reduce(values, strategy, reduction)

    def reduce_one(value):
      first = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
      if first.shape.rank == 0:
        return strategy.reduce("MEAN", value, axis=None)
      return keras_reduce(value, strategy, reduction)
    return tree.map_structure(reduce_one, values)

  def maybe_symbolic_build(self, iterator=None, data_batch=None):
    strategy = getattr(self, "_distribute_strategy", None)
    if iterator is not None and strategy is not None and multi_worker(strategy):
      for _, _, batches in iterator:
        batch = next(batches)
        break
      else:
        batch = None
      if batch is not None:
        local = strategy.experimental_local_results
        data_batch = tree.map_structure(
            lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
            batch)
        iterator = None
    return keras_build(self, iterator=iterator, data_batch=data_batch)

  tf_trainer.reduce_per_replica = reduce_per_replica
  tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
  _keras_fixed = True


def make_strategy(name="default"):
  """A tf.distribute strategy by name.

  "default" is TensorFlow's no-op strategy (one device, picked by TensorFlow); "one_device"
  pins the first GPU (or the CPU); "mirrored" replicates over every GPU, or over the logical
  CPUs made by `configure_devices(cpu_replicas=N)` when there is no GPU;
  "multi_worker_mirrored" reads the cluster from TF_CONFIG (one worker without it), starts
  this worker's server and waits for the others at its first collective. It must be made
  before TensorFlow's first tensor, once per process: later calls return the same strategy.

  Raises:
    ModelError: an unknown name, a bad TF_CONFIG, or "multi_worker_mirrored" asked for the
      first time after TensorFlow started.
  """
  global _multi_worker_strategy
  if name not in STRATEGIES:
    raise ModelError(f"strategy must be one of {STRATEGIES}, got {name!r}")
  if name == "multi_worker_mirrored":
    if _multi_worker_strategy is None:
      _multi_worker_strategy = _make_multi_worker_strategy()
    return _multi_worker_strategy
  gpus = tf.config.list_logical_devices("GPU")
  if name == "default":
    strategy = tf.distribute.get_strategy()
  elif name == "one_device":
    strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  else:
    cpus = tf.config.list_logical_devices("CPU")
    devices = [d.name for d in (gpus or cpus)]
    # Reduction through one device works everywhere; NCCL (the GPU default) needs GPUs.
    cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
  logging.info("strategy %s with %d replica(s)", name, strategy.num_replicas_in_sync)
  return strategy


def _make_multi_worker_strategy():
  task = cluster_task()
  if task.num_workers > 1:
    if _tensorflow_started():
      # Else TensorFlow's own "Collective ops must be configured at program startup".
      raise ModelError("the multi_worker_mirrored strategy must be created before TensorFlow "
                       "makes its first tensor or dataset: call modeling.devices.make_strategy "
                       "right after configure_devices")
    _fix_keras_multi_worker()
  logging.info("multi_worker_mirrored: %s %d of a %d-worker cluster%s; waiting for the others "
               "at the first collective", task.task_type, task.index, task.num_workers,
               " (chief)" if task.is_chief else "")
  # AUTO: NCCL between GPUs where every worker has them, else ring all-reduce over gRPC.
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  logging.info("strategy multi_worker_mirrored with %d replica(s)",
               strategy.num_replicas_in_sync)
  return strategy


def shard_by_data(dataset):
  """`dataset` split between multi-worker replicas by element (tf.distribute's DATA policy).

  tf.distribute's default (AUTO) splits the shard *files* between the workers. That fails for
  a split with fewer files than workers ("Could not apply FILE based sharding" for a one-shard
  validation split), and shard files of unequal record counts would give the workers epochs
  of unequal length, whereas they must step together. By element, every worker reads the
  whole input and keeps its share of the batches: equal epochs, at N times the reading. It
  needs the same element order on every worker, which a seeded or unshuffled make_dataset
  gives. A dataset that chose a policy itself keeps it.
  """
  if dataset is None:
    return None
  policy = tf.data.experimental.AutoShardPolicy
  if dataset.options().experimental_distribute.auto_shard_policy != policy.AUTO:
    return dataset
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = policy.DATA
  return dataset.with_options(options)
