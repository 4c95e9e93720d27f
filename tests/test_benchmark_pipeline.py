"""The pipeline benchmark: its pure functions on hand-made results, and the tool end to end.

The unit tests load no TensorFlow. The end-to-end test runs the real tool on tiny sizes and
checks the report's shape only: numbers from a few batches of 32x32 images say nothing about
performance (that is the benchmark's own job, in its JSON).
"""

import json
import os

import pytest

from benchmarks import pipeline as bench
from benchmarks import pipeline_methods
from benchmarks import training as fit_bench
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main
from tests.toolrun import run_tool

SMALL, LARGE = 100, 300
IMAGE_SIZE = 10  # One float32 image: 10 * 10 * 3 * 4 bytes = 0.0012 MB.


def _result(method, size, images_per_s, peak_rss_mb):
  return {"method": method, "size": size, "images_per_s": images_per_s,
          "peak_rss_mb": peak_rss_mb}


def _results(**overrides):
  """Every method at both sizes; `overrides` maps "method@size" to (images/s, peak RSS MB)."""
  results = []
  for size in (SMALL, LARGE):
    for method in pipeline_methods.METHODS:
      rate, rss = overrides.get(f"{method}@{size}", (1000.0, 500.0))
      results.append(_result(method, size, rate, rss))
  return results


def _targets_by_name(results, training=None, sizes=(SMALL, LARGE)):
  growth = bench.memory_growth(results, sizes)
  targets = bench.evaluate_targets(results, growth, training, sizes, IMAGE_SIZE)
  return {t["name"]: t for t in targets}


def test_memory_growth():
  results = [_result("classic_flow", SMALL, 1.0, 400.0), _result("classic_flow", LARGE, 1.0, 800.0),
             _result("stream_raw", SMALL, 1.0, 500.0), _result("stream_raw", LARGE, 1.0, 510.0),
             _result("stream_png", SMALL, 1.0, 500.0)]  # No large size: no growth.
  growth = bench.memory_growth(results, (LARGE, SMALL))
  assert set(growth) == {"classic_flow", "stream_raw"}
  assert growth["classic_flow"] == {"small": SMALL, "large": LARGE, "mb_per_image": 2.0,
                                    "fraction": 1.0}
  assert growth["stream_raw"]["mb_per_image"] == pytest.approx(0.05)
  assert growth["stream_raw"]["fraction"] == pytest.approx(0.02)
  assert bench.memory_growth(results, (SMALL,)) == {}
  assert bench.memory_growth(results, (SMALL, SMALL)) == {}


def test_targets_pass_and_fail():
  float_mb = IMAGE_SIZE * IMAGE_SIZE * 3 * 4 / 1e6
  results = _results(**{
      # raw vs classic: 0.95 passes at the small size, 0.5 fails at the large one.
      "stream_raw@100": (950.0, 500.0), "stream_raw@300": (500.0, 520.0),
      # jpeg vs ceiling: exactly the threshold passes, just below fails.
      "stream_jpeg@100": (850.0, 500.0), "stream_jpeg@300": (849.0, 500.0),
      # The classic array grows by one float32 image per image.
      "classic_flow@300": (1000.0, 500.0 + float_mb * (LARGE - SMALL)),
      # stream_png: too much memory at the large size.
      "stream_png@300": (1000.0, 1600.0),
      # raw vs the peers (stream_raw 950 / 500): 950/900 and exactly 500/500 pass the 1.0
      # target, 950/951 fails it, 500/100 passes.
      "keras_folder@100": (900.0, 500.0), "keras_folder@300": (500.0, 500.0),
      "tfds_jpeg@100": (951.0, 500.0), "tfds_jpeg@300": (100.0, 500.0),
  })
  training = {"preset": "vae_fact5", "ratio": 0.97}
  t = _targets_by_name(results, training)
  assert t["raw_vs_classic@100"]["value"] == pytest.approx(0.95)
  assert t["raw_vs_classic@100"]["passed"] is True
  assert t["raw_vs_classic@300"]["passed"] is False
  assert t["jpeg_vs_ceiling@100"]["passed"] is True
  assert t["jpeg_vs_ceiling@300"]["passed"] is False
  assert t["peak_rss_mb:stream_raw"] == {
      "name": "peak_rss_mb:stream_raw", "description": "largest peak RSS of stream_raw (MB)",
      "value": 520.0, "threshold": bench.STREAM_PEAK_RSS_MB, "passed": True}
  assert t["rss_growth:stream_raw"]["value"] == pytest.approx(0.04)
  assert t["rss_growth:stream_raw"]["passed"] is True
  assert t["peak_rss_mb:stream_png"]["passed"] is False
  assert t["rss_growth:stream_png"]["passed"] is False
  assert t["classic_growth_mb_per_image"]["threshold"] == pytest.approx(float_mb)
  assert t["classic_growth_mb_per_image"]["passed"] is True
  assert t["train_stream_vs_constant"]["passed"] is True
  assert t["raw_vs_keras_folder@100"]["value"] == pytest.approx(950 / 900)
  assert t["raw_vs_keras_folder@100"]["passed"] is True
  assert t["raw_vs_keras_folder@300"]["passed"] is True
  assert t["raw_vs_tfds_jpeg@100"]["passed"] is False
  assert t["raw_vs_tfds_jpeg@300"]["value"] == pytest.approx(5.0)
  assert t["raw_vs_tfds_jpeg@300"]["passed"] is True
  assert t["raw_vs_tfds_jpeg@300"]["threshold"] == bench.STREAM_VS_PEER == 1.0
  # The classic recipe's growth must be about one float32 image: 2x is out of tolerance.
  doubled = _results(**{"classic_flow@300": (1000.0, 500.0 + 2 * float_mb * (LARGE - SMALL))})
  assert _targets_by_name(doubled)["classic_growth_mb_per_image"]["passed"] is False
  assert _targets_by_name(results, {"preset": "ae_z256", "ratio": 0.5})[
      "train_stream_vs_constant"]["passed"] is False


def test_targets_not_measured():
  # Only stream_raw, at one size, one rate unknown, training without a ratio.
  results = [_result("stream_raw", SMALL, None, 500.0)]
  t = _targets_by_name(results, {"preset": "vae_fact5", "ratio": None}, sizes=(SMALL,))
  for name in ("raw_vs_classic@100", "jpeg_vs_ceiling@100", "raw_vs_keras_folder@100",
               "raw_vs_tfds_jpeg@100", "train_stream_vs_constant"):
    assert t[name]["value"] is None and t[name]["passed"] is None, name
  assert t["peak_rss_mb:stream_raw"]["passed"] is True
  # One size: no growth targets; methods not run: no memory targets; no training: no target.
  assert not [n for n in t if n.startswith("rss_growth") or n.startswith("classic_growth")]
  assert "peak_rss_mb:stream_png" not in t
  assert "train_stream_vs_constant" not in _targets_by_name(results, None, sizes=(SMALL,))
  # A zero rate is not a ratio either.
  zero = [_result("stream_raw", SMALL, 1.0, 1.0), _result("classic_flow", SMALL, 0.0, 1.0)]
  assert _targets_by_name(zero, sizes=(SMALL,))["raw_vs_classic@100"]["passed"] is None


def test_peer_ratios():
  results = [_result("stream_raw", SMALL, 2000.0, 1.0), _result("stream_jpeg", SMALL, 500.0, 1.0),
             _result("keras_folder", SMALL, 1000.0, 1.0), _result("tfds_jpeg", SMALL, 0.0, 1.0),
             _result("stream_raw", LARGE, 3000.0, 1.0)]  # No peer at the large size.
  ratios = {(r["stream"], r["peer"], r["size"]): r["ratio"]
            for r in bench.peer_ratios(results, (SMALL, LARGE))}
  assert ratios == {("stream_raw", "keras_folder", SMALL): 2.0,
                    ("stream_raw", "tfds_jpeg", SMALL): None,  # A zero rate is no ratio.
                    ("stream_jpeg", "keras_folder", SMALL): 0.5,
                    ("stream_jpeg", "tfds_jpeg", SMALL): None}


def _fit_row(preset, ratio, **overrides):
  row = {"preset": preset, "images": 1024, "batch_size": 128, "fit_images_per_s": 95.0,
         "bare_images_per_s": 100.0, "ratio": ratio, "ratio_with_validation": 0.9,
         "steps_ratio": 0.99, "steady_step_seconds": 0.95,
         "first_batch_seconds_per_epoch": [4.12, 0.94, 0.9, 1.04], "epoch_start_vs_step": 1.1,
         "per_epoch_seconds": 0.4, "peak_rss_mb": 2100.0, "ratio_per_epoch": [0.96, 0.94, 0.95]}
  row.update(overrides)
  return row


def _epoch(first_batch, steady_step=0.95, steps=10, end=0.2, validation=1.0):
  """One epoch's seconds for fit_bench.ratios.

  Its start and first batch take `first_batch` s, then `steps` - 1 steady steps, `end` s of
  callbacks and `validation` s.
  """
  steps_seconds = first_batch + (steps - 1) * steady_step
  return {"epoch": steps_seconds + end + validation, "validation": validation,
          "first_batch": first_batch, "steps": steps_seconds}


def test_fit_ratios():
  # 10 batches of 100 images at a steady 0.95 s; each epoch's start adds 0.3 s to its first
  # batch, its end 0.2 s of callbacks; then 1 s of validation. Epoch 1 (tracing) is slow and
  # counts in no rate.
  epochs = [_epoch(30.0, steady_step=3.0), _epoch(1.25), _epoch(1.25), _epoch(1.25)]
  r = fit_bench.ratios(1000, 10, epochs, 100.0)
  assert r["fit_images_per_s"] == pytest.approx(100.0)
  assert r["ratio"] == pytest.approx(1.0)
  assert r["ratio_with_validation"] == pytest.approx(1000 / 11 / 100)
  assert r["steps_ratio"] == pytest.approx(100 / 0.95 / 100)
  assert r["steady_step_seconds"] == pytest.approx(0.95)
  assert r["per_epoch_seconds"] == pytest.approx(0.5)
  assert r["first_batch_seconds_per_epoch"] == [30.0, 1.25, 1.25, 1.25]
  assert r["epoch_start_vs_step"] == pytest.approx(1.25 / 0.95)
  # The timed epochs' totals: one with slower steps weighs by its seconds.
  slow = fit_bench.ratios(1000, 10, epochs[:3] + [_epoch(1.25, steady_step=1.95)], 100.0)
  assert slow["fit_images_per_s"] == pytest.approx(3000 / 39.0)
  assert slow["steady_step_seconds"] == pytest.approx((0.95 + 0.95 + 1.95) / 3)
  # Bare steps 10 % faster: below the 0.95 target.
  assert fit_bench.ratios(1000, 10, epochs, 110.0)["ratio"] == pytest.approx(100 / 110)
  unknown = fit_bench.ratios(1000, 10, epochs, None)
  assert unknown["ratio"] is None and unknown["steps_ratio"] is None
  assert unknown["epoch_start_vs_step"] == pytest.approx(1.25 / 0.95)  # Needs no bare rate.
  # One batch per epoch has no steady step to project from or to compare a first batch with.
  one = fit_bench.ratios(100, 1, [_epoch(1.25, steps=1, end=0.25, validation=0.5)] * 3, 100.0)
  assert one["ratio"] == pytest.approx(100 / 1.5 / 100)
  assert one["steps_ratio"] is None and one["per_epoch_seconds"] is None
  assert one["steady_step_seconds"] is None and one["epoch_start_vs_step"] is None
  assert one["first_batch_seconds_per_epoch"] == [1.25] * 3
  # Epoch 1 alone: nothing timed.
  alone = fit_bench.ratios(1000, 10, epochs[:1], 100.0)
  assert alone["ratio"] is None and alone["epoch_start_vs_step"] is None
  assert alone["first_batch_seconds_per_epoch"] == [30.0]


def test_bare_reference_takes_the_blocks_around_each_timed_epoch():
  # Blocks of 200 images after epochs 1-4; the machine slows down as it goes.
  rate, per_epoch = fit_bench.bare_reference([1.0, 2.0, 2.0, 4.0], 200)
  assert per_epoch == pytest.approx([400 / 3, 100.0, 400 / 6])  # Epochs 2, 3 and 4.
  # Together: the blocks next to two timed epochs count twice.
  assert rate == pytest.approx(3 * 400 / (3 + 4 + 6))
  # A drift that a reference measured only before and after the fit would misjudge: epochs
  # 2-4 as fast as their neighbouring blocks give ratio 1 for each of them.
  epochs = [_epoch(30.0, steady_step=3.0)] + [
      {"epoch": 200 / r, "validation": 0.0, "first_batch": 1.0, "steps": 200 / r}
      for r in per_epoch]
  r = fit_bench.ratios(200, 2, epochs, rate, per_epoch)
  assert r["ratio"] == pytest.approx(1.0)
  assert r["ratio_per_epoch"] == pytest.approx([1.0, 1.0, 1.0])
  assert fit_bench.ratios(200, 2, epochs, rate)["ratio_per_epoch"] == []  # No blocks given.
  assert fit_bench.bare_reference([1.0], 200) == (None, [])  # Epoch 1 alone: no timed epoch.
  assert fit_bench.bare_reference([], 200) == (None, [])


def test_epoch_start_stall():
  # TensorFlow 2.21's stall with autotuning on: 15 s more before epoch 2's first step (1 s).
  stalled = [_epoch(9.0, 1.0), _epoch(16.0, 1.0), _epoch(1.25, 1.0), _epoch(1.0, 1.0)]
  r = fit_bench.ratios(1000, 10, stalled, 100.0)
  assert r["epoch_start_vs_step"] == pytest.approx(16.0)
  # A later epoch's stall counts as much as epoch 2's; epoch 1's tracing not at all.
  late = fit_bench.ratios(1000, 10, [_epoch(30.0, 1.0), _epoch(1.25, 1.0), _epoch(1.0, 1.0),
                                     _epoch(15.5, 1.0)], 100.0)
  assert late["epoch_start_vs_step"] == pytest.approx(15.5)
  clean = fit_bench.ratios(1000, 10, [_epoch(30.0, 1.0), _epoch(1.25, 1.0), _epoch(2.0, 1.0),
                                      _epoch(1.5, 1.0)], 100.0)
  assert clean["epoch_start_vs_step"] == pytest.approx(2.0)  # Exactly the threshold.
  rows = [_fit_row("ae_z256", 1.0, epoch_start_vs_step=r["epoch_start_vs_step"]),
          _fit_row("ae_z1600", 1.0, epoch_start_vs_step=late["epoch_start_vs_step"]),
          _fit_row("vae_fact5", 1.0, epoch_start_vs_step=clean["epoch_start_vs_step"]),
          _fit_row("other", 1.0, epoch_start_vs_step=2.01)]
  targets = {t["name"]: t for t in fit_bench.evaluate_targets(rows)}
  assert targets["epoch_start:ae_z256"]["passed"] is False
  assert targets["epoch_start:ae_z1600"]["passed"] is False
  assert targets["epoch_start:vae_fact5"]["passed"] is True  # At most the threshold passes.
  assert targets["epoch_start:other"]["passed"] is False
  assert targets["epoch_start:ae_z256"]["value"] == pytest.approx(16.0)
  assert all(targets[f"epoch_start:{p}"]["threshold"] == fit_bench.EPOCH_START_VS_STEP == 2.0
             for p in ("ae_z256", "ae_z1600", "vae_fact5", "other"))
  assert "at most 2" in targets["epoch_start:vae_fact5"]["description"]
  # Unknown (one batch per epoch, or a row without the field): not measured.
  for row in (_fit_row("ae_z256", 1.0, epoch_start_vs_step=None),
              {"preset": "ae_z256", "ratio": 1.0}):
    [_, target] = fit_bench.evaluate_targets([row])
    assert target["name"] == "epoch_start:ae_z256"
    assert target["value"] is None and target["passed"] is None


def test_epoch_images():
  # The preset's default, capped at the data's training images, in whole batches.
  assert fit_bench.epoch_images("ae_z256", None, 100000, 128) == fit_bench.PRESET_IMAGES["ae_z256"]
  assert fit_bench.epoch_images("vae_fact5", None, 500, 128) == 384  # Default 2,560, capped.
  assert fit_bench.epoch_images("some_preset", None, 100000, 100) == 1000  # 1,024 in batches.
  assert fit_bench.epoch_images("vae_fact5", 300, 3420, 128) == 256  # As asked, whole batches.
  assert fit_bench.epoch_images("vae_fact5", None, 100, 128) == 0


def test_fit_targets_and_table():
  rows = [_fit_row("ae_z256", 0.95), _fit_row("ae_z1600", 0.949, epoch_start_vs_step=15.8),
          _fit_row("vae_fact5", None, fit_images_per_s=None, steady_step_seconds=None,
                   first_batch_seconds_per_epoch=[], epoch_start_vs_step=None,
                   ratio_per_epoch=[])]
  targets = {t["name"]: t for t in fit_bench.evaluate_targets(rows)}
  assert set(targets) == {f"{name}:{preset}" for name in ("fit_vs_steps", "epoch_start")
                          for preset in ("ae_z256", "ae_z1600", "vae_fact5")}
  assert targets["fit_vs_steps:ae_z256"]["passed"] is True  # Exactly the threshold.
  assert targets["fit_vs_steps:ae_z1600"]["passed"] is False
  assert targets["fit_vs_steps:vae_fact5"]["passed"] is None
  assert all(t["threshold"] == fit_bench.FIT_VS_STEPS == 0.95 for name, t in targets.items()
             if name.startswith("fit_vs_steps:"))
  assert targets["epoch_start:ae_z256"]["passed"] is True
  assert targets["epoch_start:ae_z1600"]["passed"] is False
  assert targets["epoch_start:vae_fact5"]["passed"] is None
  lines = fit_bench.markdown_lines(rows)
  table = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
  assert table["preset"].endswith("| steady step s | first batch s, epochs 1-4 | per-epoch s | "
                                  "peak RSS MB |")
  assert table["ae_z256"] == ("| ae_z256 | 1,024 | 95.0 | 100.0 | 0.950 | pass | 0.960 / 0.940 / "
                              "0.950 | 0.900 | 0.990 | 0.95 | 4.1 / 0.9 / 0.9 / 1.0 | 0.40 | "
                              "2,100 |")
  assert "| 0.949 | FAIL |" in table["ae_z1600"]
  assert table["vae_fact5"].startswith("| vae_fact5 | 1,024 | n/a | 100.0 | n/a | not measured | "
                                       "n/a |")
  assert "| n/a | n/a | 0.40 |" in table["vae_fact5"]
  assert all(line.count("|") == 14 for line in lines if line.startswith("|"))
  assert "(batch 128, validation time excluded)" in lines[1]
  assert "epochs 2 to 4 of 4" in lines[1]
  assert fit_bench.markdown_lines([]) == []


def test_markdown_lists_every_method_and_target():
  # raw vs classic: 950/1000 = 0.95 passes the 0.9 target at the small size; 500/1000 fails it
  # at the large one, where stream_raw's row then reads 500 instead of 1,000.
  results = _results(**{"stream_raw@100": (950.0, 500.0), "stream_raw@300": (500.0, 500.0)})
  growth = bench.memory_growth(results, (SMALL, LARGE))
  training = {"preset": "vae_fact5", "steps": 20, "batch_size": 128, "warmup_steps": 3,
              "stream_images_per_s": 400.0, "constant_images_per_s": 410.0, "ratio": 400 / 410}
  fit_rows = [_fit_row("ae_z256", 0.97), _fit_row("vae_fact5", 0.5)]
  report = {
      "peer_ratios": bench.peer_ratios(results, (SMALL, LARGE)), "fit_throughput": fit_rows,
      "machine": {"cpu_model": "Test CPU", "logical_cores": 2, "ram_gb": 8.0,
                  "tensorflow": "2.x", "keras": "3.x", "date": "2024-01-01T00:00:00+00:00"},
      "inputs": {"sizes": [SMALL, LARGE], "data_dir": "/data/d", "image_size": IMAGE_SIZE,
                 "num_batches": 50, "batch_size": 128, "warmup_batches": 5},
      "results": results, "memory_growth": growth, "training": training,
      "targets": (bench.evaluate_targets(results, growth, training, (SMALL, LARGE), IMAGE_SIZE)
                  + fit_bench.evaluate_targets(fit_rows)),
      "preparation": {"images": 2000, "runs": [
          {"encoding": "jpeg", "workers": 2, "images_per_s": 123.0},
          {"encoding": "jpeg", "workers": 1, "images_per_s": 61.0}]},
  }
  text = bench.markdown(report)
  rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
          if line.startswith("| ")}
  for method in pipeline_methods.METHODS:
    assert method in rows, method
    if method != "stream_raw":
      assert rows[method].count("1,000") == 2  # images/s at both sizes.
  assert rows["stream_raw"].startswith("| stream_raw | 950 | 500 | 500 | 500 |")
  for target in report["targets"]:
    assert target["name"] in rows, target["name"]
  # Each verdict as the table states it, from inputs on either side of the threshold.
  assert rows["raw_vs_classic@100"] == "| raw_vs_classic@100 | 0.950 | 0.9 | pass |"
  assert rows["raw_vs_classic@300"] == "| raw_vs_classic@300 | 0.500 | 0.9 | FAIL |"
  assert rows["train_stream_vs_constant"].endswith("| 0.95 | pass |")
  assert "images/s @100" in text and "peak RSS MB @300" in text and "RSS growth %" in text
  assert "Test CPU" in text and "| jpeg | 2 | 123 |" in text and "ratio 0.976" in text
  # Streaming over each peer: stream_raw 950 and 500 over the peers' 1,000.
  assert rows["stream_raw / keras_folder"] == "| stream_raw / keras_folder | 0.95 | 0.50 |"
  assert rows["stream_jpeg / tfds_jpeg"] == "| stream_jpeg / tfds_jpeg | 1.00 | 1.00 |"
  assert rows["raw_vs_keras_folder@100"] == "| raw_vs_keras_folder@100 | 0.950 | 1 | FAIL |"
  assert rows["fit_vs_steps:ae_z256"] == "| fit_vs_steps:ae_z256 | 0.970 | 0.95 | pass |"
  assert rows["fit_vs_steps:vae_fact5"] == "| fit_vs_steps:vae_fact5 | 0.500 | 0.95 | FAIL |"
  assert rows["epoch_start:ae_z256"] == "| epoch_start:ae_z256 | 1.100 | 2 | pass |"
  assert "| 4.1 / 0.9 / 0.9 / 1.0 |" in rows["vae_fact5"]
  assert "| 0.970 | pass |" in rows["ae_z256"] and "| 0.500 | FAIL |" in rows["vae_fact5"]
  # A method missing at one size reads n/a, and without preparation or training no such block.
  report.update(results=[r for r in results if (r["method"], r["size"]) != ("stream_png", LARGE)],
                preparation=None, training=None, fit_throughput=[], peer_ratios=[])
  text = bench.markdown(report)
  assert "n/a" in next(line for line in text.splitlines() if line.startswith("| stream_png"))
  assert "Preparation" not in text and "Training" not in text and "Streaming over" not in text
  # A target without a measurement is neither passed nor failed.
  report["targets"] = bench.evaluate_targets(results, growth, {"preset": "vae_fact5",
                                                               "ratio": None},
                                             (SMALL, LARGE), IMAGE_SIZE)
  assert ("| train_stream_vs_constant | n/a | 0.95 | not measured |"
          in bench.markdown(report).splitlines())


def test_needed_encodings():
  def options(methods, train_steps=0, train_presets=()):
    return bench.Options(data_dir="d", work_dir="w", methods=methods, train_steps=train_steps,
                         train_presets=train_presets)
  assert bench.needed_encodings(options(pipeline_methods.METHODS, 20)) == ["raw", "png", "jpeg"]
  assert bench.needed_encodings(options(("jpeg_ceiling",))) == ["jpeg"]
  assert bench.needed_encodings(options(("jpeg_ceiling",), 5)) == ["raw", "jpeg"]
  assert bench.needed_encodings(options(("jpeg_ceiling",), 0, ("ae_z256",))) == ["raw", "jpeg"]
  assert bench.needed_encodings(options(("stream_png", "classic_tfdata"))) == ["raw", "png"]
  assert bench.needed_encodings(options(("stream_png",))) == ["png"]
  assert bench.needed_encodings(options(pipeline_methods.PEERS)) == []  # They read the source.


def test_peer_inputs_same_images_in_order(synthetic_celeba_dir, tmp_path):
  """The peers' folders and records hold the data dir's first training JPEGs, byte for byte.

  A zip download gets the same records and folders (of copies); a rerun reuses them.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  source = sources.CelebAFolderSource(synthetic_celeba_dir)
  names = [r.file_name for r in source.iter_split("train")][:20]
  images = source.layout.images.path
  zipped = shutil.make_archive(str(tmp_path / "celeba"), "zip", synthetic_celeba_dir)
  for source_dir in (synthetic_celeba_dir, zipped):
    spec = {"source_dir": source_dir, "root": str(tmp_path / f"peers-{len(source_dir)}"),
            "sizes": [8, 20], "name": "celeba_stream", "shard_mb": 0.05,
            "crop": [0, 40, 178, 218], "fingerprint": "f"}
    index = pipeline_methods.peer_inputs(spec)
    assert not index["reused"] and index["images"] == 20 and len(index["shards"]) > 1
    assert index["source_size"] == [178, 218] and index["crop_box"] == [0, 40, 178, 218]
    assert index["linked"] is (source_dir == synthetic_celeba_dir)
    records = tf.data.TFRecordDataset([s["path"] for s in index["shards"]])
    stored = [tf.io.parse_single_example(r, {"image": tf.io.FixedLenFeature([], tf.string)})
              ["image"].numpy() for r in records]
    originals = []
    for name in names:
      with open(os.path.join(images, name), "rb") as f:
        originals.append(f.read())
    assert stored == originals
    assert sum(s["records"] for s in index["shards"]) == 20
    for size in (8, 20):
      folder = index["folders"][str(size)]
      assert sorted(os.listdir(folder)) == names[:size]
      with open(os.path.join(folder, names[0]), "rb") as f:
        assert f.read() == originals[0]
    assert pipeline_methods.peer_inputs(spec)["reused"] is True
    # Another source (fingerprint) is written anew.
    assert pipeline_methods.peer_inputs(dict(spec, fingerprint="g"))["reused"] is False


def test_every_method_feeds_its_batches_in_process(prepared_data_dir, synthetic_celeba_dir,
                                                   tmp_path):
  """Each method's `feed` task as its child runs it (the end-to-end test runs four of them)."""
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  from data_pipeline import writer  # pylint: disable=g-import-not-at-top
  dirs = {"raw": prepared_data_dir}
  for encoding in ("png", "jpeg"):
    dirs[encoding] = str(tmp_path / encoding)
    writer.prepare(sources.CelebAFolderSource(synthetic_celeba_dir), dirs[encoding],
                   image_size=32, encoding=encoding, num_workers=1, progress=False)
  peers = pipeline_methods.peer_inputs(
      {"source_dir": synthetic_celeba_dir, "root": str(tmp_path / "peers"), "sizes": [16],
       "name": "celeba_stream", "shard_mb": 0.05, "crop": [0, 40, 178, 218],
       "fingerprint": "f"})
  for method in pipeline_methods.METHODS:
    spec = {"task": "feed", "method": method, "size": 16, "image_size": 32, "batch_size": 8,
            "seed": 0, "shuffle_buffer": 64, "dirs": dirs, "num_batches": 2,
            "warmup_batches": 1, "peers": peers if method in pipeline_methods.PEERS else None}
    result = pipeline_methods.feed(spec)
    assert result["method"] == method and result["images"] == 16, result
    assert result["images_per_s"] > 0 and result["peak_rss_mb"] > 0, result
    assert result["images_available"] == 16 and result["load_seconds"] >= 0, result
  assert pipeline_methods.feed(dict(spec, method="classic_flow", peers=None))[
      "array_dtype"] == "float32"


# Each measurement is a child process: a stream of an encoding prepared here and a peer, at
# both sizes.
E2E_METHODS = ("stream_jpeg", "tfds_jpeg")


@pytest.mark.slow
def test_benchmark_end_to_end(prepared_data_dir, tmp_path):
  """The real tool on the 32x32 fixture: two methods at 16 and 32 images, and all the rest.

  8 child processes of the tool (preparation, the peers' inputs, 2 methods x 2 sizes, the
  training check, one preset's 4-epoch fit), each loading TensorFlow. Two sizes are needed for
  the memory-growth columns and targets; the preparation is timed for jpeg only (1 and 2
  workers) and the fit measured for one preset, to save time. Every other method's child task
  runs in test_every_method_feeds_its_batches_in_process, every target on hand-made results.
  """
  output = tmp_path / "out" / "bench.json"
  markdown_path = tmp_path / "out" / "bench.md"
  # The tool in this process (its real entry point runs in test_output_locks), its children real.
  result = run_main("benchmark_pipeline", f"--data_dir={prepared_data_dir}",
                    f"--output_json={output}", f"--output_markdown={markdown_path}",
                    f"--methods={','.join(E2E_METHODS)}",
                    "--sizes=16,32", "--batch_size=8", "--num_batches=2", "--warmup_batches=1",
                    "--prepare_images=20", "--prepare_encodings=jpeg", "--prepare_workers=2",
                    "--train_steps=2", "--train_warmup_steps=1", "--train_preset=ae_z256",
                    "--train_presets=vae_fact5", "--train_images=16",
                    "--train_validation_steps=1")
  assert result.returncode == 0, result.stderr
  report = json.loads(output.read_text())

  results = {(r["method"], r["size"]): r for r in report["results"]}
  assert set(results) == {(m, s) for m in E2E_METHODS for s in (16, 32)}
  for key, r in results.items():
    assert r["images"] == 16 and r["images_per_s"] > 0 and r["peak_rss_mb"] > 0, key
  assert set(report["memory_growth"]) == set(E2E_METHODS)
  assert results[("tfds_jpeg", 32)]["images_available"] == 32
  assert results[("tfds_jpeg", 32)]["load_seconds"] > 0
  ratios = {(r["stream"], r["peer"], r["size"]): r["ratio"] for r in report["peer_ratios"]}
  measured = {key for key, ratio in ratios.items() if ratio is not None}
  assert measured == {("stream_jpeg", "tfds_jpeg", n) for n in (16, 32)}
  assert all(ratios[key] > 0 for key in measured)

  targets = {t["name"]: t for t in report["targets"]}
  assert {"train_stream_vs_constant", "fit_vs_steps:vae_fact5", "rss_growth:stream_jpeg",
          "peak_rss_mb:stream_jpeg"} <= set(targets)
  # The methods not run leave their targets unmeasured; all the others were measured.
  unmeasured = {f"{name}@{n}" for n in (16, 32) for name in (
      "raw_vs_classic", "jpeg_vs_ceiling", "raw_vs_keras_folder", "raw_vs_tfds_jpeg")}
  assert all(targets[name]["passed"] is None for name in unmeasured)
  assert all(t["passed"] in (True, False) for n, t in targets.items() if n not in unmeasured)

  runs = {(r["encoding"], r["workers"]): r for r in report["preparation"]["runs"]}
  assert set(runs) == {("jpeg", 1), ("jpeg", 2)}
  assert all(r["images"] == 20 and r["images_per_s"] > 0 for r in runs.values())
  training = report["training"]
  assert training["preset"] == "ae_z256" and training["steps"] == 2
  assert training["stream_images_per_s"] > 0 and training["constant_images_per_s"] > 0
  [fit] = report["fit_throughput"]
  assert fit["preset"] == "vae_fact5" and fit["images"] == 16 and fit["steps"] == 2
  assert fit["validation_steps"] == 1 and fit["peak_rss_mb"] > 0
  # A bare block of half an epoch (1 step) after each of the 4 epochs.
  assert fit["epochs"] == fit_bench.EPOCHS == 4 and fit["bare_steps"] == 4 * 1
  assert len(fit["bare_block_seconds"]) == 4 and min(fit["bare_block_seconds"]) > 0
  assert len(fit["ratio_per_epoch"]) == 3 and min(fit["ratio_per_epoch"]) > 0
  assert fit["fit_images_per_s"] > 0 and fit["bare_images_per_s"] > 0 and fit["ratio"] > 0
  for total, validation, first, steps in zip(
      fit["epoch_seconds_per_epoch"], fit["validation_seconds_per_epoch"],
      fit["first_batch_seconds_per_epoch"], fit["steps_seconds_per_epoch"], strict=True):
    assert total > validation > 0 and total > steps > first > 0
  assert len(fit["first_batch_seconds_per_epoch"]) == 4
  assert fit["steady_step_seconds"] > 0 and fit["epoch_start_vs_step"] > 0
  assert "epoch_start:vae_fact5" in targets
  assert "fit_throughput.fit_vs_steps" in report["definitions"]
  assert "fit_throughput.epoch_start_vs_step" in report["definitions"]

  inputs = report["inputs"]
  work_dir = str(tmp_path / "out" / "bench_work")
  assert inputs["work_dir"] == work_dir and inputs["prepared_here"] == ["jpeg"]
  assert inputs["shards"]["raw"] == os.path.abspath(prepared_data_dir)
  assert inputs["source_dir"] and inputs["image_size"] == 32
  assert os.path.isfile(os.path.join(work_dir, "logs", "stream_jpeg-32.log"))
  assert not os.listdir(os.path.join(work_dir, "prepare_timing"))  # Scratch output removed.
  assert not os.listdir(os.path.join(work_dir, "fit_runs"))
  assert os.path.isfile(os.path.join(work_dir, "peers", pipeline_methods.PEER_INPUTS))

  assert report["table"] in result.stdout  # The tables are printed...
  assert markdown_path.read_text() == report["table"]  # ...and written.
  assert "| stream_jpeg |" in result.stdout and "| train_stream_vs_constant |" in result.stdout
  assert "| stream_jpeg / tfds_jpeg |" in result.stdout and "| vae_fact5 |" in result.stdout
  flags_text = (tmp_path / "out" / "bench.flags.txt").read_text()
  assert "--sizes=16,32" in flags_text and "--train_preset=ae_z256" in flags_text


@pytest.mark.parametrize("args, expected", [
    (["--methods=stream_raw,stream_webp"], "--methods"),
    (["--methods="], "--methods"),
    (["--sizes=abc"], "--sizes"),
    (["--sizes=0"], "--sizes"),
    (["--sizes=100,100"], "--sizes"),
    (["--sizes=64", "--batch_size=128"], "--batch_size"),
    (["--prepare_encodings=webp"], "--prepare_encodings"),
    (["--train_preset=vae_big"], "train_preset"),
    (["--train_presets=ae_z256,vae_big"], "--train_presets"),
    (["--train_presets=ae_z256,ae_z256"], "--train_presets"),
    (["--train_images=64", "--batch_size=128"], "--train_images"),
    (["--train_validation_steps=0"], "train_validation_steps"),
    (["--child_timeout_s=0"], "--child_timeout_s"),
    (["--num_batches=0"], "num_batches"),
])
def test_bad_flags_exit_2(tmp_path, args, expected):
  output = tmp_path / "b.json"
  result = run_tool("benchmark_pipeline", f"--data_dir={tmp_path}", f"--output_json={output}",
                    *args)
  assert_clean_error(result, expected, code=2)
  assert not os.listdir(tmp_path)


def test_required_flags_and_output_paths_exit_2(tmp_path):
  assert_clean_error(run_tool("benchmark_pipeline", f"--output_json={tmp_path / 'b.json'}"),
                     "--data_dir", code=2)
  assert_clean_error(run_tool("benchmark_pipeline", f"--data_dir={tmp_path}"), "output_json",
                     code=2)
  # Found before the (long) run, not when the report is written at its end.
  assert_clean_error(run_tool("benchmark_pipeline", f"--data_dir={tmp_path}",
                              f"--output_json={tmp_path}"), "--output_json", "is a directory",
                     code=2)


def test_bad_inputs_exit_1(prepared_data_dir, tmp_path):
  output = tmp_path / "out" / "b.json"
  # The fixture's train split has 52 images.
  result = run_tool("benchmark_pipeline", f"--data_dir={prepared_data_dir}",
                    f"--output_json={output}", "--sizes=16,500", "--batch_size=8")
  assert_clean_error(result, "--sizes 500", "52 training images", code=1)
  result = run_tool("benchmark_pipeline", f"--data_dir={prepared_data_dir}",
                    f"--output_json={output}", "--sizes=16", "--batch_size=8",
                    "--train_images=64")
  assert_clean_error(result, "--train_images 64", "52 training images", code=1)
  missing = tmp_path / "nowhere"
  result = run_tool("benchmark_pipeline", f"--data_dir={missing}", f"--output_json={output}")
  assert_clean_error(result, str(missing), "does not exist", code=1)
  # A source folder that is not the data dir's: named, before anything is prepared.
  result = run_tool("benchmark_pipeline", f"--data_dir={prepared_data_dir}",
                    f"--output_json={output}", "--sizes=16", "--batch_size=8",
                    f"--source_dir={tmp_path}")
  assert_clean_error(result, "--source_dir", code=1)
  assert not os.path.exists(tmp_path / "out")
