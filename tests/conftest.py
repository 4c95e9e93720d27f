"""Shared pytest fixtures: small synthetic CelebA folders and prepared data dirs.

Session-scoped, built once on first use, and READ-ONLY for tests: a test that damages or
extends one copies it first (`shutil.copytree(prepared_data_dir, tmp_path / "d")`).
`synthetic_celeba_dir` (64 faces, seed 0, CelebA's layout), `prepared_data_dir` (those at
image_size 32, raw; train 52 images in 4 shards, validation 6, test 6), `prepared_data_dir_96`
(the same at 96x96), `tiny_runs` (untrained AE and VAE run dirs, tests/tiny_runs.py) and
`celeba_real_dir` (`$CELEBA_REAL_DIR`: skips when unset, fails when set and missing). Every
fixture imports TensorFlow lazily, so tests that do not use them stay fast to collect.
"""

import os
import sys

import pytest

from modeling import tf_env

SYNTHETIC_IMAGES = 64
SYNTHETIC_SEED = 0


def pytest_configure(config):
  """The tools run with oneDNN's CPU kernels (tools/_cli.run); so do the tests that call the
  libraries in this process, so that numbers compared with a tool's agree. Before any test
  module imports TensorFlow, which reads the setting once."""
  del config  # Unused.
  tf_env.enable_onednn()


@pytest.fixture(autouse=True)
def float32_policy():
  """Every test starts and ends with Keras' float32 policy: a test that trains in bf16 or fp16
  (the global dtype policy) must not change the numbers of the tests after it."""
  yield
  if "keras" in sys.modules:
    sys.modules["keras"].mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def synthetic_celeba_dir(tmp_path_factory):
  """A 64-image synthetic CelebA folder (seed 0); do not modify it."""
  from data_pipeline.synthetic import write_synthetic_celeba  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("synthetic_celeba")
  write_synthetic_celeba(str(path), SYNTHETIC_IMAGES, seed=SYNTHETIC_SEED)
  return str(path)


def _prepare(source_dir, output_dir, **kwargs):
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  from data_pipeline import writer  # pylint: disable=g-import-not-at-top
  source = sources.CelebAFolderSource(source_dir)
  writer.prepare(source, str(output_dir), num_workers=1, progress=False, **kwargs)
  return str(output_dir)


@pytest.fixture(scope="session")
def prepared_data_dir(synthetic_celeba_dir, tmp_path_factory):
  """`synthetic_celeba_dir` prepared at 32x32 raw; train in 4 shards. Do not modify it."""
  return _prepare(synthetic_celeba_dir, tmp_path_factory.mktemp("prepared32"), image_size=32,
                  encoding="raw", shard_mb=0.05)


@pytest.fixture(scope="session")
def prepared_data_dir_96(synthetic_celeba_dir, tmp_path_factory):
  """`synthetic_celeba_dir` prepared at 96x96 raw (the study's size). Do not modify it."""
  return _prepare(synthetic_celeba_dir, tmp_path_factory.mktemp("prepared96"), image_size=96,
                  encoding="raw", shard_mb=0.5)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
  """{"ae": run dir, "vae": run dir} of tiny untrained models. Do not modify them."""
  import keras  # pylint: disable=g-import-not-at-top
  from tests.tiny_runs import save_run  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  root = tmp_path_factory.mktemp("runs")
  return {kind: save_run(root / f"tiny_{kind}", kind) for kind in ("ae", "vae")}


@pytest.fixture(scope="session")
def celeba_real_dir():
  """The real CelebA folder named by $CELEBA_REAL_DIR (never copied into the repository)."""
  path = os.environ.get("CELEBA_REAL_DIR")
  if not path:
    pytest.skip("CELEBA_REAL_DIR is unset: this test needs real CelebA photos (CI sets it to "
                "../shared/celeba_real; set it to a CelebA folder to run it)")
  if not os.path.isfile(os.path.join(path, "list_eval_partition.txt")):
    pytest.fail(f"CELEBA_REAL_DIR={path} is set but holds no list_eval_partition.txt; fix the "
                "path or unset the variable")
  return os.path.abspath(path)
