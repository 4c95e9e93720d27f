"""The demo's Markdown report: one line per step, the key numbers, and the pictures."""

import csv
import json
import os
import shlex


def _load_json(path):
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
  manifest = _load_json(os.path.join(data_dir, "manifest.json"))
  if manifest is None:
    return []
  splits = manifest.get("splits", {})
  counts = ", ".join(f"{name} {info.get('num_examples')}" for name, info in splits.items())
  megabytes = sum(info.get("num_bytes", 0) for info in splits.values()) / 2**20
  size = manifest.get("image_size")
  return ["## Data", "",
          f"- {size}x{size} {manifest.get('encoding')} records: {counts}",
          f"- {len(manifest.get('shards', []))} shards, {megabytes:.1f} MiB; "
          f"{len(manifest.get('skipped', []))} source files skipped", ""]


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
    lines.append(f"- {kind.upper()} after {int(row['epoch']) + 1} epochs: " + ", ".join(shown))
  if not lines:
    return []
  return ["## Training", "", "Losses per image: reconstruction summed over pixels, KL summed "
          "over z; kl_share = kl_factor * KL / total.", "", *lines, ""]


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


def write(workspace, results, paths):
  """Writes WORKSPACE/report.md and returns its path."""
  ran = sum(r.seconds for r in results if r.status == "ran")
  chain = sum(r.seconds for r in results)
  lines = ["# celeba-stream demo report", "",
           f"The whole chain takes {chain:.0f} s of tool time; this run spent {ran:.0f} s and "
           "reused the steps that were complete.",
           "", *_step_lines(results), "", *_data_lines(paths["data"]),
           *_training_lines(paths["runs"]),
           *_picture_lines(workspace, paths)]
  path = os.path.join(workspace, "report.md")
  tmp_path = path + ".tmp"
  with open(tmp_path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp_path, path)
  return path
