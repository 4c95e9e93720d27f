"""Loss terms of the AE and the VAE, per example, in the study's units.

- Reconstruction "bce": binary cross-entropy per value, averaged over the 3 channels of a pixel
  and summed over the S*S pixels, in nats per image: Keras' `binary_crossentropy` summed over
  the image, the study's loss (its AE ended near 4850 per image, its VAE above 5015 at 96x96).
  It never goes below the entropy of its targets (`bce_floor`), which real crops sit just above.
- Reconstruction "mse": squared error averaged over the channels, summed over the pixels.
- KL: KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over z, in nats per image (closed form of
  Kingma & Welling 2014, "Auto-Encoding Variational Bayes", appendix B), z_log_var clipped.
- Total: reconstruction + kl_factor * KL; the KL share is kl_factor * KL / total.
Everything computes in float32 and returns one value per example; `average_over_global_batch`
divides by the global batch size, so one replica and N replicas make the same update.
"""

import keras
import numpy as np
import tensorflow as tf

# Keeps log() finite when a probability saturates at exactly 0 or 1 (Keras uses the same); only
# for reconstructions given as probabilities (evaluation, decoders without logits).
_EPSILON = 1e-7

# z_log_var is clipped to this range wherever it is used (sampling, KL): the standard deviation
# exp(log_var / 2) stays in [4.5e-5, 2.2e4]. A trained VAE's log-variances lie far inside it
# (the KL pulls them towards 0, and an informative component needs a few units below 0, not
# 20); only a diverging run leaves it, and there exp(log_var) would overflow float32 beyond
# ~88 (float16 beyond ~11; sampling's exp(log_var / 2) beyond ~22). Outside the range a
# log-variance gets no gradient from the terms that clip it.
LOG_VAR_RANGE = (-20.0, 20.0)


def scale_images(images):
  """uint8 [B,S,S,3] -> float32 in [0, 1], the target the reconstructions are compared with."""
  return keras.ops.cast(images, "float32") / 255.0


def _per_image(values):
  """[B,S,S,3] per-value losses -> [B]: mean over the channels, sum over the S*S pixels."""
  return keras.ops.sum(keras.ops.mean(values, axis=-1), axis=(1, 2))


def reconstruction_per_example(targets, reconstructions, kind="bce"):
  """Reconstruction loss of images given as probabilities, per image (units in the module doc).

  For evaluation and for decoders saved before they exposed logits; training uses
  `reconstruction_from_logits`, which is exact where this clips.

  Args:
    targets: float [B,S,S,3] in [0, 1] (`scale_images` of the uint8 images).
    reconstructions: float [B,S,S,3] in [0, 1] (the decoder's output).
    kind: "bce" or "mse".

  Returns:
    float32 [B].

  Raises:
    ValueError: an unknown `kind`.
  """
  targets = keras.ops.cast(targets, "float32")
  reconstructions = keras.ops.cast(reconstructions, "float32")
  if kind == "bce":
    probs = keras.ops.clip(reconstructions, _EPSILON, 1.0 - _EPSILON)
    values = -(targets * keras.ops.log(probs) + (1.0 - targets) * keras.ops.log(1.0 - probs))
  elif kind == "mse":
    values = keras.ops.square(targets - reconstructions)
  else:
    raise ValueError(f"unknown reconstruction loss {kind!r}")
  return _per_image(values)


def reconstruction_from_logits(targets, logits, kind="bce"):
  """Reconstruction loss from the decoder's logits (sigmoid(logits) is the image), per image.

  BCE uses the stable form of tf.nn.sigmoid_cross_entropy_with_logits,
  max(x, 0) - x * t + log(1 + exp(-|x|)): exact for any logit, and its gradient
  sigmoid(x) - t never vanishes for a saturated pixel that is wrong (clipped probabilities
  give such a pixel no gradient at all). MSE compares sigmoid(logits) with the targets.

  Args:
    targets: float [B,S,S,3] in [0, 1].
    logits: float [B,S,S,3], any real values (cast to float32 here).
    kind: "bce" or "mse".

  Returns:
    float32 [B], in the units of the module doc (the same values as
    `reconstruction_per_example(targets, sigmoid(logits))` where that does not clip).

  Raises:
    ValueError: an unknown `kind`.
  """
  targets = keras.ops.cast(targets, "float32")
  logits = keras.ops.cast(logits, "float32")
  if kind == "bce":
    values = (keras.ops.relu(logits) - logits * targets
              + keras.ops.log1p(keras.ops.exp(-keras.ops.abs(logits))))
  elif kind == "mse":
    values = keras.ops.square(targets - keras.ops.sigmoid(logits))
  else:
    raise ValueError(f"unknown reconstruction loss {kind!r}")
  return _per_image(values)


def _binary_entropy_table():
  """Binary entropy in nats of t = v / 255 for every uint8 v (0 log 0 = 0), float64 [256]."""
  t = np.arange(256, dtype=np.float64) / 255.0
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -(t * np.log(t) + (1.0 - t) * np.log1p(-t))
  h[0] = h[255] = 0.0
  return h


_ENTROPY = _binary_entropy_table()


def bce_floor(images):
  """The lowest "bce" reconstruction loss any model can reach on `images`, per image.

  A BCE of targets t against predictions p is H(t) + KL(t || p) >= H(t), with equality for
  p = t: the floor is the targets' own binary entropy, in the units of the module doc (mean
  over the 3 channels, sum over the pixels). A perfect reconstruction's loss equals it. Pixels
  of 0 or 255 cost nothing; a pixel of 128 costs about log 2 = 0.69 nats per value.

  Args:
    images: uint8 [B,S,S,3] (or [S,S,3] for one image), NumPy.

  Returns:
    float64 [B] (a float for one image), in nats per image. Real 96x96 CelebA crops give about
    4,450 (0.48 per value; from about 1,850 to 6,050 per image).

  Raises:
    ValueError: `images` is not uint8 or not [..., S, S, 3].
  """
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
    raise ValueError(f"bce_floor takes uint8 [B,S,S,3] images, got {images.dtype} "
                     f"{images.shape}")
  # Per image through a 256-entry table: no float copy of more than one image at a time.
  batch = images[None] if images.ndim == 3 else images
  floors = np.array([_ENTROPY[image].mean(axis=-1).sum() for image in batch], np.float64)
  return float(floors[0]) if images.ndim == 3 else floors


def clip_log_var(z_log_var):
  """z_log_var as float32, clipped to LOG_VAR_RANGE (why there)."""
  return keras.ops.clip(keras.ops.cast(z_log_var, "float32"), *LOG_VAR_RANGE)


def kl_per_dimension(z_mean, z_log_var):
  """KL(N(mean, exp(log_var)) || N(0, 1)) per latent component, float32 [B, z_dim], in nats.

  0.5 * (exp(log_var) + mean^2 - 1 - log_var) (Kingma & Welling 2014, appendix B), with
  log_var clipped to LOG_VAR_RANGE.
  """
  z_mean = keras.ops.cast(z_mean, "float32")
  z_log_var = clip_log_var(z_log_var)
  return 0.5 * (keras.ops.exp(z_log_var) + keras.ops.square(z_mean) - 1.0 - z_log_var)


def kl_per_example(z_mean, z_log_var):
  """KL(N(mean, exp(log_var)) || N(0, I)) summed over z: float32 [B], in nats."""
  return keras.ops.sum(kl_per_dimension(z_mean, z_log_var), axis=-1)


def average_over_global_batch(per_example):
  """Sum of this replica's per-example losses divided by the global batch size.

  The global batch is this replica's batch times the number of replicas in sync, which is
  exact when the batches split evenly (training uses drop_remainder) and what
  tf.distribute's own losses do otherwise.
  """
  return tf.nn.compute_average_loss(per_example)
