"""The demo's Markdown report: one line per step, the key numbers, and the pictures."""

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
    seconds = "reused" if result.status == "reused" else f"{result.seconds:.1f} s"
    lines.append(f"| `{result.step.name}` | {result.step.what} | {seconds} | "
                 f"<code>{shlex.join(result.step.command())}</code> |")
  return lines


def _data_lines(data_dir):
  manifest = _load_json(os.path.join(data_dir, "manifest.json"))
  if manifest is None:
    return []
  splits = manifest.get("splits", {})
  counts = ", ".join(f"{name} {info.get('num_examples')}" for name, info in splits.items())
  skipped = len(manifest.get("skipped", []))
  return ["## Data", "",
          f"- {manifest.get('image_size')}x{manifest.get('image_size')} "
          f"{manifest.get('encoding')} records: {counts}; {skipped} source files skipped",
          f"- shards: {sum(len(s.get('shards', [])) for s in splits.values())}", ""]


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
  total = sum(r.seconds for r in results)
  lines = ["# celeba-stream demo report", "",
           f"Steps ran in {total:.0f} s (reused steps count 0). Rerun `make demo` to reuse them.",
           "", *_step_lines(results), "", *_data_lines(paths["data"]),
           *_picture_lines(workspace, paths)]
  path = os.path.join(workspace, "report.md")
  tmp_path = path + ".tmp"
  with open(tmp_path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp_path, path)
  return path
