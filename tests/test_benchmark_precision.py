"""The mixed-precision benchmark: its verdicts on hand-made rows, and the tool end to end.

The unit tests load no TensorFlow. The end-to-end test trains the VAE for a few steps on the
32x32 fixture in float32 and in bf16 and checks the report's shape and its measured fields;
the verdict at that scale says nothing (the benchmark's own JSON is where parity is judged).
"""

import json
import os

import pytest

from benchmarks import precision as bench
from evaluation.errors import EvaluationError
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main
from tests.toolrun import run_tool


def _row(preset, precision, psnr, step, ssim=0.5):
  return {"preset": preset, "precision": precision, "test_psnr_db": psnr, "test_ssim": ssim,
          "steady_step_seconds": step, "final_loss": 5000.0, "peak_rss_mb": 900.0,
          "test_images": 450}


def test_rows_compare_with_float32_of_the_same_preset():
  rows = bench.compare_rows([_row("ae_z256", "off", 14.00, 3.0),
                             _row("ae_z256", "bf16", 13.85, 30.0, ssim=0.45),
                             _row("vae_fact5", "off", 13.50, 1.2),
                             _row("vae_fact5", "bf16", 13.80, 0.6)], auto_mode="off")
  by = {(r["preset"], r["precision"]): r for r in rows}
  assert by["ae_z256", "bf16"]["psnr_difference_db"] == pytest.approx(-0.15)
  assert by["ae_z256", "bf16"]["ssim_difference"] == pytest.approx(-0.05)
  assert by["ae_z256", "bf16"]["step_over_float32"] == pytest.approx(0.1)
  assert by["vae_fact5", "bf16"]["step_over_float32"] == pytest.approx(2.0)
  assert by["ae_z256", "off"]["psnr_difference_db"] == 0.0
  # auto resolved to float32: no speed-up, whatever bf16 does.
  assert {r["auto_over_float32"] for r in rows} == {1.0}
  rows_bf16 = bench.compare_rows([_row("vae_fact5", "off", 13.5, 1.2),
                                  _row("vae_fact5", "bf16", 13.8, 0.6)], auto_mode="bf16")
  assert rows_bf16[0]["auto_over_float32"] == pytest.approx(2.0)


def test_parity_target_on_either_side_of_the_threshold():
  rows = bench.compare_rows([_row("ae_z256", "off", 14.00, 3.0),
                             _row("ae_z256", "bf16", 13.85, 3.0),
                             _row("vae_fact5", "off", 13.50, 1.2),
                             _row("vae_fact5", "bf16", 13.75, 1.2),
                             _row("ae_z1600", "bf16", 13.0, 1.0)], auto_mode="off")
  targets = {t["name"]: t for t in bench.evaluate_targets(rows)}
  assert set(targets) == {"parity:ae_z256:bf16", "parity:vae_fact5:bf16", "parity:ae_z1600:bf16"}
  assert targets["parity:ae_z256:bf16"]["passed"] is True  # -0.15 dB.
  assert targets["parity:vae_fact5:bf16"]["passed"] is False  # +0.25 dB: too far either way.
  assert targets["parity:ae_z1600:bf16"]["passed"] is None  # No float32 run to compare with.
  report = {"machine": {"cpu_model": "cpu", "usable_cores": 2, "tensorflow": "2", "keras": "3",
                        "date": "today"},
            "inputs": {"epochs": 3, "train_images": 320, "batch_size": 32, "seed": 0,
                       "test_images": 450},
            "auto": {"mode": "off", "reason": "auto: float32, no native bf16"},
            "rows": rows, "targets": list(targets.values())}
  table = bench.markdown(report)
  assert "| ae_z256 | bf16 | 3.00 | 1.00x |" in table
  assert "| parity:vae_fact5:bf16 | +0.250 | +-0.2 | FAIL |" in table
  assert "| parity:ae_z1600:bf16 | n/a | +-0.2 | not measured |" in table
  assert "`--mixed_precision auto` here: float32 (auto: float32, no native bf16)" in table
  assert "3 epochs of 320 training images" in table
  # The measured count, not the requested one, when the split is smaller than asked for.
  report["rows"] = [dict(row, test_images=30) for row in rows]
  assert "on the test split's first 30 images." in bench.markdown(report)


def test_options_are_checked_against_the_data_dir(prepared_data_dir, tmp_path):
  base = bench.Options(data_dir=str(prepared_data_dir), train_images=16, batch_size=8)
  bench.check_options(base)  # The fixture: raw, 52 training and 6 test images.
  for options, expected in [
      (bench.Options(data_dir=str(prepared_data_dir), precisions=("bf16", "off")), "start with"),
      (bench.Options(data_dir=str(prepared_data_dir), precisions=("off", "fp32")), "fp32"),
      (bench.Options(data_dir=str(prepared_data_dir), train_images=64, batch_size=8),
       "fewer than --train_images 64"),
      (bench.Options(data_dir=str(prepared_data_dir), train_images=4, batch_size=8),
       "less than one batch")]:
    with pytest.raises(EvaluationError, match=expected):
      bench.check_options(options)
  with open(os.path.join(prepared_data_dir, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  manifest["splits"]["test"]["num_examples"] = 0
  (tmp_path / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(EvaluationError, match="no test images"):
    bench.check_options(bench.Options(data_dir=str(tmp_path), train_images=16, batch_size=8))


@pytest.mark.parametrize("args, expected", [
    (["--precisions=bf16,off"], "start with off"),
    (["--precisions=off,fp8"], "fp8"),
    (["--presets=ae_z9"], "ae_z9"),
    (["--train_images=8", "--batch_size=16"], "--train_images 8"),
    (["--child_timeout_s=0"], "--child_timeout_s"),
])
def test_bad_flags_exit_2(tmp_path, args, expected):
  result = run_main("benchmark_precision", f"--data_dir={tmp_path}",
                    f"--output_json={tmp_path / 'p.json'}", *args)
  assert_clean_error(result, expected, code=2)
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_benchmark_end_to_end(prepared_data_dir, tmp_path):
  output, work_dir = tmp_path / "out" / "p.json", tmp_path / "work"
  result = run_tool("benchmark_precision", f"--data_dir={prepared_data_dir}",
                    f"--output_json={output}", f"--work_dir={work_dir}", "--presets=vae_fact5",
                    "--train_images=16", "--batch_size=8", "--epochs=2", "--test_images=6",
                    f"--output_markdown={tmp_path / 'out' / 'p.md'}")
  assert result.returncode == 0, result.stderr
  report = json.loads(output.read_text())
  assert report["auto"]["mode"] in ("off", "bf16") and report["auto"]["reason"]
  assert [(r["preset"], r["precision"], r["policy"]) for r in report["rows"]] == [
      ("vae_fact5", "off", "float32"), ("vae_fact5", "bf16", "mixed_bfloat16")]
  for row in report["rows"]:
    # 2 epochs of 2 steps, each epoch's first left out; 6 test images (the split).
    assert row["timed_steps"] == 2 and row["test_images"] == 6 and row["steady_step_seconds"] > 0
    assert 0 < row["test_psnr_db"] < 60 and 0 < row["test_ssim"] <= 1
  off, bf16 = report["rows"]
  assert bf16["psnr_difference_db"] == pytest.approx(bf16["test_psnr_db"] - off["test_psnr_db"])
  (target,) = report["targets"]
  assert target["name"] == "parity:vae_fact5:bf16"
  assert target["passed"] == (abs(bf16["psnr_difference_db"]) <= 0.2)
  assert (tmp_path / "out" / "p.md").read_text() == report["table"]
  assert (tmp_path / "out" / "p.flags.txt").exists()
  assert sorted(os.listdir(work_dir / "runs")) == ["vae_fact5-bf16", "vae_fact5-off"]
  with open(work_dir / "runs" / "vae_fact5-bf16" / "config.json", encoding="utf-8") as f:
    assert json.load(f)["train"]["mixed_precision"] == "bf16"
