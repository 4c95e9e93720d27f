"""The convolutional Autoencoder: a Keras model with its own train_step and test_step.

The model owns an encoder and a decoder (functional models from modeling.networks) and
computes its loss itself with tf.GradientTape, so `fit` needs images only (no labels).
"""

import keras
import tensorflow as tf

from modeling import losses
from modeling import networks

PACKAGE = "celeba_stream"


def images_of(data):
  """The image batch of what a dataset yields: a tensor, an (x, ...) tuple or a dict."""
  if isinstance(data, dict):
    return data["image"]
  if isinstance(data, (tuple, list)):
    return data[0]
  return data


class _Untracked:
  """Holds a value where Keras' attribute tracking (and so saving) does not look."""

  def __init__(self, value):
    self.value = value


def spans_workers(strategy):
  """Whether `strategy` is a MultiWorkerMirroredStrategy whose cluster has several workers."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  spec = strategy.cluster_resolver.cluster_spec()
  return sum(spec.num_tasks(job) for job in spec.jobs) > 1


def update_mean(tracker, values):
  """Adds per-example `values` to a keras.metrics.Mean, only once `values` exist.

  With a static batch size the count update is a constant that does not depend on the data,
  and TensorFlow runs it even in the step whose get_next() finds the dataset exhausted: an
  epoch of unknown length would count a phantom batch and report a mean too small by that
  batch's share. The control dependency ties the update to the data.
  """
  with tf.control_dependencies([values]):
    tracker.update_state(values)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Autoencoder(keras.Model):
  """Encoder + decoder trained on the reconstruction loss (see modeling.losses for units).

  Metrics logged per epoch: `loss` (total) and `reconstruction_loss`, both per image and
  averaged over the epoch's images.

  Across several workers, Keras 3's `fit` fails twice (keras-team/keras#20585): it all-reduces
  the first batch just to learn its shapes (collective ops take no uint8), and it reduces step
  outputs along an axis scalars lack. `_maybe_symbolic_build` and `_step_logs` avoid both;
  tests/test_keras_contract.py checks that Keras still calls the method overridden here.
  """

  def __init__(self, encoder, decoder, reconstruction="bce", **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.decoder = decoder
    self.reconstruction = reconstruction
    # The decoder's logits, for the loss; it shares the decoder's layers and adds no weights,
    # and is kept out of Keras' tracking so that saved files look as before.
    self._logits = _Untracked(networks.decoder_logits(decoder))
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")

  @property
  def z_dim(self):
    return int(self.decoder.inputs[0].shape[-1])

  @property
  def metrics(self):
    # Listing the trackers here makes Keras reset them at each epoch start.
    return [self.loss_tracker, self.reconstruction_tracker]

  def build(self, input_shape=None):
    # The encoder and decoder are functional models, built when constructed; there is no
    # state of our own to create.
    self.built = True

  def call(self, images, training=False):
    return self.decoder(self.encoder(images, training=training), training=training)

  def encode(self, images):
    """uint8 images [B,S,S,3] -> z [B, z_dim] float32."""
    return self.encoder(images, training=False)

  def decode(self, z):
    """z [B, z_dim] -> images [B,S,S,3] float32 in [0, 1]."""
    return self.decoder(z, training=False)

  def sample(self, n, seed=0):
    """Decodes n points drawn from N(0, I) with a fixed seed (the study's naive generator)."""
    z = keras.random.normal((int(n), self.z_dim), seed=int(seed))
    return self.decode(z)

  def _reconstruction_loss(self, images, z, training):
    """The reconstruction loss of decoding z against uint8 `images`: float32 [B].

    From the decoder's logits (exact BCE, with a gradient for saturated pixels); a decoder
    saved before it exposed them gives probabilities, which the loss clips.
    """
    targets = losses.scale_images(images)
    logits_model = self._logits.value
    if logits_model is None:
      return losses.reconstruction_per_example(targets, self.decoder(z, training=training),
                                               self.reconstruction)
    return losses.reconstruction_from_logits(targets, logits_model(z, training=training),
                                             self.reconstruction)

  def _forward(self, images, training):
    """Returns (total per example, {metric name: per-example values}) for one batch."""
    z = self.encoder(images, training=training)
    reconstruction = self._reconstruction_loss(images, z, training)
    return reconstruction, {"reconstruction_loss": reconstruction}

  def _update_metrics(self, total, terms):
    # Per-example values: the Mean trackers then average over every image of the epoch, also
    # across replicas (their sums and counts are aggregated), and a short last batch counts
    # by its size.
    update_mean(self.loss_tracker, total)
    update_mean(self.reconstruction_tracker, terms["reconstruction_loss"])

  def train_step(self, data):
    images = images_of(data)
    with tf.GradientTape() as tape:
      total, terms = self._forward(images, training=True)
      loss = losses.average_over_global_batch(total)
      # Identity except under mixed_float16, where the LossScaleOptimizer scales it.
      scaled_loss = self.optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, self.trainable_weights)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
    self._update_metrics(total, terms)
    return self._step_logs()

  def test_step(self, data):
    total, terms = self._forward(images_of(data), training=False)
    self._update_metrics(total, terms)
    return self._step_logs()

  def _step_logs(self):
    logs = {m.name: m.result() for m in self.metrics}
    if spans_workers(self.distribute_strategy):
      # Keras means step outputs over the workers with strategy.reduce(axis=0): give each one.
      logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras' own builds from the first batch averaged over every worker; collective ops take no
    # uint8, and the shapes are all it needs: build from this worker's part of the batch.
    strategy = self.distribute_strategy
    if iterator is not None and spans_workers(strategy):
      # Keras' epoch iterator yields (begin step, end step, iterator of batches).
      for _, _, batches in iterator:
        data_batch = keras.tree.map_structure(
            lambda x: strategy.experimental_local_results(x)[0], next(batches))
        iterator = None
        break
    return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

  def get_config(self):
    return {
        "name": self.name,
        "trainable": self.trainable,
        "encoder": keras.saving.serialize_keras_object(self.encoder),
        "decoder": keras.saving.serialize_keras_object(self.decoder),
        "reconstruction": self.reconstruction,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
    config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
    return cls(**config)
