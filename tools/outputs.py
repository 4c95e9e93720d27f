"""Writing what a tool's library function returned: its files, the flagfile and the report.

Every write is atomic (a temporary name, then a rename), and the JSON report goes last: a folder
with the report in it is complete. The caller holds the output folder's lock
(data_pipeline.locking) while these run.
"""

import os

from absl import logging

from data_pipeline import locking
from data_pipeline import provenance
from tools import _cli

FLAGFILE = "flags.txt"


def write_report(output_dir, report_name, report, files=None):
  """Writes {file name: bytes}, flags.txt and the report `report_name` into output_dir.

  Args:
    output_dir: the tool's --output_dir (created if missing).
    report_name: the JSON report's file name, e.g. "generation.json".
    report: the JSON-safe report dict.
    files: {file name: bytes} written beside it (grids, plots, arrays).
  """
  os.makedirs(output_dir, exist_ok=True)
  for name, data in (files or {}).items():
    provenance.atomic_write_bytes(os.path.join(output_dir, name), data)
  _cli.write_flagfile(os.path.join(output_dir, FLAGFILE))
  provenance.atomic_write_json(os.path.join(output_dir, report_name), report)


def benchmark_locks(holder, output_json, work_dir=None, output_markdown=None):
  """The locks of every folder a benchmark writes, held for a `with` block from its start.

  A second benchmark writing into one of them is refused at once, not after a long run.

  Args:
    holder: the tool's name, for the refusal (e.g. "benchmark_pipeline").
    output_json: --output_json (its folder is locked).
    work_dir: --work_dir, or None when the benchmark uses a temporary folder.
    output_markdown: --output_markdown, or None (its folder is locked).
  """
  folders = [locking.file_folder(output_json, "--output_json")]
  if work_dir:
    folders.append((work_dir, "--work_dir", None))
  if output_markdown:
    folders.append(locking.file_folder(output_markdown, "--output_markdown"))
  return locking.output_dirs(holder, folders)


def write_benchmark(output_json, report, output_markdown=None):
  """Writes a benchmark's report, its flagfile and Markdown; prints the tables; logs the verdict.

  Args:
    output_json: the report file; `<its stem>.flags.txt` is written beside it.
    report: the benchmark's report dict, with "table" (Markdown), "targets" (each with
      "name" and "passed": True, False or None when not measured) and "elapsed_seconds".
    output_markdown: also write the Markdown tables to this file (None: only print them).
  """
  output_dir = os.path.dirname(os.path.abspath(output_json))
  os.makedirs(output_dir, exist_ok=True)
  stem = os.path.splitext(os.path.basename(output_json))[0]
  _cli.write_flagfile(os.path.join(output_dir, f"{stem}.flags.txt"))
  provenance.atomic_write_json(output_json, report)
  if output_markdown:
    os.makedirs(os.path.dirname(os.path.abspath(output_markdown)), exist_ok=True)
    provenance.atomic_write_bytes(output_markdown, report["table"].encode("utf-8"))
  print(report["table"], end="")
  failed = [t["name"] for t in report["targets"] if t["passed"] is False]
  logging.info("wrote %s in %.0f s; %d of %d targets failed%s", output_json,
               report["elapsed_seconds"], len(failed), len(report["targets"]),
               f" ({', '.join(failed)})" if failed else "")
