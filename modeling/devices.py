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
import numpy as np
import tensorflow as tf
from absl import logging

from modeling import flag_choices
from modeling.errors import ModelError

STRATEGIES = flag_choices.STRATEGIES
# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic: AVX512_BF16 (Cooper Lake, Zen 4
# and later) and AMX (Sapphire Rapids and later). Without them TensorFlow emulates bf16, which
# is slower than float32.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# NVIDIA GPUs run bf16 natively from compute capability 8.0 (Ampere) on.
_GPU_BF16_CAPABILITY = (8, 0)

# A process can join one cluster only once (one gRPC server, collective ops configured at
# startup), so the multi-worker strategy is made once and handed out again.
_multi_worker_strategy = None


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


def _cpu_flags(cpuinfo="/proc/cpuinfo"):
  try:
    with open(cpuinfo, encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return set()  # Not Linux, or unreadable: no native bf16 is assumed.


def resolve_precision(mode, gpus=None, cpu_flags=None):
  """The precision "auto" stands for on this machine, and why; other modes unchanged.

  auto -> "bf16" where the devices that train run bfloat16 natively: every visible GPU has
  compute capability >= 8.0, or (no GPU) the CPU has AVX512_BF16 or AMX; else "off" (float32).
  Loss math and metrics stay float32 either way (losses.py).

  Args:
    mode: "auto", "off", "bf16" or "fp16".
    gpus: [(name, (major, minor) or None)] of the visible GPUs; None reads them from TensorFlow.
    cpu_flags: the CPU's feature flags; None reads /proc/cpuinfo.

  Returns:
    (resolved mode: "off", "bf16" or "fp16", a one-line reason).

  Raises:
    ModelError: an unknown mode.
  """
  if mode != "auto":
    if mode not in flag_choices.PRECISION_POLICIES:
      raise ModelError(f"mixed precision must be one of {flag_choices.PRECISIONS}, got "
                       f"{mode!r}")
    return mode, f"--mixed_precision {mode}"
  if gpus is None:
    gpus = [(d.name, tf.config.experimental.get_device_details(d).get("compute_capability"))
            for d in tf.config.list_physical_devices("GPU")]
  if gpus:
    slow = [name for name, capability in gpus
            if capability is None or tuple(capability) < _GPU_BF16_CAPABILITY]
    if slow:
      return "off", (f"auto: float32, {slow[0]} has no native bfloat16 (compute capability "
                     "below 8.0)")
    return "bf16", "auto: bf16, every GPU has compute capability >= 8.0"
  flags = _cpu_flags() if cpu_flags is None else set(cpu_flags)
  native = sorted(flags & set(_CPU_BF16_FLAGS))
  if native:
    return "bf16", f"auto: bf16, the CPU has {' and '.join(native)}"
  return "off", "auto: float32, the CPU has neither AVX512_BF16 nor AMX (bf16 would be emulated)"


def set_precision(mode):
  """Sets Keras' global dtype policy for `mode` ("auto" resolved first); returns the mode set.

  "off" is float32; "bf16" and "fp16" are Keras' mixed precision (float32 variables).
  """
  resolved, reason = resolve_precision(mode)
  keras.mixed_precision.set_global_policy(flag_choices.PRECISION_POLICIES[resolved])
  if mode == "auto":
    logging.info("mixed precision %s", reason)
  return resolved


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
  logging.info("multi_worker_mirrored: %s %d of a %d-worker cluster%s; waiting for the others "
               "at the first collective", task.task_type, task.index, task.num_workers,
               " (chief)" if task.is_chief else "")
  # AUTO: NCCL between GPUs where every worker has them, else ring all-reduce over gRPC.
  try:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  except RuntimeError as error:  # "Collective ops must be configured at program startup".
    raise ModelError(f"the multi_worker_mirrored strategy must be created before TensorFlow "
                     f"makes its first tensor or dataset ({error}): call "
                     "modeling.devices.make_strategy right after configure_devices") from None
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


def is_multi_worker(strategy):
  """Whether `strategy` joins more than one worker (MultiWorkerMirroredStrategy, TF_CONFIG)."""
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
          and cluster_task().num_workers > 1)


def from_chief(strategy, values):
  """The chief's `values` on every worker: a collective broadcast for a multi-worker strategy.

  Every worker must call this at the same point with arrays of the same shapes and dtypes (the
  values may differ). Each dtype costs one all-reduce (SUM) in which the first replica of the
  chief contributes its values and every other replica zeros: tf.distribute's replica ids
  count the chief's replicas first. Collective ops take no bool or uint8, so those travel as
  int32. Without a multi-worker strategy the values come back unchanged.

  Args:
    strategy: a tf.distribute strategy.
    values: a list of NumPy arrays (or numbers).

  Returns:
    A list of NumPy arrays of the same shapes and dtypes: the chief's values.
  """
  arrays = [np.asarray(v) for v in values]
  if not is_multi_worker(strategy):
    return arrays
  by_dtype = {}
  for index, array in enumerate(arrays):
    by_dtype.setdefault(array.dtype.str, []).append(index)
  out = list(arrays)
  for indices in by_dtype.values():
    wire = arrays[indices[0]].dtype
    if wire.kind == "b" or wire.itemsize < 4:
      wire = np.dtype(np.int32)
    flat = np.concatenate([arrays[i].astype(wire).ravel() for i in indices])
    mine = (flat, np.zeros_like(flat))

    def value_fn(context, mine=mine):
      return tf.constant(mine[0] if context.replica_id_in_sync_group == 0 else mine[1])
    per_replica = strategy.experimental_distribute_values_from_function(value_fn)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
    offset = 0
    for i in indices:
      size = arrays[i].size
      out[i] = total[offset:offset + size].reshape(arrays[i].shape).astype(arrays[i].dtype)
      offset += size
  return out


def copy_variables_from_chief(strategy, variables):
  """Assigns the chief's values of `variables` on every worker (see `from_chief`).

  Multi-worker runs resume from the chief's backup only: a worker whose own backup is older
  (it died while writing one) or missing would otherwise start at another epoch, with other
  weights, and the workers' collectives would no longer match.

  Args:
    strategy: the strategy the variables were created under.
    variables: Keras or TensorFlow variables, created in the same order on every worker.
  """
  variables = list(variables)
  values = from_chief(strategy, [keras.ops.convert_to_numpy(v) for v in variables])
  for variable, value in zip(variables, values):
    variable.assign(value)
