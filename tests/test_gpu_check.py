"""The GPU check (benchmarks/gpu.py and benchmarks/gpu_check.sh).

The unit tests load no TensorFlow: plans, budget, rows, targets and tables on hand-made
numbers, with a fake child where the parent would start one. Two slow tests run the real
thing on the CPU (CUDA_VISIBLE_DEVICES="" hides any GPU): the refusal without a GPU, and one
tiny config end to end with --allow_cpu; their numbers say nothing about a GPU.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu
from data_pipeline.errors import DataError
from evaluation.errors import EvaluationError
from modeling.errors import ModelError
from tests.toolrun import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "gpu_check.sh")


def _options(**overrides):
  return gpu.Options(**{"data_dir": "/data/faces96", "output_json": "/tmp/gpu.json",
                        **overrides})


def _spec(preset="ae_z256", batch_size=128, **overrides):
  spec = dict(gpu.child_specs(_options(), 96)[0], preset=preset, batch_size=batch_size)
  return {**spec, **overrides}


def _row(preset="ae_z256", batch_size=128, precision="float32", xla=False, ratio=1.0,
         status="ok", error=None):
  row = gpu.empty_row(_spec(preset, batch_size), precision, xla, status, error)
  if status == "ok":
    row.update(constant_images_per_s=1000.0, stream_images_per_s=1000.0 * ratio, ratio=ratio,
               gpu_memory_peak_mb=1234.5, first_step_seconds=4.25, loss=700.0,
               loss_finite=True)
  return row


def test_config_plan_puts_the_trainers_defaults_first():
  assert gpu.config_plan(gpu.PRECISIONS, (False, True)) == [
      ("bf16", False), ("float32", False), ("bf16", True), ("float32", True),
      ("fp16", False), ("fp16", True)]
  assert gpu.config_plan(("fp16", "float32"), (True,)) == [("float32", True), ("fp16", True)]


def test_child_specs_batch_sizes_outer():
  options = _options(presets=("ae_z256", "vae_fact5"), batch_sizes=(128, 512),
                     precisions=("float32",), xla="off", steps=7, warmup_steps=2)
  specs = gpu.child_specs(options, 96)
  assert [gpu.child_label(s) for s in specs] == ["ae_z256@128", "vae_fact5@128",
                                                 "ae_z256@512", "vae_fact5@512"]
  assert specs[0]["configs"] == [["float32", False]]
  assert (specs[0]["image_size"], specs[0]["steps"], specs[0]["warmup_steps"]) == (96, 7, 2)
  assert specs[0]["task"] == "measure" and os.path.isabs(specs[0]["data_dir"])
  json.dumps(specs)  # The child reads them as JSON.


def test_child_deadline_shares_what_is_left():
  assert gpu.child_deadline(100.0, None, 3) is None
  assert gpu.child_deadline(100.0, 160.0, 3) == pytest.approx(120.0)
  assert gpu.child_deadline(100.0, 160.0, 1) == pytest.approx(160.0)
  assert gpu.child_deadline(200.0, 160.0, 2) == pytest.approx(200.0)  # Past: nothing left.


def test_targets_at_the_threshold():
  rows = [_row(ratio=0.95), _row(precision="bf16", ratio=0.9499),
          _row(precision="fp16", xla=True, status="failed", error="OOM")]
  targets = {t["name"]: t for t in gpu.evaluate_targets(rows)}
  assert targets["stream_vs_constant:ae_z256@128/float32/no_xla"]["passed"] is True
  assert targets["stream_vs_constant:ae_z256@128/bf16/no_xla"]["passed"] is False
  failed = targets["stream_vs_constant:ae_z256@128/fp16/xla"]
  assert failed["passed"] is None and failed["value"] is None
  assert all(t["threshold"] == gpu.STREAM_VS_CONSTANT for t in targets.values())
  assert gpu.summarize(rows, list(targets.values())) == {
      "configs": 3, "ok": 2, "failed": 1, "skipped": 0, "targets_passed": 1,
      "targets_failed": 1, "targets_not_measured": 1}


def test_markdown_table():
  machine = {"gpus": [{"device_name": "NVIDIA H200", "compute_capability": "9.0"}],
             "tensorflow": "2.21.0", "keras": "3.15.1", "driver": "550.54"}
  long_error = "ResourceExhaustedError: OOM when allocating tensor | " + "x" * 100
  rows = [_row(ratio=0.5), _row(batch_size=512, status="failed", error=long_error)]
  lines = gpu.markdown_lines(rows, machine)
  assert "NVIDIA H200 (compute capability 9.0)" in lines[0] and "driver 550.54" in lines[0]
  measured, failed = lines[-2], lines[-1]
  assert "| ae_z256 | 128 | float32 | off | 1,000 | 500 | 0.500 | FAIL | 1,234 | 4.2 |" in measured
  assert "| not measured |" in failed and "failed: ResourceExhaustedError" in failed
  assert failed.count("|") == measured.count("|")  # The error's "|" does not add a column.
  assert "no GPU (CPU only)" in gpu.markdown_lines([], {"gpus": []})[0]


def test_refusal_without_a_gpu():
  probe = {"gpus": [], "tensorflow": "2.21.0", "build": {"is_cuda_build": False}}
  message = gpu.refusal(probe, False, "/logs/probe.log")
  assert "no GPU is visible" in message and "--allow_cpu" in message
  assert "\n" not in message and "/logs/probe.log" in message
  assert gpu.refusal(probe, True, "x") is None
  assert gpu.refusal(dict(probe, gpus=[{"name": "GPU:0"}]), False, "x") is None


def test_complete_rows_fills_the_plan():
  spec = _spec(configs=[["bf16", False], ["float32", False], ["bf16", True]])
  done = [_row(precision="float32")]
  rows = gpu.complete_rows(spec, done, "failed", "the child died")
  assert [(r["precision"], r["xla"], r["status"]) for r in rows] == [
      ("bf16", False, "failed"), ("float32", False, "ok"), ("bf16", True, "failed")]
  assert rows[0]["error"] == "the child died" and rows[0]["ratio"] is None
  assert set(rows[0]) == set(done[0])


def test_run_children_budget_and_a_dead_child(tmp_path, monkeypatch):
  """Shares of the budget, the kill timeout, skipped children, rows kept from a dead one."""
  now = [1000.0]
  calls = []

  def fake_run(module, spec, log_path, timeout_s, label, timeout_hint="raise it"):
    del log_path, label
    assert module == "benchmarks.gpu" and "budget" in timeout_hint
    calls.append((gpu.child_label(spec), spec["deadline"] - now[0], timeout_s))
    now[0] += 60.0
    first = _row(spec["preset"], spec["batch_size"], *spec["configs"][0])
    if spec["preset"] == "vae_fact5":  # Dies after its first config.
      with open(spec["progress_path"], "w", encoding="utf-8") as f:
        f.write(json.dumps(first) + "\n" + '{"torn')
      raise EvaluationError("the GPU check of vae_fact5@128 failed with exit code -9")
    return {"rows": [first, _row(spec["preset"], spec["batch_size"], *spec["configs"][1])]}

  monkeypatch.setattr(gpu.child_tasks, "run", fake_run)
  specs = gpu.child_specs(_options(presets=("ae_z256", "vae_fact5", "ae_z1600"),
                                   batch_sizes=(128,), precisions=("float32",)), 96)
  rows = gpu.run_children(specs, str(tmp_path), 1800.0, budget_s=100.0, clock=lambda: now[0])
  # 100 s for 3 children: a third each; the second gets half of the 40 s left; none after.
  assert [c[0] for c in calls] == ["ae_z256@128", "vae_fact5@128"]
  assert calls[0][1:] == pytest.approx((100.0 / 3, 100.0 + gpu.KILL_GRACE_S))
  assert calls[1][1:] == pytest.approx((20.0, 40.0 + gpu.KILL_GRACE_S))
  assert [(r["preset"], r["xla"], r["status"]) for r in rows] == [
      ("ae_z256", False, "ok"), ("ae_z256", True, "ok"),
      ("vae_fact5", False, "ok"), ("vae_fact5", True, "failed"),
      ("ae_z1600", False, "skipped"), ("ae_z1600", True, "skipped")]
  assert "exit code -9" in rows[3]["error"] and "--budget_s" in rows[4]["error"]


def test_measure_or_record_keeps_a_failure(monkeypatch):
  def fail(*args):
    del args
    raise ValueError("OOM when allocating tensor with shape[512,64,48,48]\n\nmore lines")
  monkeypatch.setattr(gpu, "measure_config", fail)
  row = gpu._measure_or_record(_spec(batch_size=512), None, None, "bf16", True)
  assert row["status"] == "failed" and row["error_type"] == "ValueError"
  assert row["error"] == "ValueError: OOM when allocating tensor with shape[512,64,48,48]"
  assert row["seconds"] >= 0 and row["peak_rss_mb"] > 0


def test_parse_args(capsys):
  options = gpu.parse_args(["--data_dir", "d", "--output_json", "o.json", "--batch_sizes",
                            "64", "--precisions", "fp16,bf16", "--xla", "on"])
  assert options.batch_sizes == (64,) and options.precisions == ("fp16", "bf16")
  assert options.presets == gpu.PRESETS and options.steps == 20 and not options.allow_cpu
  for bad in (["--presets", "ae_z9"], ["--batch_sizes", "128,0"], ["--precisions", "fp8"],
              ["--steps", "0"], ["--batch_sizes", "128,128"]):
    with pytest.raises(SystemExit) as exit_info:
      gpu.parse_args(["--data_dir", "d", "--output_json", "o.json", *bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err, err


def _manifest_dir(path, image_size, train_images):
  path.mkdir()
  manifest = {"name": "celeba_stream", "image_size": image_size, "encoding": "raw",
              "splits": {"train": {"num_examples": train_images}}, "shards": []}
  (path / "manifest.json").write_text(json.dumps(manifest))
  return str(path)


def test_check_inputs(tmp_path):
  data_dir = _manifest_dir(tmp_path / "d96", 96, 1600)
  assert gpu.check_inputs(_options(data_dir=data_dir)) == {"image_size": 96,
                                                           "train_images": 1600}
  with pytest.raises(ModelError, match="not divisible"):  # The presets' strides: 16.
    gpu.check_inputs(_options(data_dir=_manifest_dir(tmp_path / "d40", 40, 1600)))
  with pytest.raises(DataError, match="no training images"):
    gpu.check_inputs(_options(data_dir=_manifest_dir(tmp_path / "d0", 96, 0)))
  with pytest.raises(DataError, match="does not exist"):
    gpu.check_inputs(_options(data_dir=str(tmp_path / "missing")))


def test_gpu_check_sh_syntax_and_command():
  subprocess.run(["bash", "-n", SCRIPT], check=True, timeout=30)
  with open(SCRIPT, encoding="utf-8") as f:
    text = f.read()
  assert "set -euo pipefail" in text and "pip install" in text and "'.[gpu]'" in text
  assert "-m benchmarks.gpu" in text and "--budget_s" in text and "--output_json" in text
  assert "curl" not in text and "wget" not in text


def _cpu_env():
  return dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO_ROOT,
              TF_CPP_MIN_LOG_LEVEL="2")


@pytest.mark.slow
def test_no_gpu_is_a_one_line_error(prepared_data_dir, tmp_path):
  output = tmp_path / "gpu.json"
  result = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--data_dir",
                           prepared_data_dir, "--output_json", str(output)], cwd=REPO_ROOT,
                          env=_cpu_env(), capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if ": error: " in line]
  assert len(errors) == 1 and "no GPU is visible" in errors[0], result.stderr
  assert not output.exists()


@pytest.mark.slow
def test_end_to_end_on_the_cpu(prepared_data_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # The children inherit it.
  output = tmp_path / "gpu.json"
  code = gpu.main(["--data_dir", prepared_data_dir, "--output_json", str(output),
                   "--allow_cpu", "--presets", "vae_fact5", "--batch_sizes", "8",
                   "--precisions", "float32", "--xla", "off", "--steps", "2",
                   "--warmup_steps", "1"])
  assert code == 0, capsys.readouterr().err
  report = json.loads(output.read_text())
  (row,) = report["rows"]
  assert row["status"] == "ok", row["error"]
  assert (row["preset"], row["batch_size"], row["precision"], row["xla"]) == (
      "vae_fact5", 8, "float32", False)
  assert row["compute_dtype"] == "float32" and row["loss_finite"]
  assert row["constant_images_per_s"] > 0 and row["stream_images_per_s"] > 0
  assert row["ratio"] == pytest.approx(row["stream_images_per_s"]
                                       / row["constant_images_per_s"])
  assert row["gpu_memory_peak_mb"] is None  # No GPU.
  assert row["stream_warmup_steps"] > row["warmup_steps"]
  assert report["machine"]["gpus"] == [] and report["machine"]["tensorflow"]
  assert report["settings"]["image_size"] == 32
  assert report["targets"][0]["name"] == "stream_vs_constant:vae_fact5@8/float32/no_xla"
  command = report["command_line"]
  assert command.startswith(f"python -m benchmarks.gpu --data_dir {prepared_data_dir}")
  assert command.endswith("--warmup_steps 1")
  assert report["summary"]["ok"] == 1
  assert "| vae_fact5 | 8 | float32 | off |" in capsys.readouterr().out
