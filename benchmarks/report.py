"""What every benchmark report shares: the machine it ran on and how numbers are printed."""

import datetime
import os
import platform


def machine_description():
  """CPU model, cores, RAM, OS, library versions and the date (UTC) of this run."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  try:
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
  except (ValueError, OSError, AttributeError):
    ram_gb = None
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  # Local: the latents child reports its start RSS, which provenance's imports would raise.
  from data_pipeline import provenance
  versions = provenance.library_versions()
  return {
      "cpu_model": cpu,
      "logical_cores": os.cpu_count(),
      "usable_cores": usable,
      "ram_gb": round(ram_gb, 1) if ram_gb else None,
      "platform": platform.platform(),
      "python": versions.get("python"),
      "tensorflow": versions.get("tensorflow") or versions.get("tensorflow-cpu"),
      "keras": versions.get("keras"),
      "numpy": versions.get("numpy"),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def verdict(passed):
  """A target's result for the tables: "pass", "FAIL", or "not measured" (passed is None)."""
  return {True: "pass", False: "FAIL", None: "not measured"}[passed]


def fmt(value, digits=0):
  """A number for the Markdown tables: thousands separators, `digits` decimals; None -> n/a."""
  if value is None:
    return "n/a"
  return f"{value:,.{digits}f}"
