"""Every use of private Keras (and TensorFlow) API in celeba-stream, in one place.

Keras is pinned to the minor release this was tested with (setup.cfg), and
tests/test_keras_compat.py checks that the installed Keras still has every name in
`REQUIREMENTS`; at run time `require` raises a one-line ModelError naming what is missing.
Private API serves two needs: multi-worker training, which Keras 3's TensorFlow trainer fails
without two wrapped functions (`fix_multi_worker_fit`; the upstream bugs are cited in
docs/DISTRIBUTED.md), and the legacy ImageDataGenerator of the classic recipe that the
pipeline benchmark compares against (`image_data_generator`). Everything else, backups and
checkpoints included, is public API.
"""

import importlib
import inspect

import keras
import tensorflow as tf
from absl import logging

from modeling.errors import ModelError

# The Keras releases the private names below were checked against (setup.cfg pins the same).
TESTED_KERAS = "3.15"
_TRAINER = "keras.src.backend.tensorflow.trainer"
_LEGACY_IMAGE = "keras.src.legacy.preprocessing.image"

# (module, dotted attribute, parameter names or None, what it is for). The parameter names are
# checked too: the wrappers below call these functions with exactly these arguments.
REQUIREMENTS = (
    (_TRAINER, "_collective_all_reduce_multi_worker", ("strategy",),
     "multi-worker fit (is this strategy multi-worker)"),
    (_TRAINER, "reduce_per_replica", ("values", "strategy", "reduction"),
     "multi-worker fit (the reduction of scalar metrics)"),
    (_TRAINER, "TensorFlowTrainer._maybe_symbolic_build", ("self", "iterator", "data_batch"),
     "multi-worker fit (the build from the first batch)"),
    (_LEGACY_IMAGE, "ImageDataGenerator", None, "the classic recipe of the pipeline benchmark"),
)
# Where Keras calls the functions wrapped above: (module, dotted attribute, called name). A
# wrapper of a function that is no longer called would silently do nothing.
CALL_SITES = (
    (_TRAINER, "TensorFlowTrainer.fit", "_maybe_symbolic_build("),
    # The train and test functions (make_train_function, make_test_function) come from here.
    (_TRAINER, "TensorFlowTrainer._make_function", "reduce_per_replica("),
)
_multi_worker_fixed = False


def _resolve(module_name, dotted):
  """The object at module_name.dotted; AttributeError/ImportError naming the missing part."""
  obj = importlib.import_module(module_name)
  path = module_name
  for part in dotted.split("."):
    path = f"{path}.{part}"
    if not hasattr(obj, part):
      raise AttributeError(f"{path} does not exist")
    obj = getattr(obj, part)
  return obj


def missing():
  """What the installed Keras/TensorFlow lacks of what this module relies on.

  Returns:
    A list of one-line descriptions (empty when everything is there), each naming the missing
    or changed attribute and what celeba-stream needs it for.
  """
  problems = []
  for module_name, dotted, parameters, purpose in REQUIREMENTS:
    name = f"{module_name}.{dotted}"
    try:
      obj = _resolve(module_name, dotted)
    except (ImportError, AttributeError) as error:
      problems.append(f"{name} is missing ({error}); needed for {purpose}")
      continue
    if parameters is not None:
      try:
        found = tuple(inspect.signature(obj).parameters)
      except (TypeError, ValueError):
        found = None
      if found != tuple(parameters):
        problems.append(f"{name} takes {found}, not {tuple(parameters)}; needed for {purpose}")
  for module_name, dotted, called in CALL_SITES:
    name = f"{module_name}.{dotted}"
    try:
      source = inspect.getsource(_resolve(module_name, dotted))
    except (ImportError, AttributeError, OSError, TypeError) as error:
      problems.append(f"{name} cannot be read ({error}); it should call {called}...)")
      continue
    if called not in source:
      problems.append(f"{name} no longer calls {called}...), which celeba-stream wraps")
  return problems


def require(purpose):
  """Raises ModelError naming every missing private name, before `purpose` starts.

  Args:
    purpose: what is about to run (for the message), e.g. "multi-worker training".

  Raises:
    ModelError: the installed Keras lacks something listed in REQUIREMENTS or CALL_SITES.
  """
  problems = missing()
  if problems:
    raise ModelError(
        f"Keras {keras.__version__} (with TensorFlow {tf.__version__}) lacks what {purpose} "
        f"relies on: {'; '.join(problems)}; install keras~={TESTED_KERAS}.0, the release "
        "celeba-stream was tested with (setup.cfg)")


def image_data_generator():
  """Keras' legacy ImageDataGenerator class, which the classic recipe feeds.

  Raises:
    ModelError: the installed Keras no longer has it (named in the message).
  """
  try:
    return _resolve(_LEGACY_IMAGE, "ImageDataGenerator")
  except (ImportError, AttributeError):
    require("the classic recipe (ImageDataGenerator)")
    raise


def fix_multi_worker_fit():
  """Works around two bugs of Keras 3's TensorFlow trainer under MultiWorkerMirroredStrategy.

  Keras 3 fails every fit() across workers (upstream bugs: docs/DISTRIBUTED.md):
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
  per process (modeling.devices does it when a cluster has more than one worker).

  Raises:
    ModelError: the installed Keras lacks a function this wraps (named in the message).
  """
  global _multi_worker_fixed
  if _multi_worker_fixed:
    return
  require("multi-worker training")
  trainer = importlib.import_module(_TRAINER)
  # pylint: disable=protected-access
  multi_worker = trainer._collective_all_reduce_multi_worker
  keras_reduce = trainer.reduce_per_replica
  keras_build = trainer.TensorFlowTrainer._maybe_symbolic_build

  def reduce_per_replica(values, strategy, reduction):
    if reduction not in ("auto", "mean") or not multi_worker(strategy):
      return keras_reduce(values, strategy, reduction)

    def reduce_one(value):
      first = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
      if first.shape.rank == 0:
        return strategy.reduce("MEAN", value, axis=None)
      return keras_reduce(value, strategy, reduction)
    return keras.tree.map_structure(reduce_one, values)

  def maybe_symbolic_build(self, iterator=None, data_batch=None):
    strategy = self.distribute_strategy
    if iterator is not None and multi_worker(strategy):
      # Keras' epoch iterator yields (begin step, end step, iterator of batches).
      for _, _, batches in iterator:
        batch = next(batches)
        break
      else:
        batch = None
      if batch is not None:
        local = strategy.experimental_local_results
        data_batch = keras.tree.map_structure(
            lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
            batch)
        iterator = None
    return keras_build(self, iterator=iterator, data_batch=data_batch)

  trainer.reduce_per_replica = reduce_per_replica
  trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
  _multi_worker_fixed = True
  logging.info("Keras %s: multi-worker fit work-arounds applied (keras-team/keras#20585)",
               keras.__version__)
