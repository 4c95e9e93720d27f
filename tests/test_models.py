"""Model configs, presets, networks, losses and the AE/VAE models (in-process, no training)."""

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling import config as config_lib
from modeling import losses
from modeling import networks
from modeling import training
from modeling.autoencoder import Autoencoder
from modeling.errors import ModelError
from modeling.vae import VAE, Sampling

# Parameter counts at 96x96: a change here means the architecture changed (on purpose or not).
PRESET_PARAMS = {
    "ae_z256": (1_508_672, 1_791_555),
    "ae_z1600": (7_703_168, 7_984_707),
    "vae_fact5": (5_107_520, 3_346_755),
}

TINY = dict(image_size=16, z_dim=4, encoder_filters=[4, 8], encoder_kernels=[3], strides=[2])


def _images(n=4, size=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _flat_colours(n=8, size=16, seed=0):
  """Images of one random colour each: learnable by a 4-dimensional z, unlike noise."""
  colours = np.random.default_rng(seed).integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)
  return np.broadcast_to(colours, (n, size, size, 3)).copy()


@pytest.fixture(autouse=True)
def _float32_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", sorted(PRESET_PARAMS))
def test_preset_parameter_counts(name):
  config = config_lib.PRESETS[name]
  assert config.image_size == 96
  encoder, decoder = networks.build_encoder(config), networks.build_decoder(config)
  assert (encoder.count_params(), decoder.count_params()) == PRESET_PARAMS[name]


def test_presets_reproduce_the_study():
  ae, vae = config_lib.PRESETS["ae_z256"], config_lib.PRESETS["vae_fact5"]
  assert ae.encoder_filters == (64, 64, 128, 128) and ae.encoder_kernels == (5, 5, 3, 3)
  assert ae.decoder_filters == (128, 128, 64, 64) and ae.strides == (2, 2, 2, 2)
  assert config_lib.PRESETS["ae_z1600"] == dataclasses.replace(ae, z_dim=1600)
  assert (vae.kind, vae.z_dim, vae.loss, vae.kl_factor) == ("vae", 256, "bce", 5.0)
  assert vae.encoder_filters == (32, 64, 128, 256) and vae.decoder_filters == (256, 128, 64, 32)
  assert vae.inner_size == 6  # the study's 6x6 innermost maps


def test_resolve_config_broadcasts_and_mirrors():
  config = config_lib.resolve_config("vae_fact5", TINY)
  assert config.encoder_kernels == (3, 3) and config.strides == (2, 2)
  assert config.decoder_filters == (8, 4)  # the encoder's, reversed
  assert config.kl_factor == 5.0
  # None means "keep the preset's value".
  assert config_lib.resolve_config("ae_z256", {"z_dim": None}) == config_lib.PRESETS["ae_z256"]


@pytest.mark.parametrize("preset,overrides,message", [
    ("ae_z256", {"encoder_filters": [8, 16]}, "encoder_kernels has 4 values"),
    ("vae_fact5", {"encoder_filters": [8, 16, 32], "encoder_kernels": [3, 3]},
     "encoder_kernels has 2 values but encoder_filters has 3"),
    ("vae_fact5", {"image_size": 100}, "not divisible by the product of strides"),
    ("ae_z256", {"kl_factor": 1.0}, "kl_factor applies to the VAE only"),
    ("vae_fact5", {"dropout": 1.0}, "dropout must be in [0, 1)"),
    ("vae_fact5", {"z_dim": 0}, "z_dim must be >= 1"),
    ("nope", {}, "unknown preset"),
])
def test_resolve_config_rejects_impossible_values(preset, overrides, message):
  with pytest.raises(ModelError, match=message.replace("[", r"\[").replace(")", r"\)")):
    config_lib.resolve_config(preset, overrides)


def test_config_dict_round_trip(tmp_path):
  config = config_lib.resolve_config("vae_fact5", TINY)
  path = str(tmp_path / "config.json")
  config_lib.save_config(path, {"model": config.to_dict(), "train": {"epochs": 1}})
  run_config = config_lib.load_config(path)
  assert config_lib.model_config_from_run(run_config) == config
  with pytest.raises(ModelError, match="unknown model config keys"):
    config_lib.ModelConfig.from_dict({**config.to_dict(), "extra": 1})
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(ModelError, match="bad.json is not readable JSON"):
    config_lib.load_config(str(tmp_path / "bad.json"))


def test_networks_take_uint8_and_return_unit_range_float32():
  config = config_lib.resolve_config("vae_fact5", TINY)
  encoder, decoder = networks.build_encoder(config), networks.build_decoder(config)
  assert encoder.inputs[0].dtype == "uint8"
  z_mean, z_log_var = encoder(_images())
  assert z_mean.shape == z_log_var.shape == (4, 4)
  out = keras.ops.convert_to_numpy(decoder(z_mean))
  assert out.dtype == np.float32 and out.shape == (4, 16, 16, 3)
  assert 0.0 <= out.min() and out.max() <= 1.0
  # The first layer scales 0..255 to 0..1.
  scaled = keras.ops.convert_to_numpy(encoder.get_layer("scale_to_unit")(np.array([[255, 0]])))
  np.testing.assert_allclose(scaled, [[1.0, 0.0]])


def test_options_change_the_layers():
  config = config_lib.resolve_config("ae_z256", dict(TINY, encoder_kernels=[3, 3], strides=[2, 2],
                                                     batch_norm=True, dropout=0.1,
                                                     upsampling="upsample", dense_units=12))
  encoder, decoder = networks.build_encoder(config), networks.build_decoder(config)
  kinds = {type(layer).__name__ for layer in encoder.layers + decoder.layers}
  assert {"BatchNormalization", "Dropout", "UpSampling2D"} <= kinds
  assert "Conv2DTranspose" not in kinds
  assert encoder.get_layer("enc_dense").units == 12
  assert decoder(encoder(_images())).shape == (4, 16, 16, 3)


def test_reconstruction_losses_match_numpy():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
  recon = rng.uniform(0.01, 0.99, (3, 4, 4, 3)).astype(np.float32)
  target = images.astype(np.float64) / 255.0
  bce = -(target * np.log(recon) + (1 - target) * np.log(1 - recon)).sum(axis=(1, 2, 3))
  mse = ((target - recon) ** 2).sum(axis=(1, 2, 3))
  scaled = losses.scale_images(images)
  np.testing.assert_allclose(losses.reconstruction_per_example(scaled, recon, "bce"), bce,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.reconstruction_per_example(scaled, recon, "mse"), mse,
                             rtol=1e-5)
  # A saturated output stays finite (clipped like Keras' own BCE).
  assert np.isfinite(losses.reconstruction_per_example(scaled, np.ones_like(recon), "bce")).all()


def test_kl_is_zero_for_the_prior_and_matches_the_closed_form():
  zeros = np.zeros((2, 5), np.float32)
  np.testing.assert_allclose(losses.kl_per_example(zeros, zeros), [0.0, 0.0], atol=1e-7)
  mean = np.array([[1.0, -2.0]], np.float32)
  log_var = np.array([[0.5, -1.0]], np.float32)
  expected = 0.5 * np.sum(np.exp(log_var) + mean ** 2 - 1 - log_var)
  np.testing.assert_allclose(losses.kl_per_example(mean, log_var), [expected], rtol=1e-6)
  np.testing.assert_allclose(np.sum(losses.kl_per_dimension(mean, log_var)), expected, rtol=1e-6)


def test_average_over_global_batch_divides_by_the_batch():
  np.testing.assert_allclose(losses.average_over_global_batch(tf.constant([1.0, 2.0, 6.0])), 3.0)


def test_sampling_is_seeded_and_has_the_right_moments():
  mean = np.full((4000, 2), 3.0, np.float32)
  log_var = np.full((4000, 2), math.log(4.0), np.float32)
  first = keras.ops.convert_to_numpy(Sampling(seed=5)([mean, log_var]))
  again = keras.ops.convert_to_numpy(Sampling(seed=5)([mean, log_var]))
  np.testing.assert_array_equal(first, again)
  assert abs(first.mean() - 3.0) < 0.1 and abs(first.std() - 2.0) < 0.1


def test_vae_encode_sample_and_step_metrics():
  config = config_lib.resolve_config("vae_fact5", TINY)
  model = training.build_model(config, sampling_seed=1)
  assert isinstance(model, VAE)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  images = _images(8)
  z_mean, _ = model.encode_with_log_var(images)
  np.testing.assert_array_equal(model.encode(images), z_mean)
  samples = keras.ops.convert_to_numpy(model.sample(3, seed=7))
  np.testing.assert_array_equal(samples, model.sample(3, seed=7))
  assert samples.shape == (3, 16, 16, 3)
  logs = model.test_step(tf.constant(images))
  assert set(logs) == {"loss", "reconstruction_loss", "kl_loss", "kl_share"}
  logs = {k: float(v) for k, v in logs.items()}
  assert logs["loss"] == pytest.approx(logs["reconstruction_loss"] + 5.0 * logs["kl_loss"],
                                       rel=1e-5)
  assert logs["kl_share"] == pytest.approx(5.0 * logs["kl_loss"] / logs["loss"], rel=1e-5)


def test_autoencoder_train_step_lowers_the_loss_on_one_batch():
  config = config_lib.resolve_config("ae_z256", dict(TINY, encoder_kernels=[3, 3],
                                                     strides=[2, 2], loss="mse"))
  keras.utils.set_random_seed(0)
  model = training.build_model(config)
  assert isinstance(model, Autoencoder)
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  batch = tf.constant(_flat_colours(8))
  first = float(model.train_step(batch)["loss"])
  for _ in range(30):
    model.reset_metrics()
    last = float(model.train_step(batch)["loss"])
  assert last < 0.6 * first


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_latents_and_outputs_float32(policy):
  keras.mixed_precision.set_global_policy(policy)
  config = config_lib.resolve_config("vae_fact5", TINY)
  model = training.build_model(config, sampling_seed=0)
  optimizer = keras.optimizers.Adam(1e-3)
  if policy == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer)
  images = _images(4)
  assert model.encode(images).dtype == "float32"
  assert model(images).dtype == "float32"
  assert model.encoder.get_layer("enc0_conv").compute_dtype == policy.split("_")[1]
  logs = model.train_step(tf.constant(images))
  assert math.isfinite(float(logs["loss"]))


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_epoch_means_ignore_the_end_of_data_step():
  # A dataset of unknown length costs Keras one more step that finds it exhausted; that step
  # must not count a batch (it did with a static batch size before update_mean).
  config = config_lib.resolve_config("ae_z256", dict(TINY, encoder_kernels=[3, 3],
                                                     strides=[2, 2]))
  model = training.build_model(config)
  model.compile(optimizer=keras.optimizers.SGD(0.0))
  known = tf.data.Dataset.from_tensor_slices(_images(24)).batch(8, drop_remainder=True)
  unknown = known.filter(lambda batch: True)
  want = model.evaluate(known, verbose=0, return_dict=True)
  got = model.evaluate(unknown, verbose=0, return_dict=True)
  assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
  assert float(model.loss_tracker.count) == 24
