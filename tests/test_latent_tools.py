"""tools.encode and tools.analyze_latents: the library in-process, the tools end to end.

Models are the tiny untrained runs of conftest (z_dim 8 on 32px images): the encode tests check
rows, order, ids and files, not what a trained encoder learned. The analysis is checked on
z-points with planted structure, where the right answer is known.
"""

import json
import os

import numpy as np
import pytest

from data_pipeline.errors import DataError
from evaluation import latent_analysis
from evaluation.errors import EvaluationError
from tests.damage import SHARD
from tests.damage import copy_data_dir
from tests.damage import flip_byte_of_record
from tests.tiny_runs import Z_DIM
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main


def _planted(n=4000, dim=12, seed=0):
  """z-points with r(0, 1) = 0.8, r(2, 3) = -0.6, component 5 centred at 3, component 7 wide."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, dim))
  z[:, 1] = 0.8 * z[:, 0] + 0.6 * z[:, 1]
  z[:, 3] = -0.6 * z[:, 2] + 0.8 * z[:, 3]
  z[:, 5] += 3.0
  z[:, 7] *= 2.5
  return z.astype(np.float32)


@pytest.fixture(scope="module")
def loaded(tiny_runs):
  from modeling import run_dir  # pylint: disable=g-import-not-at-top
  return {kind: run_dir.load_run(path) for kind, path in tiny_runs.items()}


def test_encode_split_writes_rows_in_split_order(loaded, prepared_data_dir, tmp_path):
  from data_pipeline import make_dataset  # pylint: disable=g-import-not-at-top
  from evaluation import encoding  # pylint: disable=g-import-not-at-top
  vae = loaded["vae"]
  out = str(tmp_path / "z" / "Z.npy")
  record = encoding.encode_split(vae, prepared_data_dir, "train", out, batch_size=5,
                                 with_log_var=True)
  z = np.load(out)
  ids = np.load(str(tmp_path / "z" / "Z.ids.npy"))
  log_var = np.load(str(tmp_path / "z" / "Z.log_var.npy"))
  assert z.shape == log_var.shape == (52, Z_DIM) and z.dtype == np.float32
  batches = list(make_dataset(prepared_data_dir, "train", 52, shuffle=False, with_ids=True))
  assert len(batches) == 1
  expected_mean, expected_log_var = vae.model.encode_with_log_var(batches[0]["image"])
  np.testing.assert_allclose(z, np.asarray(expected_mean), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(log_var, np.asarray(expected_log_var), rtol=1e-5, atol=1e-6)
  assert list(ids) == [i.decode() for i in batches[0]["id"].numpy()]
  assert record["num_vectors"] == 52 and record["model"]["kind"] == "vae"
  with open(tmp_path / "z" / "Z.json", encoding="utf-8") as f:
    written = json.load(f)
  assert written["data"]["split"] == "train"
  assert any(p.endswith("manifest.json") for p in written["provenance"]["inputs"])
  assert not [name for name in os.listdir(tmp_path / "z") if "partial" in name]

  first = encoding.encode_split(loaded["ae"], prepared_data_dir, "test", out, max_images=3)
  assert first["num_vectors"] == 3 and np.load(out).shape == (3, Z_DIM)


def test_encode_split_rejects_what_cannot_work(loaded, prepared_data_dir, prepared_data_dir_96,
                                                tmp_path):
  from evaluation import encoding  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "Z.npy")
  with pytest.raises(EvaluationError, match="--with_log_var needs a VAE"):
    encoding.encode_split(loaded["ae"], prepared_data_dir, "train", out, with_log_var=True)
  with pytest.raises(EvaluationError, match="takes 32px images"):
    encoding.encode_split(loaded["ae"], prepared_data_dir_96, "train", out)
  with pytest.raises(EvaluationError, match="must end in .npy"):
    encoding.encode_split(loaded["ae"], prepared_data_dir, "train", str(tmp_path / "Z.txt"))
  assert not os.listdir(tmp_path)  # Nothing half-written.
  manifest = {"splits": {"train": {"num_examples": 5}, "test": {"num_examples": 0}}}
  with pytest.raises(EvaluationError, match="has no 'test' images .*it has: train"):
    encoding.split_size("DATA", manifest, "test")

  damaged = copy_data_dir(prepared_data_dir, tmp_path / "damaged")
  flip_byte_of_record(damaged / SHARD, 2)
  out = tmp_path / "z" / "Z.npy"
  with pytest.raises(DataError, match=rf"shard {damaged / SHARD}: record 2: unreadable"):
    encoding.encode_split(loaded["ae"], str(damaged), "train", str(out))
  assert not out.parent.exists() or not os.listdir(out.parent)


def test_analysis_finds_the_planted_structure():
  z = _planted()
  report, figures = latent_analysis.analyze(z, latent_analysis.Options(num_random=2000))
  assert report["num_vectors"] == 4000 and report["dim"] == 12
  assert report["rows_used"] == {"mode": "all", "count": 4000}
  pairs = {(i, j): r for i, j, r in report["pairs"]}
  assert set(pairs) == {(0, 1), (2, 3)}  # |r| above the default 0.5.
  assert pairs[(0, 1)] == pytest.approx(0.8, abs=0.03)
  assert pairs[(2, 3)] == pytest.approx(-0.6, abs=0.03)
  r = np.corrcoef(z.astype(np.float64), rowvar=False)
  upper = np.abs(r[np.triu_indices(12, k=1)])
  assert report["counts"] == {f"{t:g}": int((upper > t).sum())
                              for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)}
  np.testing.assert_allclose(figures.correlation, r, atol=1e-6)
  dominant = {c["index"] for c in report["dominant"]["components"]}
  assert {5, 7} <= dominant  # |mean| 3 and a half-width of about 2.355 * 2.5.
  assert report["components"][5]["mean"] == pytest.approx(3.0, abs=0.1)
  assert report["slice"]["components"] == [0, 1]
  geometry = report["geometry"]
  assert geometry["data"]["inside_fraction"] == pytest.approx(0.99, abs=0.01)
  # Uniform vectors in [-4, 4] lie far outside a cloud of spread ~1; small ones inside.
  assert geometry["random"]["uniform_b=4"]["inside_fraction"] < 0.05
  assert geometry["random"]["uniform_b=0.5"]["inside_fraction"] > 0.95
  assert geometry["random"]["uniform_b=1"]["radius"]["mean"] == pytest.approx(
      geometry["random"]["uniform_b=1"]["expected_rms_radius"], rel=0.05)
  assert geometry["centre"]["centre_norm"] == pytest.approx(3.0, abs=0.15)
  assert report["total_correlation"]["gaussian"] == pytest.approx(
      -0.5 * np.linalg.slogdet(r)[1], rel=1e-6)
  assert "vae" not in report


def test_analysis_subset_is_seeded_and_vae_section_uses_log_var():
  z = _planted(n=3000)
  options = latent_analysis.Options(num_samples=500, seed=4, num_random=200)
  a, _ = latent_analysis.analyze(z, options)
  b, _ = latent_analysis.analyze(z, options)
  c, _ = latent_analysis.analyze(z, latent_analysis.Options(num_samples=500, seed=5,
                                                            num_random=200))
  assert a == b and a["rows_used"] == {"mode": "seeded subset", "count": 500}
  assert a["components"] != c["components"]
  log_var = np.full_like(z, -1.0)
  report, _ = latent_analysis.analyze(z, options, log_var=log_var, kind="vae")
  vae = report["vae"]
  assert vae["active_units"]["count"] == 12  # Every component varies (variance >= 0.36).
  kl = vae["kl_per_dimension"]["values"]
  expected = np.mean(0.5 * (z.astype(np.float64) ** 2 + np.exp(-1.0) - 1.0 + 1.0), axis=0)
  np.testing.assert_allclose(kl, expected, rtol=1e-9)
  with pytest.raises(EvaluationError, match="--data_point"):
    latent_analysis.analyze(z, latent_analysis.Options(data_point=3000))


@pytest.mark.slow
def test_encode_then_analyze_end_to_end(tiny_runs, prepared_data_dir, tmp_path):
  z_path = tmp_path / "vae" / "Z.npy"
  result = run_main("encode", "--model_dir", tiny_runs["vae"], "--data_dir", prepared_data_dir,
                    "--split", "train", "--output", z_path, "--with_log_var")
  assert result.returncode == 0, result.stderr
  assert np.load(z_path).shape == (52, Z_DIM)
  assert os.path.exists(tmp_path / "vae" / "Z.log_var.npy")

  out = tmp_path / "eval"
  args = ["--z_points", z_path, "--output_dir", out, "--num_random", "100", "--seed", "3"]
  result = run_main("analyze_latents", *args)
  assert result.returncode == 0, result.stderr
  first = (out / "latent_report.json").read_bytes()
  report = json.loads(first)
  assert report["kind"] == "vae"  # From Z.json; so the VAE section is there.
  assert report["vae"]["kl_per_dimension"]["values"]
  for key in ("num_vectors", "dim", "counts", "pairs", "components", "dominant"):
    assert key in report
  assert set(report["components"][0]) >= {"mean", "std", "half_width"}
  assert np.load(out / "correlation.npy").shape == (Z_DIM, Z_DIM)
  for name in report["plots"].values():
    assert (out / name).stat().st_size > 10_000, name
  assert str(z_path) in report["provenance"]["inputs"]
  assert "--seed=3" in (out / "flags.txt").read_text()
  assert run_main("analyze_latents", *args).returncode == 0
  assert (out / "latent_report.json").read_bytes() == first  # Same input and seed.

  # Encoding on the fly from a run dir (an AE: no log-variances, no vae section).
  out_ae = tmp_path / "eval_ae"
  result = run_main("analyze_latents", "--model_dir", tiny_runs["ae"], "--data_dir",
                    prepared_data_dir, "--split", "test", "--output_dir", out_ae,
                    "--num_random", "100")
  assert result.returncode == 0, result.stderr
  report = json.loads((out_ae / "latent_report.json").read_text())
  assert report["num_vectors"] == 6 and report["kind"] == "ae" and "vae" not in report


def test_bad_inputs_get_one_line_errors(tiny_runs, prepared_data_dir, tmp_path):
  rank1, nan = tmp_path / "rank1.npy", tmp_path / "nan.npy"
  np.save(rank1, np.zeros(10, np.float32))
  bad = _planted(n=20)
  bad[7, 2] = np.nan
  np.save(nan, bad)
  good = tmp_path / "good.npy"
  np.save(good, _planted(n=50))
  out = tmp_path / "out"
  cases = [
      (["--z_points", rank1, "--output_dir", out], 1, ["rank1.npy", "[N, z_dim]"]),
      (["--z_points", nan, "--output_dir", out], 1, ["NaN", "row 7"]),
      (["--z_points", tmp_path / "missing.npy", "--output_dir", out], 1, ["does not exist"]),
      (["--output_dir", out], 2, ["--z_points"]),
      (["--z_points", good, "--output_dir", out, "--thresholds", "0.1,x"], 2, ["--thresholds"]),
      (["--z_points", good, "--output_dir", out, "--slice_components", "1,12"], 2,
       ["--slice_components", "z_dim 12"]),
      (["--z_points", good, "--output_dir", out, "--log_var", rank1], 1, ["--log_var"]),
      (["--z_points", good, "--model_dir", tiny_runs["ae"], "--output_dir", out], 2,
       ["either --z_points"]),
  ]
  for args, code, expected in cases:
    assert_clean_error(run_main("analyze_latents", *args), *expected, code=code)
  assert not (out / "latent_report.json").exists()

  encode_cases = [
      (["--model_dir", tiny_runs["ae"], "--data_dir", prepared_data_dir, "--output",
        tmp_path / "Z.txt"], 2, ["--output"]),
      (["--model_dir", tmp_path / "no_run", "--data_dir", prepared_data_dir, "--output",
        tmp_path / "Z.npy"], 1, ["--model_dir"]),
      (["--model_dir", tiny_runs["ae"], "--data_dir", tmp_path / "no_data", "--output",
        tmp_path / "Z.npy"], 1, ["no_data"]),
  ]
  for args, code, expected in encode_cases:
    assert_clean_error(run_main("encode", *args), *expected, code=code)
  assert not (tmp_path / "Z.npy").exists()
