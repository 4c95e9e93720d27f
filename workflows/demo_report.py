"""The demo's report: the study's claims table, one line per step, the key numbers, pictures.

`write` writes WORKSPACE/report.md and WORKSPACE/study.json (the claims' rows and the
measurements they were judged on; evaluation/study_claims.py holds the rules).
"""

import csv
import json
import os
import shlex

from data_pipeline import provenance
from evaluation import face_figures
from evaluation import study_claims
from modeling import flag_choices


def load_json(path):
  """The JSON at `path`, or None when it is missing or unreadable (a step that did not run)."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _step_lines(results):
  lines = ["| step | what it did | time | |", "|---|---|---|---|"]
  for result in results:
    seconds = f"{result.seconds:.1f} s" + (" (earlier run, reused)" if result.status == "reused"
                                           else "")
    lines.append(f"| `{result.step.name}` | {result.step.what} | {seconds} | "
                 f"<code>{shlex.join(result.step.command())}</code> |")
  return lines


def _data_lines(data_dir):
  manifest = load_json(os.path.join(data_dir, "manifest.json"))
  if manifest is None:
    return []
  splits = manifest.get("splits", {})
  counts = ", ".join(f"{name} {info.get('num_examples')}" for name, info in splits.items())
  megabytes = sum(info.get("num_bytes", 0) for info in splits.values()) / 2**20
  size = manifest.get("image_size")
  source = manifest.get("source", {})
  return ["## Data", "",
          f"- {size}x{size} {manifest.get('encoding')} records: {counts}",
          f"- {len(manifest.get('shards', []))} shards, {megabytes:.1f} MiB; "
          f"{_num_skipped(manifest)} source files skipped",
          f"- source: {source.get('layout') or source.get('kind')} ({source.get('path')})", ""]


def _num_skipped(manifest):
  summary = manifest.get("skipped_summary")
  return summary["num_skipped"] if summary else len(manifest.get("skipped", []))


def _reconstruction_lines(eval_dir):
  """PSNR / SSIM of each model on the evaluated split (the test split in the demo)."""
  report = load_json(os.path.join(eval_dir, "reconstruction", "reconstruction.json"))
  if report is None:
    return []
  lines = ["## Reconstruction quality", "",
           f"On the {report.get('split')} split ({report.get('num_images')} images), mean over "
           "images (higher is better):", "",
           "| model | PSNR (dB) | SSIM | reconstruction loss per image |", "|---|---|---|---|"]
  for name, stats in report.get("models", {}).items():
    lines.append(f"| {name} | {stats['psnr']['mean']:.2f} | {stats['ssim']['mean']:.3f} | "
                 f"{stats['reconstruction_loss']['mean']:.1f} |")
  return lines + [""]


def _generation_lines(eval_dir):
  """The notes of each model's generation run (e.g. which attribute the sampler used)."""
  lines = []
  for kind in sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []:
    report = load_json(os.path.join(eval_dir, kind, "generation", "generation.json"))
    if report is None:
      continue
    ran = ", ".join(report.get("flags", {}).get("samplers_run", []))
    lines.append(f"- {kind.upper()}: samplers {ran}")
    lines += [f"  - {note}" for note in report.get("notes", [])]
  return ["## Generation", "", *lines, ""] if lines else []


def _last_row(history_path):
  try:
    with open(history_path, encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
  except OSError:
    return None
  return rows[-1] if rows else None


def _training_lines(runs_dir):
  """Last epoch's losses per run (per image, in the training units)."""
  lines = []
  for kind in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
    row = _last_row(os.path.join(runs_dir, kind, "history.csv"))
    if row is None:
      continue
    shown = [f"{key} {float(row[key]):.4g}" for key in
             ("loss", "val_loss", "val_reconstruction_loss", "val_kl_loss", "val_kl_share")
             if row.get(key)]
    config = load_json(os.path.join(runs_dir, kind, "config.json")) or {}
    mode = config.get("train", {}).get("mixed_precision")
    precision = flag_choices.PRECISION_NAMES.get(mode, "precision unknown")
    if mode in ("bf16", "fp16"):
      precision += " mixed precision"
    epochs = int(row["epoch"]) + 1
    plural = "s" if epochs != 1 else ""
    lines.append(f"- {kind.upper()} ({precision}) after {epochs} epoch{plural}: "
                 + ", ".join(shown))
  if not lines:
    return []
  return ["## Training", "", "Losses per image in the study's units: reconstruction = the "
          "binary cross-entropy averaged over the 3 channels and summed over the pixels (its "
          "floor, a perfect reconstruction, is the targets' entropy: ~4,440 on real CelebA "
          "crops), KL summed over z; total = reconstruction + kl_factor x KL; kl_share = "
          "kl_factor x KL / total.", "", *lines, ""]


def _relative(path, workspace):
  return os.path.relpath(path, workspace).replace(os.sep, "/")


def _picture_lines(workspace, paths):
  pictures = []
  for root, _, files in os.walk(paths["eval"]):
    pictures += [os.path.join(root, name) for name in sorted(files) if name.endswith(".png")]
  if not pictures:
    return []
  lines = ["## Pictures", ""]
  for picture in sorted(pictures):
    rel = _relative(picture, workspace)
    lines += [f"### {rel}", "", f"![{rel}]({rel})", ""]
  return lines


def _history_numbers(runs_dir, kind):
  row = _last_row(os.path.join(runs_dir, kind, "history.csv"))
  if row is None:
    return {}
  pick = lambda key: float(row[key]) if row.get(key) not in (None, "", "NA") else None
  return {"val_loss": pick("val_loss"), "val_kl_share": pick("val_kl_share")}


def _kl_factor(runs_dir, kind):
  config = load_json(os.path.join(runs_dir, kind, "config.json")) or {}
  return config.get("model", {}).get("kl_factor")


def study_measurements(paths):
  """The run's numbers in the form evaluation.study_claims.verdicts takes (missing: absent)."""
  runs, evaluation_dir = paths["runs"], paths["eval"]
  measured = {}
  latents = load_json(os.path.join(evaluation_dir, "ae", "latents", "latent_report.json"))
  if latents is not None:
    measured["ae"] = study_claims.latent_summary(latents)
  ae, vae = _history_numbers(runs, "ae"), _history_numbers(runs, "vae")
  measured["losses"] = {"ae": ae.get("val_loss"), "vae": vae.get("val_loss")}
  if vae.get("val_kl_share") is not None:
    measured["vae"] = {"kl_share": vae["val_kl_share"], "kl_factor": _kl_factor(runs, "vae")}
  faces = {}
  for kind in ("ae", "vae"):
    generation = load_json(os.path.join(evaluation_dir, kind, "generation", "generation.json"))
    summary = (generation or {}).get("faces") or {}
    for key, figures in summary.items():
      if key in flag_choices.DRAWN_SAMPLERS or key == "uniform":
        faces[f"{kind}_{key}"] = figures
      else:  # A calibration set: the same real photos for both models.
        faces.setdefault(key, figures)
    if kind == "vae" and (generation or {}).get("sharpening"):
      measured["sharpening"] = {float(f): v for f, v in generation["sharpening"].items()}
  measured["faces"] = faces
  measured["upsampling"] = {}
  for kind, label in (("vae", "transpose"), ("vae_upsample", "upsample")):
    generation = load_json(os.path.join(evaluation_dir, kind, "generation", "generation.json"))
    unchanged = ((generation or {}).get("sharpening") or {}).get("1")
    if unchanged:
      measured["upsampling"][label] = unchanged["checkerboard_energy"]
  reconstruction = load_json(os.path.join(evaluation_dir, "reconstruction",
                                           "reconstruction.json"))
  if reconstruction is not None:
    measured["reconstruction"] = {
        name: {"psnr": stats["psnr"]["mean"], "ssim": stats["ssim"]["mean"],
               "face_score": (stats.get("face") or {}).get("face_score")}
        for name, stats in reconstruction.get("models", {}).items()}
  return measured


def _claims_lines(rows):
  return ["## The study's claims, measured", "",
          "Verdicts from this run's numbers only (evaluation/study_claims.py; a short run on "
          "synthetic cartoon faces need not bear a claim out). Face scores are MTCNN's face "
          "probability times the realism of its face features against real test photos times "
          "its distinctness in its set (a repeated face counts once), mean [95 % bootstrap "
          "interval] (evaluation/face_figures.py).", "",
          *study_claims.markdown_table(rows), ""]


CALIBRATION_SETS = ("real", "blur_1", "blur_2", "blur_4", "mean_face", "mean_face_noise",
                    "noise")


def _calibration_lines(faces):
  """The face judge's figures on the calibration sets: what every face figure is read against."""
  present = [name for name in CALIBRATION_SETS if faces.get(name)]
  if not present:
    return []
  lines = ["## The face judge's calibration", "",
           "The same figures on held-out real test photos, the same blurred (Gaussian sigma in "
           "pixels at 96x96), the training split's mean face (copies; with pixel noise) and "
           "uniform noise; a model's figures are read against these.", "",
           "| set | images | face rate | face score [95 %] | FD-face [95 %] |",
           "|---|---|---|---|---|"]
  for name in present:
    block = faces[name]
    rate = "n/a" if block["face_rate"] is None else f"{block['face_rate']:.2f}"
    lines.append(f"| {name} | {block['num_images']} | {rate} | "
                 f"{face_figures.format_interval(block['face_score'], 'mean', '.3g')} | "
                 f"{face_figures.format_interval(block['fd_face'], 'value', '.3g')} |")
  return lines + [""]


def write(workspace, results, paths):
  """Writes WORKSPACE/report.md and WORKSPACE/study.json; returns the report's path."""
  measured = study_measurements(paths)
  rows = study_claims.verdicts(measured)
  provenance.atomic_write_json(os.path.join(workspace, "study.json"),
                               {"claims": rows, "measurements": json_safe(measured)})
  ran = sum(r.seconds for r in results if r.status == "ran")
  chain = sum(r.seconds for r in results)
  lines = ["# celeba-stream demo report", "", *_claims_lines(rows),
           *_calibration_lines(measured["faces"]),
           f"The whole chain takes {chain:.0f} s of tool time; this run spent {ran:.0f} s and "
           "reused the steps that were complete.",
           "", *_step_lines(results), "", *_data_lines(paths["data"]),
           *_training_lines(paths["runs"]), *_reconstruction_lines(paths["eval"]),
           *_generation_lines(paths["eval"]),
           *_picture_lines(workspace, paths)]
  path = os.path.join(workspace, "report.md")
  tmp_path = path + ".tmp"
  with open(tmp_path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp_path, path)
  return path


def json_safe(value):
  """Measurements as JSON: dict keys as strings, NaN/inf as null."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
    return None
  return value


def missing_numbers(workspace, split, models, num_images=None):
  """What the demo's report lacks of the reconstruction numbers CI expects; [] when complete.

  Args:
    workspace: the demo's workspace (report.md and eval/reconstruction/ inside).
    split: the split the numbers must be on (the demo evaluates "test").
    models: the model names that need a PSNR and SSIM row (the demo's "ae", "vae").
    num_images: the split's expected image count, or None to accept any.
  """
  problems = []
  report = load_json(os.path.join(workspace, "eval", "reconstruction", "reconstruction.json"))
  try:
    with open(os.path.join(workspace, "report.md"), encoding="utf-8") as f:
      text = f.read()
  except OSError:
    return [f"{workspace}/report.md is missing"]
  if report is None:
    return [f"{workspace}/eval/reconstruction/reconstruction.json is missing or unreadable"]
  study = load_json(os.path.join(workspace, "study.json"))
  if not study or len(study.get("claims", [])) != len(study_claims.CLAIMS):
    problems.append(f"{workspace}/study.json lacks the {len(study_claims.CLAIMS)} claims")
  if "## The study's claims, measured" not in text:
    problems.append("report.md lacks the claims table")
  if report.get("split") != split:
    problems.append(f"reconstruction.json is on the {report.get('split')} split, not {split}")
  if num_images is not None and report.get("num_images") != num_images:
    problems.append(f"reconstruction.json covers {report.get('num_images')} images, not "
                    f"{num_images}")
  for name in models:
    stats = report.get("models", {}).get(name)
    if stats is None:
      problems.append(f"reconstruction.json has no model {name}")
      continue
    row = f"| {name} | {stats['psnr']['mean']:.2f} | {stats['ssim']['mean']:.3f} |"
    if row not in text:
      problems.append(f"report.md lacks the row {row!r}")
  return problems

