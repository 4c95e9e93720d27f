"""The latent benchmark on tiny sizes: the library in-process, the tool as a user runs it.

Only shapes, keys and correctness are checked here; the timings are claims of the benchmark's
JSON (docs/benchmarks/latents.json), never of a test.
"""

import json
import os

import numpy as np
import pytest

from benchmarks import latents
from evaluation import correlation
from evaluation import zpoints
from evaluation.errors import EvaluationError
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main
from tests.toolrun import run_tool

STAGES = {"load", "accumulate", "correlation", "counts", "full_correlation", "statistics",
          "correlation_and_statistics", "subset_gather", "subset_corrcoef"}


def test_synthetic_z_points_are_seeded_and_planted(tmp_path):
  first = latents.write_synthetic(tmp_path / "a.npy", 2000, 16, seed=0)
  assert first["bytes"] == os.path.getsize(tmp_path / "a.npy")
  assert first["planted_pairs"] == [list(p) for p in latents.PLANTED_PAIRS]
  z = zpoints.load_z_points(tmp_path / "a.npy")
  assert z.shape == (2000, 16) and z.dtype == np.float32
  latents.write_synthetic(tmp_path / "b.npy", 2000, 16, seed=0)
  latents.write_synthetic(tmp_path / "c.npy", 2000, 16, seed=1)
  assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
  assert not np.array_equal(z, np.load(tmp_path / "c.npy"))
  assert z[:, -1].mean() == pytest.approx(latents.LARGE_OFFSET, abs=0.5)
  # Fewer components: only the pairs that fit are planted.
  small = latents.write_synthetic(tmp_path / "d.npy", 10, 5, seed=0)
  assert small["planted_pairs"] == [[0, 1, 0.9], [2, 3, -0.7]]
  with pytest.raises(EvaluationError, match="at least 2 vectors of 2 components"):
    latents.write_synthetic(tmp_path / "e.npy", 10, 1, seed=0)
  assert not (tmp_path / "e.npy").exists()


def test_measure_in_process(tmp_path):
  path = tmp_path / "Z.npy"
  synthetic = latents.write_synthetic(path, 2000, 16, seed=0)
  result = latents.measure(str(path), chunk_rows=300, subset_rows=500, seed=0,
                                    pairs=synthetic["planted_pairs"])
  assert {"num_vectors", "dim", "dtype", "chunk_rows", "seconds", "start_rss_mb",
          "peak_rss_mb_after_correlation", "peak_rss_mb", "ru_maxrss_mb", "counts",
          "constant_components", "dominant_components", "subset", "planted",
          "blas"} <= set(result)
  assert (result["num_vectors"], result["dim"], result["dtype"]) == (2000, 16, "float32")
  seconds = result["seconds"]
  assert set(seconds) == STAGES and all(v >= 0 for v in seconds.values())
  assert seconds["full_correlation"] == pytest.approx(
      seconds["load"] + seconds["accumulate"] + seconds["correlation"] + seconds["counts"])
  assert seconds["correlation_and_statistics"] == pytest.approx(
      seconds["full_correlation"] + seconds["statistics"])
  assert 0 < result["start_rss_mb"] <= result["peak_rss_mb_after_correlation"]
  assert result["peak_rss_mb_after_correlation"] <= result["peak_rss_mb"]
  assert list(result["counts"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]
  # The counts are those of numpy on the whole file.
  r = np.corrcoef(np.load(path).astype(np.float64), rowvar=False)
  assert result["counts"] == correlation.counts_above(r, correlation.DEFAULT_THRESHOLDS)
  assert result["constant_components"] == 0
  assert result["subset"]["rows"] == 500 and result["subset"]["max_abs_difference"] > 0
  assert len(result["planted"]) == 6
  for p in result["planted"]:
    i, j = p["pair"]
    assert p["r"] == pytest.approx(r[i, j], abs=1e-6)
    assert p["r"] == pytest.approx(p["planted_r"], abs=0.06)  # Sampling error at N = 2000.
  json.dumps(result, allow_nan=False)  # JSON-safe, as the child writes it.
  # A subset as large as the file: the study's corrcoef sees every row, the same matrix.
  whole = latents.measure(str(path), chunk_rows=300, subset_rows=5000, seed=0)
  assert whole["subset"]["rows"] == 2000
  assert whole["subset"]["max_abs_difference"] < 1e-9
  assert whole["planted"] == []


def test_targets_and_table_of_a_crafted_result():
  result = {"num_vectors": 170000, "dim": 256, "peak_rss_mb": 1200.0,
            "seconds": {"full_correlation": 29.0, "correlation_and_statistics": 31.0}}
  targets = latents.evaluate_targets(result)
  assert [(t["name"], t["passed"]) for t in targets] == [
      ("full_correlation_seconds", True), ("correlation_and_statistics_seconds", False),
      ("peak_rss_mb", False)]
  assert [t["threshold"] for t in targets] == [30.0, 30.0, 1000.0]


@pytest.mark.slow
def test_tool_end_to_end(tmp_path):
  out = tmp_path / "out" / "latents.json"
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  result = run_tool("benchmark_latents", f"--output_json={out}", "--num_vectors=2000",
                    "--dim=16", "--chunk_rows=300", "--seed=3", timeout=300,
                    env={"TMPDIR": str(scratch)})
  assert result.returncode == 0, result.stderr
  report = json.loads(out.read_text())
  assert {"machine", "inputs", "synthetic", "seconds", "peak_rss_mb", "results", "targets",
          "table", "elapsed_seconds", "provenance"} <= set(report)
  assert report["benchmark"] == "latents"
  assert report["machine"]["logical_cores"] >= 1
  inputs = report["inputs"]
  assert (inputs["num_vectors"], inputs["dim"], inputs["seed"], inputs["chunk_rows"]) == (
      2000, 16, 3, 300)
  assert inputs["work_dir"] is None and report["synthetic"]["path"] is None
  assert set(report["seconds"]) == STAGES
  assert report["peak_rss_mb"] == report["results"]["peak_rss_mb"] > 0
  assert [t["name"] for t in report["targets"]] == [
      "full_correlation_seconds", "correlation_and_statistics_seconds", "peak_rss_mb"]
  assert all(t["passed"] is True for t in report["targets"])  # Tiny sizes pass easily.
  assert "| **full correlation** |" in report["table"]
  assert report["table"] in result.stdout
  assert (out.parent / "latents.flags.txt").exists()
  assert os.listdir(scratch) == []  # The default work dir (and its Z.npy) is removed.


@pytest.mark.slow
def test_tool_keeps_a_given_work_dir(tmp_path):
  work = tmp_path / "work"
  result = run_main("benchmark_latents", f"--output_json={tmp_path / 'b.json'}",
                    "--num_vectors=500", "--dim=4", f"--work_dir={work}", "--nocold_cache")
  assert result.returncode == 0, result.stderr
  report = json.loads((tmp_path / "b.json").read_text())
  assert report["inputs"]["work_dir"] == str(work)
  assert report["inputs"]["page_cache"] == "warm"
  assert sorted(os.listdir(work)) == ["Z.npy", "measure.log"]
  assert report["synthetic"]["path"] == str(work / "Z.npy")


@pytest.mark.slow
def test_tool_flag_errors(tmp_path):
  assert_clean_error(run_main("benchmark_latents", f"--output_json={tmp_path / 'x.json'}",
                              "--dim=0"), "--dim", code=2)
  assert_clean_error(run_main("benchmark_latents", "--num_vectors=10"), "output_json", code=2)
  assert_clean_error(run_main("benchmark_latents", f"--output_json={tmp_path}"),
                     "is a directory", code=2)
  assert not os.listdir(tmp_path)
