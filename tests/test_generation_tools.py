"""Reconstruction (and soon generation) on tiny untrained models: library in-process, tools end to end.

The models are built with modeling's builders and saved as a run dir (config.json +
model.keras), which is all that load_run needs; training them would add time and prove
nothing about shapes, determinism and bookkeeping.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from evaluation import reconstruction
from tests.toolrun import assert_clean_error
from tests.toolrun import run_tool

Z_DIM = 8
SIZE = 32


def _save_run(path, kind):
  # pylint: disable=g-import-not-at-top
  from modeling import config as config_lib
  from modeling import training
  from modeling.config import ModelConfig
  # pylint: enable=g-import-not-at-top
  config = ModelConfig(kind=kind, image_size=SIZE, z_dim=Z_DIM, encoder_filters=(8, 16),
                       encoder_kernels=(3, 3), strides=(2, 2), decoder_filters=(16, 8),
                       kl_factor=1.0 if kind == "vae" else 0.0)
  model = training.build_model(config, sampling_seed=0)
  model(np.zeros((1, SIZE, SIZE, 3), np.uint8))  # Builds the weights before saving.
  os.makedirs(path)
  config_lib.save_config(os.path.join(path, "config.json"),
                         training.make_run_config(config, training.TrainConfig()))
  model.save(os.path.join(path, "model.keras"))
  return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{"ae": run dir, "vae": run dir} of tiny untrained models (image_size 32, z_dim 8)."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  root = tmp_path_factory.mktemp("runs")
  return {kind: _save_run(root / f"tiny_{kind}", kind) for kind in ("ae", "vae")}


@pytest.fixture(scope="module")
def ae(runs):
  from modeling import run_dir  # pylint: disable=g-import-not-at-top
  return run_dir.load_run(runs["ae"])


def _fns(loaded):
  return (lambda z: np.asarray(loaded.model.decode(z)),
          lambda x: np.asarray(loaded.model.encode(x)))


def test_reconstruction_statistics_of_identity_noise_and_a_model(ae, runs):
  rng = np.random.default_rng(0)
  batches = [rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
  identity = reconstruction.Subject("identity", "ae", "mse", lambda x: x,
                                    lambda z: np.asarray(z, np.float32) / 255.0)
  noise = reconstruction.Subject(
      "noise", "ae", "mse", lambda x: x,
      lambda z: np.random.default_rng(1).random(np.shape(z)).astype(np.float32))
  decode, encode = _fns(ae)
  model = reconstruction.Subject("tiny_ae", "ae", "bce", encode, decode)
  stats, grid = reconstruction.split_statistics([identity, noise, model], batches,
                                                factors=(1.0, 7.0), num_grid=7)
  assert stats["identity"]["psnr"]["num_infinite"] == 15
  assert stats["identity"]["ssim"]["mean"] == pytest.approx(1.0)
  assert stats["identity"]["reconstruction_loss"]["max"] == pytest.approx(0.0, abs=1e-6)
  assert stats["noise"]["psnr"]["max"] < 10.0 and stats["noise"]["ssim"]["max"] < 0.1
  assert stats["tiny_ae"]["psnr"]["count"] == 15
  assert stats["tiny_ae"]["reconstruction_loss"]["mean"] > 0
  assert set(stats["tiny_ae"]["sharpened"]) == {"7"}
  assert grid["originals"].shape == (7, SIZE, SIZE, 3)
  np.testing.assert_array_equal(grid["originals"], np.concatenate(batches)[:7])
  assert grid["tiny_ae"].shape == (7, SIZE, SIZE, 3)
  picture = reconstruction.comparison_grid(grid["originals"], grid, [identity, model],
                                           (1.0, 7.0), "test")
  assert picture.width >= 5 * 96 and picture.height >= 7 * 96  # original + 2 x 2 columns.


def test_compare_reconstructions_tool(runs, prepared_data_dir, tmp_path):
  photo = tmp_path / "me.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 260, 3), np.uint8)).save(photo)
  out = tmp_path / "rec"
  result = run_tool("compare_reconstructions", "--model_dirs", f"{runs['ae']},{runs['vae']}",
                    "--data_dir", prepared_data_dir, "--output_dir", out, "--num_images", "3",
                    "--sharpen", "1,7", "--image", photo)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / "reconstruction.json").read_text())
  assert set(report["models"]) == {"tiny_ae", "tiny_vae"}
  for name, stats in report["models"].items():
    assert stats["psnr"]["count"] == 6 and stats["ssim"]["count"] == 6
    assert stats["reconstruction_loss"]["mean"] > 0 and "summed" in stats["loss_units"]
    assert set(stats["sharpened"]) == {"7"}
  assert report["models"]["tiny_vae"]["kind"] == "vae"
  assert str(photo) in report["provenance"]["inputs"]
  grid = Image.open(out / "reconstructions.png")
  assert grid.width >= 5 * 96 and grid.height >= 3 * 96
  assert Image.open(out / "own_images.png").height >= 96
  bad_image = run_tool("compare_reconstructions", "--model_dirs", runs["ae"], "--data_dir",
                       prepared_data_dir, "--output_dir", tmp_path / "x", "--image",
                       tmp_path / "missing.jpg")
  assert_clean_error(bad_image, "missing.jpg", code=1)
  assert not (tmp_path / "x").exists()