"""tools.study's chain and report: convergence per run, claims over seeds, the KL-factor sweep.

`step_groups` builds the steps (workflows.demo.Step) in groups that tools.study runs one
after the other; `write` writes WORKSPACE/study.json, WORKSPACE/study.md and
WORKSPACE/tradeoff.png (numbers only, never faces).

Claims over seeds: a claim's verdict is the seeds' common verdict when they agree, else
"inconclusive" (the seeds disagree). Each row says whether the models behind it converged.

Active latent units follow Burda, Grosse and Salakhutdinov, "Importance Weighted
Autoencoders" (ICLR 2016), section 5.2: a component is active when the variance over the data
of its encoder mean, Cov_x(E_q[z_i | x]), exceeds 0.01; here over the test split's z_mean.
"""

import dataclasses
import json
import math
import os
import time

import numpy as np

from data_pipeline import provenance
from evaluation import face_figures
from evaluation import plots
from evaluation import study_claims
from evaluation import z_components
from modeling import convergence
from modeling import run_dir
from workflows import demo
from workflows import demo_report

STUDY_KL_FACTOR = 5.0  # The study's factor: its VAE run of each seed is the sweep's point.
STOPPED_EARLY, MAX_EPOCHS, BUDGET = "early stopping", "max_epochs", "time budget"


@dataclasses.dataclass(frozen=True)
class Plan:
  """What tools.study was asked for (its flags, parsed); paths absolute."""
  workspace: str
  celeba_dir: str | None
  data_dir: str | None
  num_images: int
  image_size: int
  max_epochs: int
  patience: int
  min_delta: float
  seeds: tuple
  kl_factors: tuple
  batch_size: int
  time_budget_minutes: float | None = None
  metric_images: int = demo.GENERATION_METRIC_IMAGES  # Samples judged per setting.
  min_epochs: int = 1  # No early stop before this many epochs.

  @property
  def data(self):
    return self.data_dir or os.path.join(self.workspace, "data")

  def seed_dir(self, seed):
    return os.path.join(self.workspace, f"seed_{seed}")

  @property
  def sweep_dir(self):
    return os.path.join(self.workspace, "sweep")

  def sweep_run(self, factor):
    """The VAE run dir at `factor`: the first seed's own VAE at the study's factor."""
    if factor == STUDY_KL_FACTOR:
      return os.path.join(self.seed_dir(self.seeds[0]), "runs", "vae")
    return os.path.join(self.sweep_dir, "runs", f"vae_kl{factor:g}")

  def settings(self, seed):
    return demo.DemoSettings(
        workspace=self.seed_dir(seed), celeba_dir=self.celeba_dir, num_images=self.num_images,
        epochs=self.max_epochs, batch_size=self.batch_size, image_size=self.image_size,
        seed=seed, data_dir=self.data, metric_images=self.metric_images,
        train_flags=(f"--patience={self.patience}", f"--min_delta={self.min_delta:g}",
                     *([f"--min_epochs={self.min_epochs}"] if self.min_epochs > 1 else [])))


def run_record(model_dir):
  """A run's convergence: {"epochs_run", "best_epoch" (1-based, the weights kept), "converged",
  "stopped_by", "best_val_loss", "last_val_losses", "val_kl_share" (at the best epoch)}."""
  with open(os.path.join(model_dir, run_dir.CONFIG), encoding="utf-8") as f:
    train = json.load(f)["train"]
  history = run_dir.read_history(os.path.join(model_dir, run_dir.HISTORY))
  losses = [row.get("val_loss", math.nan) for row in history]
  state = convergence.replay(losses, train["patience"], train["min_delta"],
                             train.get("min_epochs", 1))
  best = int(np.nanargmin(losses)) if history else None
  if state.converged:
    stopped_by = STOPPED_EARLY
  else:
    stopped_by = MAX_EPOCHS if len(history) >= train["epochs"] else BUDGET
  return {"epochs_run": len(history), "max_epochs": train["epochs"],
          "best_epoch": None if best is None else best + 1, "converged": state.converged,
          "stopped_by": stopped_by,
          "best_val_loss": None if best is None else losses[best],
          "last_val_losses": losses[-5:],
          "val_kl_share": None if best is None else history[best].get("val_kl_share")}


def _complete(model_dir):
  """A training step's run is complete: it stopped early or ran all its epochs."""
  try:
    return run_record(model_dir)["stopped_by"] != BUDGET
  except (OSError, ValueError, KeyError):
    return False


def _with_budget(step, deadline):
  """A training step that is complete only when converged, and gets the budget left."""
  model_dir = next(a.split("=", 1)[1] for a in step.args if a.startswith("--model_dir="))
  volatile = None if deadline is None else (
      lambda: (f"--time_budget_minutes={max(0.0, deadline - time.time()) / 60:.3f}",))
  return dataclasses.replace(step, complete=lambda: _complete(model_dir), volatile=volatile)


def _prepared(steps, prefix, deadline):
  return [_with_budget(dataclasses.replace(step, name=f"{prefix}{step.name}"), deadline)
          if step.tool.startswith("train_") else
          dataclasses.replace(step, name=f"{prefix}{step.name}") for step in steps]


def step_groups(plan, deadline=None):
  """[data steps, the first seed's chain, the sweep, the other seeds' chains]: lists of
  demo.Step.

  A later step of a group reruns when an earlier one of the same group ran; groups are
  independent, except that the sweep reads the first seed's runs.
  """
  groups = []
  if plan.data_dir is None:
    data_settings = dataclasses.replace(plan.settings(plan.seeds[0]),
                                        workspace=plan.workspace, data_dir=None)
    groups.append(demo.data_steps(data_settings, demo.paths(data_settings)))
  chains = []
  for seed in plan.seeds:
    settings = plan.settings(seed)
    chains.append(_prepared(demo.model_steps(settings, demo.paths(settings))
                            + [demo.reconstruction_step(settings)],
                            f"seed_{seed}_", deadline))
  # The sweep right after the first seed's chain, whose runs it reads: a budget spent on the
  # later seeds then leaves the trade-off measured.
  return groups + chains[:1] + [_prepared(_sweep_steps(plan), "sweep_", deadline)] + chains[1:]


def _sweep_eval(plan, factor):
  return os.path.join(plan.sweep_dir, "eval", os.path.basename(plan.sweep_run(factor)))


def _sweep_steps(plan):
  settings, seed = plan.settings(plan.seeds[0]), plan.seeds[0]
  steps = []
  for factor in plan.kl_factors:
    run, out = plan.sweep_run(factor), _sweep_eval(plan, factor)
    if factor != STUDY_KL_FACTOR:
      steps.append(demo.training_step(
          f"train_vae_kl{factor:g}", f"trained the VAE at kl_factor {factor:g}", "train_vae",
          (f"--data_dir={plan.data}", f"--model_dir={run}", "--preset=vae_fact5",
           f"--kl_factor={factor:g}", f"--epochs={plan.max_epochs}",
           f"--batch_size={plan.batch_size}", f"--seed={seed}"), run, settings))
    steps.append(demo.Step(
        f"encode_kl{factor:g}", "encoded the test split (z_mean) for the active units",
        "encode", (f"--model_dir={run}", f"--data_dir={plan.data}", "--split=test",
                   f"--output={os.path.join(out, 'z_test.npy')}"),
        (os.path.join(out, "z_test.npy"),)))
    steps.append(demo.Step(
        f"generate_kl{factor:g}", "N(0, I) samples, judged against real test photos",
        "generate", (f"--model_dir={run}", f"--output_dir={os.path.join(out, 'generation')}",
                     f"--data_dir={plan.data}", "--samplers=normal", "--sharpen=1",
                     f"--seed={seed}", f"--num_metric_images={plan.metric_images}"),
        (os.path.join(out, "generation", "generation.json"),)))
  runs = [plan.sweep_run(f) for f in plan.kl_factors] + [_ae_run(plan)]
  out = os.path.join(plan.sweep_dir, "eval", "reconstruction")
  steps.append(demo.Step(
      "compare_reconstructions", "test-split PSNR and SSIM of every factor's VAE and the AE",
      "compare_reconstructions",
      (f"--model_dirs={','.join(runs)}", f"--data_dir={plan.data}", f"--output_dir={out}",
       "--sharpen=1", f"--seed={seed}"), (os.path.join(out, "reconstruction.json"),)))
  return steps


def _ae_run(plan):
  return os.path.join(plan.seed_dir(plan.seeds[0]), "runs", "ae")


def _runs(plan):
  """{seed: {model: run_record}} of the seeds' chains."""
  per_seed = {}
  for seed in plan.seeds:
    runs = os.path.join(plan.seed_dir(seed), "runs")
    per_seed[seed] = {kind: run_record(os.path.join(runs, kind))
                      for kind, _, _ in demo.MODELS
                      if os.path.isdir(os.path.join(runs, kind))}
  return per_seed


def sweep_records(plan):
  """One record per KL factor (kl_factor, run, psnr, ssim, val_kl_share, active_units,
  face_score, fd_face) and the AE sampled from its fitted GMM on the same axes."""
  reconstruction = (demo_report.load_json(os.path.join(plan.sweep_dir, "eval", "reconstruction",
                                       "reconstruction.json")) or {}).get("models", {})
  records = []
  for factor in plan.kl_factors:
    run = plan.sweep_run(factor)
    name, out = os.path.basename(run), _sweep_eval(plan, factor)
    generation = demo_report.load_json(os.path.join(out, "generation", "generation.json"))
    faces = ((generation or {}).get("faces") or {}).get("normal") or {}
    z_path = os.path.join(out, "z_test.npy")
    active = (z_components.active_units(np.load(z_path).astype(np.float64).var(axis=0))
              if os.path.exists(z_path) else None)
    records.append({"kl_factor": factor, "run": os.path.relpath(run, plan.workspace),
                    **_recon(reconstruction.get(name)), **run_record(run),
                    "active_units": active and {"count": active["count"],
                                                "threshold": active["threshold"]},
                    "face_score": faces.get("face_score"), "fd_face": faces.get("fd_face")})
  ae_generation = demo_report.load_json(os.path.join(
      plan.seed_dir(plan.seeds[0]), "eval", "ae", "generation", "generation.json"))
  ae_faces = ((ae_generation or {}).get("faces") or {}).get("gmm")
  ae = {"run": os.path.relpath(_ae_run(plan), plan.workspace), "sampler": "gmm",
        **_recon(reconstruction.get("ae")), "face_score": (ae_faces or {}).get("face_score"),
        "fd_face": (ae_faces or {}).get("fd_face")}
  return records, ae


def _recon(stats):
  if not stats:
    return {"psnr": None, "ssim": None}
  return {"psnr": stats["psnr"]["mean"], "ssim": stats["ssim"]["mean"]}


def tradeoff(records):
  """Where the trade-off lies: the factors whose N(0, I) samples make faces (the interval's
  low end at least study_claims.FACE_THRESHOLD), and the best PSNR among them."""
  faces = [r for r in records if r["face_score"] and r["face_score"]["ci95"][0] is not None
           and r["face_score"]["ci95"][0] >= study_claims.FACE_THRESHOLD]
  best = max(faces, key=lambda r: r["psnr"] or -math.inf, default=None)
  return {"face_threshold": study_claims.FACE_THRESHOLD,
          "factors_making_faces": [r["kl_factor"] for r in faces],
          "smallest_factor_making_faces": min((r["kl_factor"] for r in faces), default=None),
          "best_psnr_making_faces": None if best is None else
          {"kl_factor": best["kl_factor"], "psnr": best["psnr"]}}


def claims_over_seeds(per_seed_rows, per_seed_runs):
  """Combined claim rows: the common verdict, or "inconclusive" when the seeds disagree."""
  combined = []
  seeds = list(per_seed_rows)
  for rows in zip(*per_seed_rows.values()):
    verdicts = {row["verdict"] for row in rows}
    verdict = rows[0]["verdict"] if len(verdicts) == 1 else study_claims.INCONCLUSIVE
    measured = "; ".join(f"seed {s}: {row['measured']}" for s, row in zip(seeds, rows))
    if len(seeds) == 1:
      measured = rows[0]["measured"]
    unconverged = sorted({f"{kind} (seed {s}, {record['stopped_by']})"
                          for s in seeds for kind, record in per_seed_runs[s].items()
                          if not record["converged"]})
    if unconverged:
      measured += f" (not converged: {', '.join(unconverged)})"
    combined.append({**rows[0], "measured": measured, "verdict": verdict,
                     "verdicts_per_seed": [row["verdict"] for row in rows],
                     "models_converged": not unconverged,
                     "not_converged": unconverged})
  return combined


def _fmt(value, spec):
  return "n/a" if value is None else format(value, spec)


def _run_lines(per_seed_runs):
  lines = ["## Convergence", "", "| seed | model | epochs run (max) | best epoch | stopped by | "
           "best val loss | last val losses |", "|---|---|---|---|---|---|---|"]
  for seed, runs in per_seed_runs.items():
    for kind, r in runs.items():
      last = ", ".join(_fmt(v, ".1f") for v in r["last_val_losses"])
      lines.append(f"| {seed} | {kind} | {r['epochs_run']} ({r['max_epochs']}) | "
                   f"{r['best_epoch']} | {r['stopped_by']} | {_fmt(r['best_val_loss'], '.1f')} "
                   f"| {last} |")
  return lines + [""]


def _sweep_lines(records, ae, trade):
  lines = ["## The trade-off: KL factor sweep", "",
           "| kl_factor | epochs (stopped by) | test PSNR dB | test SSIM | val KL share | "
           "active units | N(0, I) face score [95 %] | FD-face [95 %] |",
           "|---|---|---|---|---|---|---|---|"]
  for r in records:
    active = r["active_units"]["count"] if r["active_units"] else None
    mark = " (the study's)" if r["kl_factor"] == STUDY_KL_FACTOR else ""
    lines.append(f"| {r['kl_factor']:g}{mark} | {r['epochs_run']} ({r['stopped_by']}) | "
                 f"{_fmt(r['psnr'], '.2f')} | {_fmt(r['ssim'], '.3f')} | "
                 f"{_fmt(r['val_kl_share'], '.3f')} | {_fmt(active, 'd')} | "
                 f"{face_figures.format_interval(r['face_score'], 'mean', '.3f')} | "
                 f"{face_figures.format_interval(r['fd_face'], 'value', '.3g')} |")
  lines.append(f"| AE + fitted GMM | | {_fmt(ae['psnr'], '.2f')} | {_fmt(ae['ssim'], '.3f')} | "
               f"| | {face_figures.format_interval(ae['face_score'], 'mean', '.3f')} | "
               f"{face_figures.format_interval(ae['fd_face'], 'value', '.3g')} |")
  smallest = trade["smallest_factor_making_faces"]
  lines += ["", "Factors whose N(0, I) samples make faces (face score interval above "
            f"{trade['face_threshold']}): "
            f"{', '.join(f'{f:g}' for f in trade['factors_making_faces']) or 'none'}"
            + ("" if smallest is None else f"; the smallest is {smallest:g}, and the best test "
               f"PSNR among them {trade['best_psnr_making_faces']['psnr']:.2f} dB (kl_factor "
               f"{trade['best_psnr_making_faces']['kl_factor']:g})") + ".",
            "", "![trade-off](tradeoff.png)", ""]
  return lines


def write(plan, results, deadline=None):
  """Writes study.json, study.md and tradeoff.png into the workspace; returns study.md's path."""
  per_seed_runs = _runs(plan)
  per_seed_rows = {}
  for seed in plan.seeds:
    paths = demo.paths(plan.settings(seed))
    per_seed_rows[seed] = study_claims.verdicts(demo_report.study_measurements(paths))
  claims = claims_over_seeds(per_seed_rows, per_seed_runs)
  records, ae = sweep_records(plan)
  trade = tradeoff(records)
  budget_spent = deadline is not None and time.time() >= deadline
  record = {
      "plan": dataclasses.asdict(plan),
      "budget": {"minutes": plan.time_budget_minutes, "spent": budget_spent},
      "seconds": {"ran": sum(r.seconds for r in results if r.status == "ran"),
                  "chain": sum(r.seconds for r in results)},
      "runs": {str(seed): runs for seed, runs in per_seed_runs.items()},
      "claims": claims,
      "claims_per_seed": {str(seed): rows for seed, rows in per_seed_rows.items()},
      "sweep": records, "ae_gmm": ae, "tradeoff": trade,
      "provenance": provenance.describe_run(plan.seeds[0], {}),
  }
  provenance.atomic_write_json(os.path.join(plan.workspace, "study.json"),
                               demo_report.json_safe(record))
  provenance.atomic_write_bytes(os.path.join(plan.workspace, "tradeoff.png"),
                                plots.tradeoff(records, ae, STUDY_KL_FACTOR))
  converged = all(r["converged"] for runs in per_seed_runs.values() for r in runs.values())
  lines = ["# celeba-stream study report", "",
           f"Seeds {', '.join(map(str, plan.seeds))}; early stopping on the validation loss "
           f"(patience {plan.patience}, min_delta {plan.min_delta:g} relative, "
           f"{plan.min_epochs} to {plan.max_epochs} epochs); "
           + ("every model converged." if converged else "NOT every model converged (see "
              "Convergence).") + ("" if plan.time_budget_minutes is None else
                                 f" Time budget {plan.time_budget_minutes:g} min"
                                 + (", spent." if budget_spent else ", not spent.")),
           "", "## The study's claims over seeds", "",
           "A verdict holds over seeds when every seed's does; seeds that disagree make it "
           "inconclusive.", "", *study_claims.markdown_table(claims), "",
           *_run_lines(per_seed_runs), *_sweep_lines(records, ae, trade),
           f"Tool time: {record['seconds']['chain']:.0f} s for the whole chain, "
           f"{record['seconds']['ran']:.0f} s in this run."]
  path = os.path.join(plan.workspace, "study.md")
  provenance.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
  return path
