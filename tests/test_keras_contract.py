"""What modeling.autoencoder's multi-worker fixes expect of Keras' TensorFlow trainer.

Autoencoder overrides the trainer's `_maybe_symbolic_build`, which Keras has no public hook
for. A Keras release that stops calling it, re-signs it or changes what the epoch iterator
yields fails here by name, instead of failing a multi-worker run in the middle of fit();
test_distributed's two-worker run checks the whole.
"""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
# Tests may read Keras' internals; the library may not.
from keras.src.backend.tensorflow import trainer as keras_trainer

from modeling import autoencoder


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_keras_builds_through_the_overridden_method(method):
  source = inspect.getsource(getattr(keras.Model, method))
  assert "self._maybe_symbolic_build(iterator=" in source, f"keras.Model.{method} changed"


def test_the_overridden_method_keeps_its_signature():
  expected = ("self", "iterator", "data_batch")
  assert tuple(inspect.signature(keras.Model._maybe_symbolic_build).parameters) == expected
  assert (tuple(inspect.signature(autoencoder.Autoencoder._maybe_symbolic_build).parameters)
          == expected)


def test_the_epoch_iterator_yields_what_the_build_unpacks():
  # (begin step, end step, iterator of batches) triples, as the override unpacks them.
  dataset = tf.data.Dataset.from_tensors(np.zeros((2, 3), np.uint8))
  epoch = keras_trainer.TFEpochIterator(distribute_strategy=tf.distribute.get_strategy(),
                                        x=dataset)
  for _, _, batches in epoch:
    assert next(batches).shape == (2, 3)
    break
  else:
    pytest.fail("Keras' TFEpochIterator yielded nothing")


def test_one_process_strategies_do_not_span_workers():
  assert not autoencoder.spans_workers(tf.distribute.get_strategy())
  assert not autoencoder.spans_workers(tf.distribute.OneDeviceStrategy("/cpu:0"))
