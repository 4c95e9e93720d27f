"""Builders for the convolutional encoder and its mirrored decoder (Keras functional models).

The encoder takes uint8 images [B, S, S, 3] and scales them to [0, 1] in its first layer, so
that the host never holds a float copy of the data. Latent layers and the decoder's output
layers (logits and sigmoid) compute in float32 even under a mixed-precision policy: z is what
the evaluation tools store, and the loss needs precise logits.
"""

import keras
import tensorflow as tf

from modeling.config import ModelConfig

# The decoder's last linear layer; its sigmoid is the decoded image.
LOGITS = "reconstruction_logits"


@tf.custom_gradient
def _leaky_relu_grad_from_output(x):
  y = tf.nn.leaky_relu(x, alpha=0.2)
  def grad(dy):
    return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=0.2)
  return y, grad


def leaky_relu(x):
  """Keras' "leaky_relu" (slope 0.2) with its gradient computed from the output, not the input.

  Why: with oneDNN on (modeling/tf_env.py), Keras' own makes Grappler log "remapper failed ...
  LeakyReluGrad" at the first train step. Same values and bit-for-bit the same gradients (the
  output has the input's sign), not slower (docs/benchmarks/README.md); saved models load it as
  Keras' own "leaky_relu".
  """
  return _leaky_relu_grad_from_output(x)


def _activation(name):
  """The activation for a config name (our `leaky_relu` for "leaky_relu")."""
  return leaky_relu if name == "leaky_relu" else name


def _conv_block(x, config, filters, kernel, stride, name, transpose=False):
  """Convolution (or upsampling + convolution), optional BatchNorm, activation, dropout."""
  # With BatchNorm right after it, a convolution bias would be cancelled by the normalization.
  use_bias = not config.batch_norm
  if not transpose:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                            name=f"{name}_conv")(x)
  elif config.upsampling == "transpose":
    x = keras.layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same",
                                     use_bias=use_bias, name=f"{name}_convT")(x)
  else:
    if stride > 1:
      x = keras.layers.UpSampling2D(size=stride, name=f"{name}_up")(x)
    x = keras.layers.Conv2D(filters, kernel, strides=1, padding="same", use_bias=use_bias,
                            name=f"{name}_conv")(x)
  if config.batch_norm:
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
  x = keras.layers.Activation(_activation(config.activation), name=f"{name}_act")(x)
  if config.dropout > 0:
    x = keras.layers.Dropout(config.dropout, name=f"{name}_dropout")(x)
  return x


def build_encoder(config: ModelConfig):
  """The encoder: uint8 [B,S,S,3] -> z [B,z_dim] (AE) or [z_mean, z_log_var] (VAE).

  Layers: Rescaling(1/255), then per layer Conv2D(filters, kernel, stride, "same") ->
  [BatchNorm] -> activation -> [Dropout], Flatten, [Dense(dense_units) + activation], then
  Dense(z_dim) for the AE or two Dense(z_dim) heads (z_mean, z_log_var) for the VAE.
  """
  config.validate()
  size = config.image_size
  images = keras.Input(shape=(size, size, 3), dtype="uint8", name="images")
  x = keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit")(images)
  layers = zip(config.encoder_filters, config.encoder_kernels, config.strides)
  for index, (filters, kernel, stride) in enumerate(layers):
    x = _conv_block(x, config, filters, kernel, stride, name=f"enc{index}")
  x = keras.layers.Flatten(name="flatten")(x)
  if config.dense_units:
    x = keras.layers.Dense(config.dense_units, name="enc_dense")(x)
    x = keras.layers.Activation(_activation(config.activation), name="enc_dense_act")(x)
  if config.kind == "ae":
    outputs = keras.layers.Dense(config.z_dim, dtype="float32", name="z")(x)
  else:
    outputs = [keras.layers.Dense(config.z_dim, dtype="float32", name="z_mean")(x),
               keras.layers.Dense(config.z_dim, dtype="float32", name="z_log_var")(x)]
  return keras.Model(images, outputs, name="encoder")


def build_decoder(config: ModelConfig):
  """The decoder: z [B,z_dim] float -> images [B,S,S,3] float32 in [0, 1].

  Dense to the innermost feature map (inner_size^2 x encoder_filters[-1]), reshape, one
  upsampling block per encoder layer (filters = decoder_filters, kernels and strides = the
  encoder's reversed), then a stride-1 linear Conv2D to 3 channels (the layer LOGITS) and a
  sigmoid (the layer "reconstruction"). The sigmoid is a layer of its own so that training can
  take the logits (`decoder_logits`) and compute the BCE from them.
  """
  config.validate()
  inner, channels = config.inner_size, config.encoder_filters[-1]
  z = keras.Input(shape=(config.z_dim,), dtype="float32", name="z")
  # Linear, as in the study's decoder: the first upsampling block applies the activation.
  x = keras.layers.Dense(inner * inner * channels, name="dec_dense")(z)
  x = keras.layers.Reshape((inner, inner, channels), name="dec_reshape")(x)
  layers = zip(config.decoder_filters, config.decoder_kernels, config.decoder_strides)
  for index, (filters, kernel, stride) in enumerate(layers):
    x = _conv_block(x, config, filters, kernel, stride, name=f"dec{index}", transpose=True)
  logits = keras.layers.Conv2D(3, config.encoder_kernels[0], padding="same", dtype="float32",
                               name=LOGITS)(x)
  outputs = keras.layers.Activation("sigmoid", dtype="float32", name="reconstruction")(logits)
  return keras.Model(z, outputs, name="decoder")


def decoder_logits(decoder):
  """A model z -> the decoder's logits [B,S,S,3] float32 (sharing the decoder's layers), or None.

  None for a decoder without a LOGITS layer: one saved before the decoder exposed its logits,
  whose last Conv2D applies the sigmoid itself.
  """
  try:
    logits = decoder.get_layer(LOGITS)
  except ValueError:
    return None
  return keras.Model(decoder.input, logits.output, name="decoder_logits")
