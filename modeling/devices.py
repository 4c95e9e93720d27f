"""Device set-up for training: GPU memory, logical CPU replicas, precision, strategy, seeds.

`configure_devices` must run before TensorFlow first touches a device (before any dataset,
model or tensor is created); the trainers call it first thing.
"""

import keras
import tensorflow as tf
from absl import logging

from modeling.errors import ModelError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored")
PRECISIONS = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


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


def make_strategy(name="default"):
  """A tf.distribute strategy by name.

  "default" is TensorFlow's no-op strategy (one device, picked by TensorFlow); "one_device"
  pins the first GPU (or the CPU); "mirrored" replicates over every GPU, or over the logical
  CPUs made by `configure_devices(cpu_replicas=N)` when there is no GPU;
  "multi_worker_mirrored" reads the cluster from TF_CONFIG (one worker without it).
  """
  if name not in STRATEGIES:
    raise ModelError(f"strategy must be one of {STRATEGIES}, got {name!r}")
  gpus = tf.config.list_logical_devices("GPU")
  if name == "default":
    strategy = tf.distribute.get_strategy()
  elif name == "one_device":
    strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  elif name == "mirrored":
    cpus = tf.config.list_logical_devices("CPU")
    devices = [d.name for d in (gpus or cpus)]
    # Reduction through one device works everywhere; NCCL (the GPU default) needs GPUs.
    cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
  else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  logging.info("strategy %s with %d replica(s)", name, strategy.num_replicas_in_sync)
  return strategy
