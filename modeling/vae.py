"""The Variational Autoencoder: sampling layer, KL-weighted loss, and generation from N(0, I).

The encoder returns [z_mean, z_log_var]; training decodes z = z_mean + exp(z_log_var / 2) * eps
drawn by a seeded `Sampling` layer, and adds kl_factor * KL to the reconstruction loss.
Units are the study's (modeling.losses): reconstruction = per-pixel BCE averaged over the 3
channels and summed over the S*S pixels (Keras' binary_crossentropy summed over the image), KL
summed over z, total = reconstruction + kl_factor * KL, all in nats per image. With those
units the study's kl_factor 5 weighs the KL as the study did; its VAE ended above 5015 per
image at 96x96, where the BCE cannot go below the images' entropy, ~4,450 on real CelebA
crops (losses.bce_floor). Sampling and the KL compute in float32 with z_log_var clipped to
losses.LOG_VAR_RANGE. `encode` returns the mean, which is what the evaluation tools study as
the image's z-point.
"""

import keras

from modeling import losses
from modeling.autoencoder import PACKAGE, Autoencoder, update_mean


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(keras.layers.Layer):
  """z = z_mean + exp(z_log_var / 2) * eps with eps ~ N(0, I) from a seeded SeedGenerator.

  Computes in float32 under every dtype policy (a saved config's policy is overridden), with
  z_log_var clipped to losses.LOG_VAR_RANGE = [-20, 20] (the reasons are there): in float16,
  exp(z_log_var / 2) overflows above ~22 and one such value stops the run on NaN.

  The generator's state is a model variable: it is saved with the model and restored on
  resume, so a resumed run draws the same noise as an uninterrupted one would.

  Inputs: [z_mean, z_log_var], each float [B, z_dim]. Output: z, float32 [B, z_dim].
  """

  def __init__(self, seed=None, **kwargs):
    kwargs["dtype"] = "float32"
    super().__init__(**kwargs)
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, inputs):
    z_mean, z_log_var = inputs
    z_mean = keras.ops.cast(z_mean, "float32")
    z_log_var = losses.clip_log_var(z_log_var)
    eps = keras.random.normal(keras.ops.shape(z_mean), dtype="float32", seed=self.seed_generator)
    return z_mean + keras.ops.exp(0.5 * z_log_var) * eps

  def compute_output_shape(self, input_shape):
    return input_shape[0]

  # Keras saves only trainable and non-trainable variables, not SeedGenerator states; saving
  # the state too makes a resumed run draw the noise an uninterrupted run would have drawn.
  def save_own_variables(self, store):
    store["seed_state"] = keras.ops.convert_to_numpy(self.seed_generator.state.value)

  def load_own_variables(self, store):
    if "seed_state" in store:
      self.seed_generator.state.assign(store["seed_state"][...])

  def get_config(self):
    config = super().get_config()
    config["seed"] = self.seed
    return config


class ShareOfTotal(keras.metrics.Metric):
  """sum(part) / sum(total) over the epoch: the KL share of the total loss.

  A ratio of sums rather than a mean of per-batch ratios, so that it equals
  kl_factor * kl_loss / loss of the logged epoch averages.
  """

  def __init__(self, name="kl_share", **kwargs):
    super().__init__(name=name, **kwargs)
    self.part = self.add_variable(shape=(), initializer="zeros", name="part")
    self.total = self.add_variable(shape=(), initializer="zeros", name="total")

  def update_state(self, part, total):
    self.part.assign_add(keras.ops.sum(keras.ops.cast(part, self.dtype)))
    self.total.assign_add(keras.ops.sum(keras.ops.cast(total, self.dtype)))

  def result(self):
    return keras.ops.divide_no_nan(self.part, self.total)

  def reset_state(self):
    self.part.assign(0.0)
    self.total.assign(0.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(Autoencoder):
  """Autoencoder with a stochastic latent layer and a KL term weighted by `kl_factor`.

  Metrics logged per epoch: `loss`, `reconstruction_loss`, `kl_loss` (per image, averaged over
  the epoch) and `kl_share` = kl_factor * kl_loss / loss (the study reports ~3% at factor 5).
  """

  def __init__(self, encoder, decoder, reconstruction="bce", kl_factor=1.0, sampling_seed=None,
               **kwargs):
    super().__init__(encoder, decoder, reconstruction=reconstruction, **kwargs)
    self.kl_factor = float(kl_factor)
    self.sampling_seed = sampling_seed
    self.sampling = Sampling(seed=sampling_seed, name="sampling")
    self.kl_tracker = keras.metrics.Mean(name="kl_loss")
    self.kl_share_tracker = ShareOfTotal(name="kl_share")

  @property
  def metrics(self):
    return super().metrics + [self.kl_tracker, self.kl_share_tracker]

  def call(self, images, training=False):
    """Reconstructions: decoded samples while training, the decoded mean otherwise."""
    z_mean, z_log_var = self.encoder(images, training=training)
    z = self.sampling([z_mean, z_log_var]) if training else z_mean
    return self.decoder(z, training=training)

  def encode(self, images):
    """uint8 images -> z_mean [B, z_dim] (the deterministic z-point of each image)."""
    z_mean, _ = self.encoder(images, training=False)
    return z_mean

  def encode_with_log_var(self, images):
    """uint8 images -> (z_mean, z_log_var), e.g. for the KL per latent component."""
    z_mean, z_log_var = self.encoder(images, training=False)
    return z_mean, z_log_var

  def _forward(self, images, training):
    # Validation uses a sampled z too, so that val_loss estimates the same objective as loss.
    z_mean, z_log_var = self.encoder(images, training=training)
    z = self.sampling([z_mean, z_log_var])
    reconstruction = self._reconstruction_loss(images, z, training)
    kl = losses.kl_per_example(z_mean, z_log_var)
    total = reconstruction + self.kl_factor * kl
    return total, {"reconstruction_loss": reconstruction, "kl_loss": kl}

  def _update_metrics(self, total, terms):
    super()._update_metrics(total, terms)
    update_mean(self.kl_tracker, terms["kl_loss"])
    self.kl_share_tracker.update_state(self.kl_factor * terms["kl_loss"], total)

  def get_config(self):
    config = super().get_config()
    config.update(kl_factor=self.kl_factor, sampling_seed=self.sampling_seed)
    return config
