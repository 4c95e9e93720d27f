"""The contract with the private Keras API that modeling.keras_compat relies on.

A Keras release that renames, moves or re-signs one of these names fails here, with the name
in the message, instead of failing a multi-worker run in the middle of fit().
"""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling import keras_compat
from modeling.errors import ModelError

_TRAINER = "keras.src.backend.tensorflow.trainer"


def test_the_installed_keras_has_every_private_name_we_use():
  problems = keras_compat.missing()
  assert not problems, (f"Keras {keras.__version__} breaks modeling.keras_compat:\n  "
                        + "\n  ".join(problems))
  keras_compat.require("this test")


def test_keras_is_the_release_setup_cfg_pins():
  # setup.cfg pins keras to the minor release keras_compat was checked against; a newer one
  # needs this file's checks (and the two-worker test of test_distributed.py) run again.
  assert keras.__version__.startswith(keras_compat.TESTED_KERAS + "."), keras.__version__


def test_a_missing_name_is_named(monkeypatch):
  trainer = importlib.import_module(_TRAINER)
  monkeypatch.delattr(trainer, "reduce_per_replica")
  problems = keras_compat.missing()
  assert any(p.startswith(f"{_TRAINER}.reduce_per_replica is missing") for p in problems), problems
  with pytest.raises(ModelError, match=r"lacks what multi-worker training relies on: "
                                       rf"{_TRAINER}\.reduce_per_replica is missing"):
    keras_compat.require("multi-worker training")


def test_a_changed_signature_is_named(monkeypatch):
  trainer = importlib.import_module(_TRAINER)

  def reduce_per_replica(values, strategy):  # One parameter fewer than the wrapper passes.
    return values, strategy
  monkeypatch.setattr(trainer, "reduce_per_replica", reduce_per_replica)
  (problem,) = keras_compat.missing()
  assert problem.startswith(f"{_TRAINER}.reduce_per_replica takes ('values', 'strategy'), not "
                            "('values', 'strategy', 'reduction')"), problem


def test_the_epoch_iterator_yields_what_the_multi_worker_build_unpacks():
  # The wrapped _maybe_symbolic_build takes its first batch as Keras does: from
  # (begin step, end step, iterator) triples.
  trainer = importlib.import_module(_TRAINER)
  dataset = tf.data.Dataset.from_tensors(np.zeros((2, 3), np.uint8))
  epoch = trainer.TFEpochIterator(distribute_strategy=tf.distribute.get_strategy(), x=dataset)
  for _, _, batches in epoch:
    assert next(batches).shape == (2, 3)
    break
  else:
    pytest.fail("Keras' TFEpochIterator yielded nothing")


