"""Loss terms of the AE and the VAE, per example, with their units.

Units (S = image side, so an image has P = S*S*3 values in [0, 1]):
- Reconstruction, "bce": binary cross-entropy summed over the P pixel values, in nats per
  image. It never reaches 0 for natural images (a pixel of 0.5 costs log 2 even when it is
  reproduced exactly); the study's AE at 96x96 ended near 4850 per image, about 0.175 per
  value.
- Reconstruction, "mse": squared error summed over the P values, in (intensity in [0, 1])^2
  per image; 0 for a perfect reconstruction.
- KL: KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over the z_dim components, in nats per
  image.
- Total: reconstruction + kl_factor * KL; the KL share is kl_factor * KL / total.

All functions return one value per example [B]. Averaging over the batch happens in
`average_over_global_batch`, which divides by the *global* batch size: under tf.distribute
each replica sees a slice of the batch and the gradients of the replicas are summed, so this
makes one replica and N replicas compute the same loss and the same update.
"""

import keras
import tensorflow as tf

# Keeps log() finite when a sigmoid output saturates at exactly 0 or 1 (Keras uses the same).
_EPSILON = 1e-7


def scale_images(images):
  """uint8 [B,S,S,3] -> float32 in [0, 1], the target the reconstructions are compared with."""
  return keras.ops.cast(images, "float32") / 255.0


def reconstruction_per_example(targets, reconstructions, kind="bce"):
  """Reconstruction loss summed over pixels and channels: [B] (units in the module doc)."""
  targets = keras.ops.cast(targets, "float32")
  reconstructions = keras.ops.cast(reconstructions, "float32")
  if kind == "bce":
    probs = keras.ops.clip(reconstructions, _EPSILON, 1.0 - _EPSILON)
    values = -(targets * keras.ops.log(probs) + (1.0 - targets) * keras.ops.log(1.0 - probs))
  elif kind == "mse":
    values = keras.ops.square(targets - reconstructions)
  else:
    raise ValueError(f"unknown reconstruction loss {kind!r}")
  return keras.ops.sum(values, axis=(1, 2, 3))


def kl_per_example(z_mean, z_log_var):
  """KL(N(mean, exp(log_var)) || N(0, I)) summed over z: [B], in nats."""
  z_mean = keras.ops.cast(z_mean, "float32")
  z_log_var = keras.ops.cast(z_log_var, "float32")
  return 0.5 * keras.ops.sum(
      keras.ops.exp(z_log_var) + keras.ops.square(z_mean) - 1.0 - z_log_var, axis=-1)


def kl_per_dimension(z_mean, z_log_var):
  """KL per latent component [B, z_dim], in nats (for per-dimension analyses)."""
  z_mean = keras.ops.cast(z_mean, "float32")
  z_log_var = keras.ops.cast(z_log_var, "float32")
  return 0.5 * (keras.ops.exp(z_log_var) + keras.ops.square(z_mean) - 1.0 - z_log_var)


def average_over_global_batch(per_example):
  """Sum of this replica's per-example losses divided by the global batch size.

  The global batch is this replica's batch times the number of replicas in sync, which is
  exact when the batches split evenly (training uses drop_remainder) and what
  tf.distribute's own losses do otherwise.
  """
  return tf.nn.compute_average_loss(per_example)
