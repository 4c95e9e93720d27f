"""tools.demo's runner: the chain's first steps for real, reuse of complete steps, reruns.

The whole chain (training included) is what `make demo` runs; here the runner's bookkeeping is
tested on the cheap prefix synthetic_faces -> prepare_data -> verify_data with real tools.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests.toolrun import assert_clean_error
from tests.toolrun import run_tool
from workflows import demo


def _settings(workspace, num_images):
  return demo.DemoSettings(workspace=str(workspace), celeba_dir=None,
                                 num_images=num_images, epochs=1, batch_size=16,
                                 image_size=32, seed=3)


def _manifest(workspace):
  with open(os.path.join(workspace, "data", "manifest.json"), encoding="utf-8") as f:
    return json.load(f)


def test_chain_names_every_tool_of_the_main_job(tmp_path):
  names = [step.name for step in demo.build_steps(_settings(tmp_path, 100))]
  assert names[:3] == ["synthetic_faces", "prepare_data", "verify_data"]
  for tool in ("train_ae", "train_vae", "train_ae_z1600", "encode_ae", "encode_vae",
               "analyze_latents_vae", "generate_ae", "generate_vae", "compare_reconstructions"):
    assert tool in names
  steps = {step.name: step for step in demo.build_steps(_settings(tmp_path, 100))}
  assert steps["train_ae_z1600"].tool == "train_ae"
  assert "--preset=ae_z1600" in steps["train_ae_z1600"].args
  assert "--sharpen=0,1,3,6,7" in steps["generate_vae"].args
  assert "train_vae_upsample" not in steps
  extras = dataclasses.replace(_settings(tmp_path, 100), upsampling_variant=True)
  steps = {step.name: step for step in demo.build_steps(extras)}
  assert "--upsampling=upsample" in steps["train_vae_upsample"].args
  assert "--samplers=normal" in steps["generate_vae_upsample"].args
  assert any(a.endswith("runs/ae_z1600") for a in
             steps["compare_reconstructions"].args[0].split(","))
  real = demo.DemoSettings(str(tmp_path), "/data/celeba", 0, 1, 16, 96, 0)
  assert "synthetic_faces" not in [step.name for step in demo.build_steps(real)]


@pytest.mark.slow
def test_prefix_runs_then_is_reused_then_reruns_downstream_of_a_change(tmp_path, capfd):
  workspace = tmp_path / "ws"
  first = demo.run_all(_settings(workspace, 60), sys.executable, stop_after="prepare_data")
  assert [r.status for r in first] == ["ran", "ran"]
  assert sum(s["num_examples"] for s in _manifest(workspace)["splits"].values()) == 60

  again = demo.run_all(_settings(workspace, 60), sys.executable, stop_after="verify_data")
  # The complete steps are reused; verify_data writes nothing, so it always runs.
  assert [r.status for r in again] == ["reused", "reused", "ran"]
  assert again[0].seconds == pytest.approx(first[0].seconds)
  for name in ("synthetic_faces", "prepare_data", "verify_data"):
    assert os.path.getsize(workspace / "logs" / f"{name}.log") > 0

  # A changed input reruns its step and those downstream.
  changed = demo.run_all(_settings(workspace, 80), sys.executable,
                         stop_after="prepare_data")
  assert [r.status for r in changed] == ["ran", "ran"]
  assert "--overwrite" in capfd.readouterr().out  # Replacing earlier outputs needs the flag.
  assert sum(s["num_examples"] for s in _manifest(workspace)["splits"].values()) == 80

  report = demo.write_report(_settings(workspace, 80), changed)
  text = open(report, encoding="utf-8").read()
  assert "| `prepare_data` |" in text and "train 64" in text


def test_demo_flag_errors_are_one_line(tmp_path):
  result = run_tool("demo", f"--workspace={tmp_path}", "--stop_after=no_such_step")
  assert_clean_error(result, "--stop_after")
  result = run_tool("demo", f"--workspace={tmp_path}", "--num_images=10")
  assert_clean_error(result, "--num_images")


@pytest.mark.parametrize("names, requested, chosen", [
    (["Smiling", "Male"], "auto", "Smiling"),
    (["Attractive", "Male"], "auto", "Male"),           # The real sample's two columns.
    (["Male"], "auto", "Male"),
    (["Attractive"], "auto", None),                     # Left out, with a note.
    ([], "auto", None),
    (["Attractive", "Male"], "Attractive", "Attractive"),
])
def test_attribute_sampler_falls_back_when_smiling_is_missing(names, requested, chosen):
  from evaluation import generation  # pylint: disable=g-import-not-at-top
  name, note = generation.choose_attribute(requested, names)
  assert name == chosen
  assert (chosen or "left out") in note
  if chosen == "Male":
    assert "Smiling is not among" in note


def test_an_explicit_attribute_the_data_lacks_is_refused():
  from evaluation import generation  # pylint: disable=g-import-not-at-top
  from evaluation.errors import EvaluationError  # pylint: disable=g-import-not-at-top
  with pytest.raises(EvaluationError, match="'Smiling' is not an attribute.*Attractive, Male"):
    generation.choose_attribute("Smiling", ["Attractive", "Male"])


def _fake_workspace(root, models, split="test", num_images=450):
  """A workspace whose report was written by demo_report from a given reconstruction.json."""
  from workflows import demo_report  # pylint: disable=g-import-not-at-top
  out = root / "eval" / "reconstruction"
  out.mkdir(parents=True)
  stats = lambda value: {"mean": value}
  (out / "reconstruction.json").write_text(json.dumps({
      "split": split, "num_images": num_images,
      "models": {name: {"psnr": stats(20.0 + i), "ssim": stats(0.5 + 0.1 * i),
                        "reconstruction_loss":
                        stats(4600.0)} for i, name in enumerate(models)}}))
  demo_report.write(str(root), [], {"data": str(root / "data"), "runs": str(root / "runs"),
                                    "eval": str(root / "eval")})
  return root


def test_report_check_finds_the_real_split_numbers(tmp_path):
  from workflows import demo_report  # pylint: disable=g-import-not-at-top
  complete = _fake_workspace(tmp_path / "ok", ["ae", "vae"])
  assert "| ae | 20.00 | 0.500 |" in (complete / "report.md").read_text()
  assert demo_report.missing_numbers(str(complete), "test", ["ae", "vae"], 450) == []
  partial = _fake_workspace(tmp_path / "partial", ["ae"], split="validation", num_images=10)
  problems = demo_report.missing_numbers(str(partial), "test", ["ae", "vae"], 450)
  assert len(problems) == 3 and "no model vae" in problems[-1]
  assert demo_report.missing_numbers(str(tmp_path / "none"), "test", ["ae"]) == [
      f"{tmp_path / 'none'}/report.md is missing"]
  result = subprocess.run([sys.executable, "-m", "tools.check_report", "--workspace",
                           str(partial)], capture_output=True, text=True, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 1 and "error: reconstruction.json" in result.stderr


def test_report_opens_with_the_claims_table_and_writes_study_json(tmp_path):
  workspace = _fake_workspace(tmp_path / "ws", ["ae", "vae", "ae_z1600"])
  def figures(score):  # A face figures block with a tight interval.
    return {"num_images": 200, "face_rate": score, "face_score": {
        "mean": score, "ci95": [score - 0.01, score + 0.01]}, "fd_face": {
            "value": 1.0 - score, "ci95": [0.9 - score, 1.1 - score]}}
  for kind, scores in (("ae", {"real": 0.9, "noise": 0.0, "normal": 0.04, "gaussian": 0.8}),
                       ("vae", {"real": 0.9, "noise": 0.0, "normal": 0.8,
                                "uniform": {"0.5": 0.89, "1": 0.8, "2": 0.7, "5": 0.5}})):
    faces = {k: ({r: figures(v) for r, v in s.items()} if isinstance(s, dict) else figures(s))
             for k, s in scores.items()}
    out = workspace / "eval" / kind / "generation"
    out.mkdir(parents=True)
    (out / "generation.json").write_text(json.dumps({
        "faces": faces, "sharpening": {"1": {"checkerboard_energy": 0.02,
                                             "laplacian_variance": 100.0}}}))
  out = workspace / "eval" / "vae_upsample" / "generation"
  out.mkdir(parents=True)
  (out / "generation.json").write_text(json.dumps(
      {"sharpening": {"1": {"checkerboard_energy": 0.005, "laplacian_variance": 90.0}}}))
  for kind, row in (("ae", "0,4850.5,4900.0,"), ("vae", "0,5015.0,5020.0,0.03")):
    run = workspace / "runs" / kind
    run.mkdir(parents=True)
    (run / "history.csv").write_text("epoch,loss,val_loss,val_kl_share\n" + row + "\n")
  (workspace / "runs" / "vae" / "config.json").write_text(json.dumps({"model": {"kl_factor": 5}}))
  from workflows import demo_report  # pylint: disable=g-import-not-at-top
  demo_report.write(str(workspace), [], {"data": str(workspace / "data"),
                                         "runs": str(workspace / "runs"),
                                         "eval": str(workspace / "eval")})
  text = (workspace / "report.md").read_text()
  assert text.index("## The study's claims, measured") < text.index("## Reconstruction quality")
  study = json.loads((workspace / "study.json").read_text())
  verdicts = {row["id"]: row["verdict"] for row in study["claims"]}
  assert verdicts[5] == "holds" and verdicts[6] == "holds" and verdicts[7] == "holds"
  assert verdicts[8] == "holds" and verdicts[11] == "holds"
  assert verdicts[10] == "holds"  # ae_z1600 22 dB / 0.7 > VAE 21 dB / 0.6 (_fake_workspace).
  assert verdicts[1] == "not comparable"  # No latent report in this workspace.
  assert verdicts[12] == "holds"  # The upsampling VAE's period-2 share 0.005 < 0.02.
  assert study["measurements"]["faces"]["vae_uniform"]["5"]["face_score"]["mean"] == 0.5
  # The judge's calibration follows the claims: real photos and noise, with intervals.
  assert text.index("## The face judge's calibration") < text.index("## Reconstruction quality")
  assert "| real | 200 | 0.90 | 0.9 [0.89, 0.91] | 0.1 [0, 0.2] |" in text
