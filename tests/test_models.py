"""Model configs, presets, networks, losses and the AE/VAE models (no training).

In this process, except one small subprocess with two logical CPU replicas (they must be
configured before TensorFlow makes its first tensor).
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from evaluation import encoding
from modeling import config as config_lib
from modeling import losses
from modeling import networks
from modeling import training
from modeling.autoencoder import Autoencoder
from modeling.errors import ModelError
from modeling.vae import VAE, Sampling
from tests.toolrun import REPO_ROOT

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


def _bce_numpy(target, probs):
  """Per-value BCE in float64, the textbook formula (no clipping: probs must be in (0, 1))."""
  return -(target * np.log(probs) + (1 - target) * np.log(1 - probs))


def test_reconstruction_losses_are_channel_means_summed_over_pixels():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
  recon = rng.uniform(0.01, 0.99, (3, 4, 4, 3)).astype(np.float32)
  target = images.astype(np.float64) / 255.0
  # The study's units: Keras' binary_crossentropy (the mean over the 3 channels) summed over
  # the pixels; the same for the squared error.
  bce = _bce_numpy(target, recon).mean(axis=-1).sum(axis=(1, 2))
  mse = ((target - recon) ** 2).mean(axis=-1).sum(axis=(1, 2))
  scaled = losses.scale_images(images)
  np.testing.assert_allclose(losses.reconstruction_per_example(scaled, recon, "bce"), bce,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.reconstruction_per_example(scaled, recon, "mse"), mse,
                             rtol=1e-5)
  keras_bce = keras.losses.binary_crossentropy(scaled, recon)  # [B, 4, 4], channel means
  np.testing.assert_allclose(np.sum(keras_bce, axis=(1, 2)), bce, rtol=1e-5)
  # From logits: the same values, also for logits far beyond float32's sigmoid range.
  logits = np.log(recon / (1 - recon))
  np.testing.assert_allclose(losses.reconstruction_from_logits(scaled, logits, "bce"), bce,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.reconstruction_from_logits(scaled, logits, "mse"), mse,
                             rtol=1e-4)
  huge = np.full((1, 1, 1, 3), 200.0, np.float32)
  targets = np.array([[[[0.0, 1.0, 0.5]]]], np.float32)
  np.testing.assert_allclose(losses.reconstruction_from_logits(targets, huge, "bce"),
                             [(200.0 + 0.0 + 100.0) / 3], rtol=1e-6)
  # A saturated output stays finite in the probability form (clipped like Keras' own BCE).
  assert np.isfinite(losses.reconstruction_per_example(scaled, np.ones_like(recon), "bce")).all()
  with pytest.raises(ValueError, match="unknown reconstruction loss"):
    losses.reconstruction_from_logits(scaled, logits, "l1")


def test_bce_from_logits_gives_saturated_wrong_pixels_a_gradient():
  # A pixel whose target is 0 and whose output saturated at 1: clipped probabilities give it no
  # gradient (the clip is flat there); logits give sigmoid(x) - t, about 1 per value.
  targets = tf.zeros((1, 1, 1, 3))
  logits = tf.Variable(tf.fill((1, 1, 1, 3), 30.0))
  with tf.GradientTape(persistent=True) as tape:
    from_logits = losses.reconstruction_from_logits(targets, logits, "bce")
    from_probs = losses.reconstruction_per_example(targets, tf.sigmoid(logits), "bce")
  np.testing.assert_allclose(tape.gradient(from_logits, logits), np.full((1, 1, 1, 3), 1 / 3),
                             rtol=1e-6)
  np.testing.assert_array_equal(tape.gradient(from_probs, logits), np.zeros((1, 1, 1, 3)))


def test_bce_floor_is_the_targets_entropy_and_a_perfect_reconstruction_reaches_it():
  # One 1x2 image by hand: pixel 1 = (0, 255, 51), pixel 2 = (128, 128, 128).
  image = np.array([[[0, 255, 51], [128, 128, 128]]], np.uint8)
  h = lambda t: -(t * math.log(t) + (1 - t) * math.log(1 - t))  # pylint: disable=unnecessary-lambda-assignment
  by_hand = (0 + 0 + h(0.2)) / 3 + h(128 / 255)
  assert losses.bce_floor(image) == pytest.approx(by_hand, rel=1e-12)
  assert by_hand == pytest.approx(0.500402 / 3 + 0.693145, rel=1e-5)
  np.testing.assert_allclose(losses.bce_floor(np.stack([image, image[:, ::-1]])),
                             [by_hand, by_hand], rtol=1e-12)
  images = _images(3, size=8, seed=4)
  images[0, :2] = 0  # Saturated pixels cost nothing: the entropy's 0 log 0 = 0.
  images[1, :2] = 255
  floor = losses.bce_floor(images)
  target = images.astype(np.float64) / 255.0
  inside = np.clip(target, 1e-12, 1 - 1e-12)
  np.testing.assert_allclose(floor, _bce_numpy(target, inside).mean(-1).sum((1, 2)), rtol=1e-9)
  # A perfect reconstruction's loss is the floor, through both of the loss's forms; anything
  # else costs more (BCE = entropy + KL(targets || outputs)).
  scaled = losses.scale_images(images)
  logits = np.log(inside / (1 - inside)).astype(np.float32)
  np.testing.assert_allclose(losses.reconstruction_from_logits(scaled, logits, "bce"), floor,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.reconstruction_per_example(scaled, target, "bce"), floor,
                             rtol=1e-5)
  assert (np.asarray(losses.reconstruction_per_example(scaled, 0.9 * target + 0.05, "bce"))
          > floor).all()
  with pytest.raises(ValueError, match="uint8"):
    losses.bce_floor(images.astype(np.float32))


def test_kl_is_zero_for_the_prior_and_matches_the_closed_form():
  zeros = np.zeros((2, 5), np.float32)
  np.testing.assert_allclose(losses.kl_per_example(zeros, zeros), [0.0, 0.0], atol=1e-7)
  mean = np.array([[1.0, -2.0]], np.float32)
  log_var = np.array([[0.5, -1.0]], np.float32)
  expected = 0.5 * np.sum(np.exp(log_var) + mean ** 2 - 1 - log_var)
  np.testing.assert_allclose(losses.kl_per_example(mean, log_var), [expected], rtol=1e-6)
  np.testing.assert_allclose(np.sum(losses.kl_per_dimension(mean, log_var)), expected, rtol=1e-6)
  # Outside LOG_VAR_RANGE the log-variance is clipped: finite in float32, even from float16.
  low, high = losses.LOG_VAR_RANGE
  wild = np.array([[200.0, -200.0]], np.float32)
  clipped = 0.5 * (np.exp(high) - 1 - high) + 0.5 * (np.exp(low) - 1 - low)
  np.testing.assert_allclose(losses.kl_per_example(np.zeros_like(wild), wild), [clipped],
                             rtol=1e-6)
  half = np.array([[30.0, 0.0]], np.float16)
  kl = losses.kl_per_example(half, half)
  assert kl.dtype == "float32" and np.isfinite(kl).all()


_GLOBAL_BATCH_SCRIPT = """
import json, tensorflow as tf
from modeling import devices, losses
devices.configure_devices(cpu_replicas=2)  # Before any tensor exists: hence this process.
strategy = devices.make_strategy("mirrored")
batch = tf.data.Dataset.from_tensors(tf.constant([1.0, 2.0, 6.0, 3.0]))
per_example = next(iter(strategy.experimental_distribute_dataset(batch)))
per_replica = tf.function(lambda x: strategy.run(losses.average_over_global_batch, (x,)))(
    per_example)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "local": [float(v) for v in strategy.experimental_local_results(per_replica)],
                  "sum": float(strategy.reduce("SUM", per_replica, axis=None))}))
"""


@pytest.mark.slow
def test_average_over_global_batch_divides_by_the_global_batch_on_two_replicas():
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", _GLOBAL_BATCH_SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  # Each replica holds half of the global batch of 4 and divides its sum by 4, not by 2: the
  # replicas' losses (and gradients) then add up to the mean over the global batch.
  assert out["replicas"] == 2
  np.testing.assert_allclose(out["local"], [(1 + 2) / 4, (6 + 3) / 4])
  np.testing.assert_allclose(out["sum"], 3.0)
  np.testing.assert_allclose(losses.average_over_global_batch(tf.constant([1.0, 2.0, 6.0])), 3.0)


def test_sampling_is_seeded_and_has_the_right_moments():
  mean = np.full((4000, 2), 3.0, np.float32)
  log_var = np.full((4000, 2), math.log(4.0), np.float32)
  first = keras.ops.convert_to_numpy(Sampling(seed=5)([mean, log_var]))
  again = keras.ops.convert_to_numpy(Sampling(seed=5)([mean, log_var]))
  np.testing.assert_array_equal(first, again)
  assert abs(first.mean() - 3.0) < 0.1 and abs(first.std() - 2.0) < 0.1


def test_sampling_computes_in_float32_under_float16_and_clips_the_log_variance():
  keras.mixed_precision.set_global_policy("mixed_float16")
  layer = Sampling(seed=0)
  assert layer.compute_dtype == "float32"
  # log_var 30: exp(15) = 3.3e6 overflows float16 (max 65504); clipped to 20, the standard
  # deviation is exp(10) = 22026.
  mean = np.zeros((2000, 2), np.float32)
  z = keras.ops.convert_to_numpy(layer([mean, np.full((2000, 2), 30.0, np.float32)]))
  assert z.dtype == np.float32 and np.isfinite(z).all()
  assert z.std() == pytest.approx(math.exp(losses.LOG_VAR_RANGE[1] / 2), rel=0.1)
  restored = Sampling.from_config(layer.get_config())
  assert restored.compute_dtype == "float32"


def test_decoder_exposes_logits_whose_sigmoid_is_its_output():
  config = config_lib.resolve_config("vae_fact5", TINY)
  decoder = networks.build_decoder(config)
  logits_model = networks.decoder_logits(decoder)
  z = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32) * 30
  logits = keras.ops.convert_to_numpy(logits_model(z))
  images = keras.ops.convert_to_numpy(decoder(z))
  assert logits.dtype == images.dtype == np.float32
  np.testing.assert_allclose(images, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)
  assert logits_model.count_params() == decoder.count_params()
  assert {id(w) for w in logits_model.weights} <= {id(w) for w in decoder.weights}
  # A decoder saved before the logits layer existed (the sigmoid inside its last Conv2D).
  inputs = keras.Input((4,))
  old = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid")(inputs))
  assert networks.decoder_logits(old) is None


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


def test_vae_metrics_equal_a_numpy_computation_of_the_objective():
  """loss, reconstruction_loss, kl_loss and kl_share against NumPy on fixed weights and batch."""
  config = config_lib.resolve_config("vae_fact5", TINY)
  keras.utils.set_random_seed(3)
  model = training.build_model(config, sampling_seed=1)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  # A KL worth measuring: every z_mean near 2, every log-variance near -1.
  model.encoder.get_layer("z_mean").bias.assign(np.full(4, 2.0, np.float32))
  model.encoder.get_layer("z_log_var").bias.assign(np.full(4, -1.0, np.float32))
  images = _images(8, seed=5)
  state = keras.ops.convert_to_numpy(model.sampling.seed_generator.state)
  logs = {k: float(v) for k, v in model.test_step(tf.constant(images)).items()}

  # The same noise again (the sampling state as test_step found it), then NumPy from there.
  model.sampling.seed_generator.state.assign(state)
  z_mean, z_log_var = model.encode_with_log_var(images)
  probs = np.asarray(model.decode(model.sampling([z_mean, z_log_var])), np.float64)
  mu, log_var = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
  target = images / 255.0
  reconstruction = _bce_numpy(target, probs).mean(axis=-1).sum(axis=(1, 2))
  kl = 0.5 * (np.exp(log_var) + mu ** 2 - 1 - log_var).sum(axis=-1)
  total = reconstruction + 5.0 * kl
  assert logs["reconstruction_loss"] == pytest.approx(reconstruction.mean(), rel=1e-5)
  assert logs["kl_loss"] == pytest.approx(kl.mean(), rel=1e-5)
  assert logs["loss"] == pytest.approx(total.mean(), rel=1e-5)
  assert logs["kl_share"] == pytest.approx(5.0 * kl.sum() / total.sum(), rel=1e-5)
  assert 0.05 < logs["kl_share"] < 0.5  # The biases above made the KL count.
  # Never below the floor: the images' own entropy.
  assert logs["reconstruction_loss"] > losses.bce_floor(images).mean()


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


def test_traced_methods_of_several_models_trace_once_each(caplog):
  config = config_lib.resolve_config("ae_z256", TINY)
  decoders = [encoding.traced(training.build_model(config).decode) for _ in range(4)]
  with caplog.at_level("WARNING", logger="tensorflow"):
    for decode in decoders:
      for batch in (5, 3, 5, 1):
        assert decode(np.zeros((batch, 4), np.float32)).shape == (batch, 16, 16, 3)
  assert "retracing" not in caplog.text
