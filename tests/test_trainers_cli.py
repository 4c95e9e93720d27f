"""The trainers as a user runs them: python -m tools.train_ae / tools.train_vae.

The training runs call the tools' entry points in this process (tests/toolrun.run_main): one run
of each trainer on the prepared 32x32 fixture, and two data-dependent refusals. Flag errors run
in a subprocess, which shows that they stop before TensorFlow loads.
"""

import csv
import json
import os

import pytest

from data_pipeline import provenance
from modeling import run_dir
from tests.toolrun import assert_clean_error, run_main, run_tool

pytestmark = pytest.mark.slow

TINY = ("--encoder_filters=8,16", "--encoder_kernels=3", "--strides=2", "--z_dim=8",
        "--batch_size=8", "--epochs=1")


def _history(model_dir):
  with open(os.path.join(model_dir, "history.csv"), newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_train_ae_writes_a_complete_run_dir_and_refuses_a_different_config(prepared_data_dir,
                                                                           tmp_path):
  model_dir = str(tmp_path / "ae")
  result = run_main("train_ae", f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}",
                    *TINY, "--preview_images=4", "--upsampling=upsample")
  assert result.returncode == 0, result.stderr
  run = run_dir.paths(model_dir)
  for path in (run.config, run.flags, run.manifest, run.model, run.encoder, run.decoder,
               run.best, run.history):
    assert os.path.isfile(path), path
  assert os.path.isdir(os.path.join(run.tensorboard, "images"))
  rows = _history(model_dir)
  assert [row["epoch"] for row in rows] == ["0"]
  assert {"loss", "reconstruction_loss", "val_loss", "val_reconstruction_loss"} <= set(rows[0])

  config = json.load(open(run.config, encoding="utf-8"))
  assert config["model"]["image_size"] == 32 and config["model"]["upsampling"] == "upsample"
  assert config["model"]["decoder_filters"] == [16, 8]
  data_manifest = os.path.join(prepared_data_dir, "manifest.json")
  manifest = json.load(open(run.manifest, encoding="utf-8"))
  assert manifest["inputs"] == {data_manifest: provenance.sha256_file(data_manifest)}
  assert manifest["seed"] == 0 and "keras" in manifest["versions"]
  assert manifest["command_line"].startswith("python -m tools.train_ae ")
  flagfile = open(run.flags, encoding="utf-8").read().splitlines()
  assert "--preset=ae_z256" in flagfile and "--encoder_filters=8,16" in flagfile

  loaded = run_dir.load_run(model_dir)
  assert loaded.config.kind == "ae" and loaded.model.z_dim == 8

  # Same dir, another architecture: refused, and the first run is untouched.
  before = os.path.getmtime(run.model)
  refused = run_main("train_ae", f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}",
                     *TINY, "--z_dim=4")
  assert_clean_error(refused, "different config", "model.z_dim: 8 -> 4", "--overwrite", code=1)
  assert os.path.getmtime(run.model) == before
  assert open(run.flags, encoding="utf-8").read().splitlines() == flagfile


def test_train_vae_logs_the_kl_share(prepared_data_dir, tmp_path):
  model_dir = str(tmp_path / "vae")
  result = run_main("train_vae", f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}",
                    *TINY, "--max_images=40", "--kl_factor=2", "--backup_every_steps=2")
  assert result.returncode == 0, result.stderr
  row = _history(model_dir)[0]
  assert {"kl_loss", "kl_share", "val_kl_loss", "val_kl_share"} <= set(row)
  share = float(row["kl_share"])
  assert 0 < share < 1
  assert share == pytest.approx(2 * float(row["kl_loss"]) / float(row["loss"]), rel=1e-4)
  config = json.load(open(os.path.join(model_dir, "config.json"), encoding="utf-8"))
  assert config["model"]["kl_factor"] == 2.0 and config["data"]["max_images"] == 40
  assert json.load(open(os.path.join(model_dir, "manifest.json")))["training_images"] == 40


def test_image_size_must_match_the_data(prepared_data_dir, tmp_path):
  result = run_main("train_vae", f"--data_dir={prepared_data_dir}",
                    f"--model_dir={tmp_path / 'run'}", *TINY, "--image_size=64")
  assert_clean_error(result, "--image_size 64 does not match", "32x32", code=2)
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("tool,args,expected", [
    ("train_ae", ("--preset=vae_fact5",), "is a VAE preset; train it with python -m "
     "tools.train_vae"),
    ("train_vae", ("--preset=ae_z256",), "is an AE preset"),
    ("train_ae", ("--kl_factor=5",), "Unknown command line flag 'kl_factor'"),
    ("train_vae", ("--encoder_filters=8,16,32", "--encoder_kernels=3,3"),
     "encoder_kernels has 2 values but encoder_filters has 3"),
    ("train_vae", ("--image_size=100",), "image_size 100 is not divisible by the product of "
     "strides [2, 2, 2, 2] = 16"),
    ("train_ae", ("--strides=2,x",), "--strides must be a comma-separated list of positive "
     "integers"),
    ("train_vae", ("--dropout=1",), "--dropout must be in [0, 1)"),
    ("train_vae", ("--learning_rate=0",), "--learning_rate must be a positive number"),
    ("train_vae", ("--batch_size=0",), "--batch_size"),
    ("train_vae", ("--mixed_precision=fp8",), "--mixed_precision"),
    ("train_ae", ("--cpu_replicas=2",), "only used by --strategy=mirrored"),
])
def test_bad_flags_fail_fast_with_one_line(tool, args, expected, tmp_path):
  result = run_tool(tool, "--data_dir=unused", f"--model_dir={tmp_path / 'run'}", *args)
  assert_clean_error(result, expected, code=2)
  assert "tensorflow" not in result.stderr.lower()


def test_required_flags(tmp_path):
  result = run_tool("train_vae", f"--model_dir={tmp_path / 'run'}")
  assert_clean_error(result, "data_dir", code=2)
