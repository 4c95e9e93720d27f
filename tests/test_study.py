"""tools.study: the chain over seeds and the sweep, convergence records, the budget, the report.

The end-to-end test runs the study's real steps on tiny data, each tool in this process
(tests/toolrun.run_main) instead of a child process: the tools' own entry points are tested
elsewhere, and a dozen TensorFlow imports would cost minutes.
"""

import json
import os
import time

import pytest

from modeling import config as config_lib
from modeling import training
from tests.toolrun import assert_clean_error, run_main
from workflows import demo
from workflows import study


@pytest.fixture(scope="module")
def study_data_dir(tmp_path_factory):
  """100 synthetic faces at 32x32: a test split large enough for the face judge's reference."""
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  from data_pipeline import writer  # pylint: disable=g-import-not-at-top
  from data_pipeline.synthetic import write_synthetic_celeba  # pylint: disable=g-import-not-at-top
  source, data = tmp_path_factory.mktemp("faces"), tmp_path_factory.mktemp("data")
  write_synthetic_celeba(str(source), 100, seed=1)
  writer.prepare(sources.CelebAFolderSource(str(source)), str(data), num_workers=1,
                 progress=False, image_size=32, encoding="raw")
  return str(data)


def _plan(workspace, data_dir, **changes):
  settings = dict(workspace=str(workspace), celeba_dir=None, data_dir=data_dir, num_images=0,
                  image_size=32, max_epochs=3, patience=1, min_delta=0.5, seeds=(0,),
                  kl_factors=(1.0, 5.0), batch_size=16, metric_images=16)
  settings.update(changes)
  return study.Plan(**settings)


def test_every_model_trains_with_early_stopping_and_the_budget_left(tmp_path):
  plan = _plan(tmp_path, "/d", seeds=(0, 1), kl_factors=(0.5, 5.0, 20.0))
  groups = study.step_groups(plan, deadline=time.time() + 600)
  assert [len(g) for g in groups] == [10, 9, 10]  # Seed 0, the sweep, seed 1.
  assert groups[1][0].name == "sweep_train_vae_kl0.5"
  steps = {step.name: step for group in groups for step in group}
  trainers = [step for step in steps.values() if step.tool.startswith("train_")]
  assert len(trainers) == 8  # Three models per seed and the two factors other than 5.
  for step in trainers:
    assert {"--patience=1", "--min_delta=0.5", "--epochs=3", "--data_dir=/d"} <= set(step.args)
    (budget,) = step.volatile()
    assert 9.9 < float(budget.split("=")[1]) <= 10.0  # Minutes left, not part of the identity.
    assert budget not in step.command()
  assert "--seed=1" in steps["seed_1_train_vae"].args
  assert "--kl_factor=20" in steps["sweep_train_vae_kl20"].args
  assert "sweep_train_vae_kl5" not in steps  # The first seed's own VAE is the factor-5 point.
  assert steps["sweep_generate_kl5"].args[0] == f"--model_dir={tmp_path}/seed_0/runs/vae"
  assert "--samplers=normal" in steps["sweep_generate_kl20"].args
  runs = steps["sweep_compare_reconstructions"].args[0].split("=")[1].split(",")
  assert [os.path.basename(r) for r in runs] == ["vae_kl0.5", "vae", "vae_kl20", "ae"]
  assert all(step.volatile is None for group in study.step_groups(plan)
             for step in group)
  from_celeba = study.step_groups(_plan(tmp_path, None, celeba_dir="/c"))
  assert [step.name for step in from_celeba[0]] == ["prepare_data", "verify_data"]
  assert f"--output_dir={tmp_path}/data" in from_celeba[0][0].args


def _tiny_train(model_dir, **train):
  model_config = config_lib.resolve_config("ae_z256", dict(
      image_size=16, z_dim=4, encoder_filters=[4, 8], encoder_kernels=[3, 3], strides=[2, 2],
      loss="mse"))
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), np.uint8)
  data = tf.data.Dataset.from_tensor_slices(images).batch(8)
  config = training.TrainConfig(batch_size=8, seed=1, **train)
  return training.train(model_config, config, data, data, str(model_dir), verbose=0)


@pytest.mark.slow
def test_run_records_tell_early_stopping_from_max_epochs(tmp_path):
  # min_delta 0.9: no epoch improves 90 % on the first, so patience 1 stops after epoch 2.
  _tiny_train(tmp_path / "early", epochs=5, patience=1, min_delta=0.9)
  record = study.run_record(str(tmp_path / "early"))
  assert record["stopped_by"] == study.STOPPED_EARLY and record["converged"]
  assert record["epochs_run"] == 2 and record["max_epochs"] == 5
  assert record["best_epoch"] in (1, 2) and len(record["last_val_losses"]) == 2
  _tiny_train(tmp_path / "all", epochs=2, patience=3)
  record = study.run_record(str(tmp_path / "all"))
  assert record["stopped_by"] == study.MAX_EPOCHS and not record["converged"]


def _in_process(command, log_path):
  """the demo's step runner, with the tool run in this process."""
  result = run_main(command[2].split(".", 1)[1], *command[3:])
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w", encoding="utf-8") as log:
    log.write(result.stdout + result.stderr)
  return result.returncode


@pytest.mark.slow
def test_a_tiny_study_under_a_spent_budget_then_its_rerun(study_data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(demo, "_run_logged", _in_process)
  plan = _plan(tmp_path / "ws", study_data_dir, time_budget_minutes=0.0)
  os.makedirs(plan.workspace)
  deadline = time.time()  # Spent before it starts: every model trains one epoch of 3.
  results = [result for group in study.step_groups(plan, deadline)
             for result in demo.run_steps(group, plan.workspace, "python")]
  assert {r.status for r in results} == {"ran"}
  study.write(plan, results, deadline)
  with open(os.path.join(plan.workspace, "study.json"), encoding="utf-8") as f:
    report = json.load(f)

  assert report["budget"] == {"minutes": 0.0, "spent": True}
  for record in list(report["runs"]["0"].values()) + report["sweep"]:
    assert record["epochs_run"] == 1 and record["stopped_by"] == study.BUDGET
  assert set(report["runs"]["0"]) == {"ae", "vae", "ae_z1600"}
  assert len(report["claims"]) == 12
  for row in report["claims"]:
    assert not row["models_converged"] and "not converged: ae (seed 0" in row["measured"]
    assert row["verdicts_per_seed"] == [row["verdict"]]
  assert [r["kl_factor"] for r in report["sweep"]] == [1.0, 5.0]
  for record in report["sweep"]:
    assert record["psnr"] > 0 and 0 < record["ssim"] < 1
    assert 0 <= record["active_units"]["count"] <= 128  # vae_fact5's z_dim.
    assert record["active_units"]["threshold"] == 0.01
    low, high = record["face_score"]["ci95"]
    assert 0 <= low <= record["face_score"]["mean"] <= high <= 1
    assert record["fd_face"]["value"] >= 0 and 0 < record["val_kl_share"] < 1
  assert report["ae_gmm"]["psnr"] > 0 and report["ae_gmm"]["face_score"]["mean"] >= 0
  assert set(report["tradeoff"]) == {"face_threshold", "factors_making_faces",
                                     "smallest_factor_making_faces", "best_psnr_making_faces"}
  text = open(os.path.join(plan.workspace, "study.md"), encoding="utf-8").read()
  assert "NOT every model converged" in text and "Time budget 0 min, spent." in text
  assert "| 5 (the study's) | 1 (time budget) |" in text and "| AE + fitted GMM |" in text
  assert os.path.getsize(os.path.join(plan.workspace, "tradeoff.png")) > 10_000

  # The rerun: a model stopped by the budget is not complete, so its training step and every
  # step after it in its group run again (here only recorded), without a budget now.
  ran = []
  monkeypatch.setattr(demo, "_run_logged", lambda command, log: ran.append(command) or 0)
  for group in study.step_groups(plan):
    demo.run_steps(group, plan.workspace, "python")
  tools = [command[2] for command in ran]
  assert tools.count("tools.train_ae") == 2 and tools.count("tools.train_vae") == 2
  assert len(ran) == 10 + 6 and not any("--time_budget_minutes" in " ".join(c) for c in ran)


def test_study_flag_errors_are_one_line(tmp_path):
  assert_clean_error(run_main("study", f"--data_dir={tmp_path}"), "--workspace", code=2)
  assert_clean_error(run_main("study", f"--workspace={tmp_path}/ws", f"--data_dir={tmp_path}",
                              f"--celeba_dir={tmp_path}"), "exactly one of --data_dir", code=2)
  assert_clean_error(run_main("study", f"--workspace={tmp_path}/ws", f"--data_dir={tmp_path}",
                              "--kl_factors=1,x"), "--kl_factors must be a list of numbers",
                     code=2)
  for bad in ("--kl_factors=1,-5", "--kl_factors=5,5", "--seeds=0,0", "--seeds=1.5"):
    name = bad[2:].split("=")[0]
    assert_clean_error(run_main("study", f"--workspace={tmp_path}/ws", f"--data_dir={tmp_path}",
                                bad), f"--{name} must be a list of numbers", code=2)
  assert_clean_error(run_main("study", f"--workspace={tmp_path}/ws",
                              f"--data_dir={tmp_path}/none"), "does not exist", code=2)
  assert not os.path.exists(tmp_path / "ws")
