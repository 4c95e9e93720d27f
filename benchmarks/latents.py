"""The latent-evaluation benchmark: exact statistics of ALL z-points, time and peak memory.

Its target: the full correlation of 170,000 x 256 z-points (the study's size; it had to fall back
to numpy.corrcoef on a random 5,000) within 30 s and 1 GB of peak RSS on a small CPU.
`run_benchmark(options)` writes a seeded synthetic float32 z-point file with planted
correlations, chunk by chunk, then measures in a fresh child process (`python -m
benchmarks.latents SPEC.json RESULT.json`, so the peak RSS is the measurement's alone) each
stage: load, the streaming correlation, counts, component statistics, and the study's subset
corrcoef for comparison. `measure(...)` is the child's work and can be called in-process
(tests do, on tiny files). Nothing here imports TensorFlow. docs/benchmarks/README.md explains
the method.
"""

import dataclasses
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import threadpoolctl

from benchmarks import child_tasks
from benchmarks.process_memory import peak_rss_mb
from benchmarks.process_memory import ru_maxrss_mb
from benchmarks.report import fmt
from benchmarks.report import machine_description
from benchmarks.report import verdict
from evaluation import correlation
from evaluation import z_components
from evaluation import zpoints
from evaluation.errors import EvaluationError

_MB = 1e6
STUDY_SUBSET_ROWS = 5000  # The study's numpy.corrcoef sample.
TARGET_SECONDS = 30.0
TARGET_PEAK_RSS_MB = 1000.0
WRITE_CHUNK_ROWS = 8192  # Fixed, so that the file depends on (num_vectors, dim, seed) only.
# (i, j, r): component j is mixed with component i so that their correlation is r exactly (in
# the population); every other pair is independent. Spans the study's thresholds 0.1 .. 0.6.
PLANTED_PAIRS = ((0, 1, 0.9), (2, 3, -0.7), (4, 5, 0.55), (6, 7, 0.35), (8, 9, -0.25),
                 (10, 11, 0.15))
LARGE_OFFSET = 50.0  # One component far off-centre, as a precision check of the streaming pass.


@dataclasses.dataclass(frozen=True)
class Options:
  """What to measure (the tool's flags; see tools/benchmark_latents.py).

  work_dir receives the synthetic Z.npy and the child's measure.log and keeps them; None: a
  temporary folder, removed at the end (only the log is kept when the measurement fails).
  """
  work_dir: str | None = None
  num_vectors: int = 170000
  dim: int = 256
  seed: int = 0
  chunk_rows: int = correlation.DEFAULT_CHUNK_ROWS
  subset_rows: int = STUDY_SUBSET_ROWS
  cold_cache: bool = True
  child_timeout_s: float = 1800.0


def planted_pairs(dim):
  """The PLANTED_PAIRS that fit into `dim` components, as [[i, j, r], ...]."""
  return [[i, j, r] for i, j, r in PLANTED_PAIRS if j < dim]


def write_synthetic(path, num_vectors, dim, seed):
  """Writes seeded synthetic z-points [num_vectors, dim] float32 with planted correlations.

  Rows are independent draws of x ~ N(0, I); for each planted (i, j, r) component j becomes
  r x_i + sqrt(1 - r^2) x_j, so corr(z_i, z_j) = r; then every component gets its own scale
  (0.3 .. 2) and offset (N(0, 1)), and the last one the offset LARGE_OFFSET. Written in chunks
  of WRITE_CHUNK_ROWS, so memory is O(chunk * dim).

  Returns:
    {"path", "num_vectors", "dim", "seed", "bytes", "seconds", "planted_pairs"}.
  """
  if num_vectors < 2 or dim < 2:
    raise EvaluationError(f"the synthetic z-points need at least 2 vectors of 2 components, "
                          f"got {num_vectors} x {dim}")
  started = time.perf_counter()
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.3, 2.0, dim).astype(np.float32)
  offset = rng.normal(0.0, 1.0, dim).astype(np.float32)
  offset[-1] = LARGE_OFFSET
  pairs = planted_pairs(dim)
  with zpoints.ZPointsWriter(path, num_vectors, dim) as writer:
    for start in range(0, num_vectors, WRITE_CHUNK_ROWS):
      rows = min(WRITE_CHUNK_ROWS, num_vectors - start)
      x = rng.standard_normal((rows, dim), dtype=np.float32)
      for i, j, r in pairs:
        x[:, j] = r * x[:, i] + np.sqrt(1.0 - r * r) * x[:, j]
      x *= scale
      x += offset
      writer.append(x)
  return {"path": os.path.abspath(path), "num_vectors": int(num_vectors), "dim": int(dim),
          "seed": int(seed), "bytes": os.path.getsize(path),
          "seconds": time.perf_counter() - started, "planted_pairs": pairs}


def drop_page_cache(path):
  """Asks the kernel to drop the file's cached pages, so that the child reads it from disk.

  Returns:
    True when the request was made (Linux posix_fadvise; the kernel may still keep pages that
    another process maps), False where the platform has no such call.
  """
  if not hasattr(os, "posix_fadvise"):
    return False
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)  # Only clean pages can be dropped.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
  finally:
    os.close(fd)
  return True


def _blas_info():
  """The BLAS libraries numpy uses and their thread counts (threadpoolctl)."""
  return [{k: info.get(k) for k in ("internal_api", "version", "num_threads")}
          for info in threadpoolctl.threadpool_info()]


def measure(path, chunk_rows=correlation.DEFAULT_CHUNK_ROWS, subset_rows=STUDY_SUBSET_ROWS,
            seed=0, pairs=()):
  """Times each stage on the z-point file `path` in this process (docs/benchmarks/README.md).

  Args:
    path: a z-point .npy file.
    chunk_rows: rows per chunk of the streaming passes.
    subset_rows: rows of the numpy.corrcoef comparison (the study's 5,000; fewer if N is).
    seed: seed of the subset (correlation.sample_rows).
    pairs: [[i, j, r], ...] planted pairs whose measured r is reported.

  Returns:
    A JSON-safe dict: "num_vectors", "dim", "dtype", "chunk_rows", "seconds" (per stage and
    the two totals), "start_rss_mb", "peak_rss_mb_after_correlation", "peak_rss_mb", "counts",
    "constant_components", "dominant_components", "subset", "planted", "blas".
  """
  start_rss = peak_rss_mb()
  seconds = {}

  def timed(name, fn):
    began = time.perf_counter()
    value = fn()
    seconds[name] = time.perf_counter() - began
    return value

  z = timed("load", lambda: zpoints.load_z_points(path))
  acc = timed("accumulate", lambda: correlation.accumulate(z, chunk_rows=chunk_rows))
  r = timed("correlation", acc.correlation)
  counts = timed("counts", lambda: correlation.counts_above(r, correlation.DEFAULT_THRESHOLDS))
  seconds["full_correlation"] = sum(seconds[k] for k in ("load", "accumulate", "correlation",
                                                         "counts"))
  rss_after_correlation = peak_rss_mb()
  components, _, _ = timed("statistics", lambda: z_components.component_statistics(
      z, acc, chunk_rows=chunk_rows))
  seconds["correlation_and_statistics"] = seconds["full_correlation"] + seconds["statistics"]

  num_subset = min(int(subset_rows), len(z))
  rows = correlation.sample_rows(len(z), num_subset, seed)
  subset = timed("subset_gather", lambda: np.asarray(z if rows is None else z[rows], np.float64))
  r_subset = timed("subset_corrcoef", lambda: np.corrcoef(subset, rowvar=False))
  upper = np.triu_indices(len(r), k=1)
  # numpy gives NaN for constant components; compare the pairs both define.
  difference = np.abs(r_subset[upper] - r[upper])
  difference = difference[np.isfinite(difference)]
  return {
      "num_vectors": int(z.shape[0]), "dim": int(z.shape[1]), "dtype": str(z.dtype),
      "chunk_rows": int(chunk_rows), "seconds": seconds, "start_rss_mb": start_rss,
      "peak_rss_mb_after_correlation": rss_after_correlation, "peak_rss_mb": peak_rss_mb(),
      "ru_maxrss_mb": ru_maxrss_mb(),
      "counts": counts, "constant_components": int(len(acc.constant_components())),
      "dominant_components": z_components.dominant_components(components)["count"],
      "subset": {"rows": num_subset, "seed": int(seed),
                 "counts": correlation.counts_above(np.nan_to_num(r_subset),
                                                    correlation.DEFAULT_THRESHOLDS),
                 "max_abs_difference": float(difference.max()) if difference.size else None},
      "planted": [{"pair": [int(i), int(j)], "planted_r": float(rho), "r": float(r[i, j]),
                   "subset_r": float(r_subset[i, j])} for i, j, rho in pairs],
      "blas": _blas_info(),
  }


def run_child(spec, log_path, timeout_s):
  """Runs `measure(**spec)` in a fresh process; returns its result dict.

  Raises:
    EvaluationError: the child failed or ran out of time (its output is in `log_path`).
  """
  return child_tasks.run("benchmarks.latents", spec, log_path, timeout_s,
                         "the measuring process")


def _target(name, description, value, threshold):
  return {"name": name, "description": description, "value": value, "threshold": threshold,
          "passed": bool(value <= threshold)}


def evaluate_targets(result):
  """The targets (lower is better) with pass/fail."""
  seconds = result["seconds"]
  size = f"{result['num_vectors']:,} x {result['dim']}"
  return [
      _target("full_correlation_seconds", f"load + accumulate + correlation + counts of all "
              f"{size} z-points, s", seconds["full_correlation"], TARGET_SECONDS),
      _target("correlation_and_statistics_seconds", "the above + component_statistics of all "
              "z-points, s", seconds["correlation_and_statistics"], TARGET_SECONDS),
      _target("peak_rss_mb", "peak RSS of the measuring process, MB (10**6 bytes)",
              result["peak_rss_mb"], TARGET_PEAK_RSS_MB),
  ]


def run_benchmark(options):
  """Writes the synthetic z-points, measures them in a child process; returns the report dict.

  The file is `options.work_dir`/Z.npy (replaced if present); the child's output goes to
  `options.work_dir`/measure.log. Without a work_dir both go to a temporary folder that is
  removed afterwards (after a failure the log that the error names is kept), and the report's
  paths to them are null.

  Raises:
    EvaluationError: bad sizes, or a child that failed (naming its log).
  """
  if options.work_dir:
    return _measure(options)
  temporary = tempfile.mkdtemp(prefix="benchmark_latents_")
  try:
    report = _measure(dataclasses.replace(options, work_dir=temporary))
  except BaseException:
    _remove(os.path.join(temporary, "Z.npy"))  # Keep the log the error names; drop the big file.
    raise
  shutil.rmtree(temporary, ignore_errors=True)
  # Gone; paths that no longer exist would mislead.
  report["inputs"]["work_dir"] = report["synthetic"]["path"] = None
  return report


def _remove(path):
  try:
    os.remove(path)
  except OSError:
    pass


def _measure(options):
  """run_benchmark in options.work_dir."""
  # Local: the latents child reports its start RSS, which provenance's imports would raise.
  from data_pipeline import provenance
  started = time.time()
  work_dir = os.path.abspath(options.work_dir)
  os.makedirs(work_dir, exist_ok=True)
  synthetic = write_synthetic(os.path.join(work_dir, "Z.npy"), options.num_vectors,
                              options.dim, options.seed)
  dropped = drop_page_cache(synthetic["path"]) if options.cold_cache else False
  spec = {"path": synthetic["path"], "chunk_rows": int(options.chunk_rows),
          "subset_rows": int(options.subset_rows), "seed": int(options.seed),
          "pairs": synthetic["planted_pairs"]}
  result = run_child(spec, os.path.join(work_dir, "measure.log"), options.child_timeout_s)
  report = {
      "benchmark": "latents", "format_version": 1,
      "machine": machine_description(),
      "inputs": {**dataclasses.asdict(options), "work_dir": work_dir,
                 "page_cache": "dropped before the child started" if dropped else "warm"},
      "synthetic": synthetic,
      "seconds": result["seconds"],
      "peak_rss_mb": result["peak_rss_mb"],
      "results": result,
      "targets": evaluate_targets(result),
      "elapsed_seconds": time.time() - started,
      "provenance": provenance.describe_run(options.seed),
  }
  report["table"] = markdown(report)
  return report


def markdown(report):
  """The report's Markdown: machine, inputs, seconds per stage, targets, planted pairs."""
  machine, inputs, result = report["machine"], report["inputs"], report["results"]
  synthetic, seconds = report["synthetic"], report["seconds"]
  blas = ", ".join(f"{b['internal_api']} {b['version']} x{b['num_threads']}"
                   for b in result.get("blas") or []) or "unknown"
  subset = result["subset"]
  lines = [
      f"Machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores "
      f"({machine['usable_cores']} usable), {fmt(machine['ram_gb'], 1)} GB RAM; NumPy "
      f"{machine['numpy']}, BLAS {blas}; {machine['date']}.",
      f"Z-points: synthetic {synthetic['num_vectors']:,} x {synthetic['dim']} float32 "
      f"({synthetic['bytes'] / _MB:,.0f} MB on disk, seed {synthetic['seed']}, "
      f"{len(synthetic['planted_pairs'])} planted correlated pairs); chunks of "
      f"{result['chunk_rows']:,} rows; page cache {inputs['page_cache']}; measured in one "
      "fresh process.",
      "",
      "| stage | seconds |",
      "|---|---|",
      f"| load_z_points (memory map + NaN/Inf scan) | {fmt(seconds['load'], 2)} |",
      f"| correlation.accumulate (all rows) | {fmt(seconds['accumulate'], 2)} |",
      f"| StreamingCorrelation.correlation() | {fmt(seconds['correlation'], 3)} |",
      f"| counts_above ({len(result['counts'])} thresholds) | {fmt(seconds['counts'], 3)} |",
      f"| **full correlation** | **{fmt(seconds['full_correlation'], 2)}** |",
      f"| z_components.component_statistics (all rows) | {fmt(seconds['statistics'], 2)} |",
      f"| **correlation + statistics** | **{fmt(seconds['correlation_and_statistics'], 2)}** |",
      f"| study: gather {subset['rows']:,} random rows | {fmt(seconds['subset_gather'], 3)} |",
      f"| study: numpy.corrcoef of {subset['rows']:,} rows | "
      f"{fmt(seconds['subset_corrcoef'], 3)} |",
      "",
      f"Peak RSS {fmt(result['peak_rss_mb'])} MB ({fmt(result['start_rss_mb'])} MB after the "
      f"imports, {fmt(result['peak_rss_mb_after_correlation'])} MB after the correlation; "
      f"VmHWM; getrusage's ru_maxrss, which starts at the parent's peak, says "
      f"{fmt(result['ru_maxrss_mb'])} MB).",
      "",
      "| target | value | threshold | result |",
      "|---|---|---|---|",
  ]
  for t in report["targets"]:
    lines.append(f"| {t['name']} | {fmt(t['value'], 2)} | {t['threshold']:g} | "
                 f"{verdict(t['passed'])} |")
  counts = result["counts"]
  lines += ["", "| threshold | pairs with abs(r) above, all rows | "
            f"{subset['rows']:,} rows |", "|---|---|---|"]
  for label, count in counts.items():
    lines.append(f"| {label} | {count} | {subset['counts'][label]} |")
  if result["planted"]:
    lines += ["", f"| planted pair | planted r | r, all rows | r, {subset['rows']:,} rows |",
              "|---|---|---|---|"]
    for p in result["planted"]:
      lines.append(f"| {p['pair'][0]}, {p['pair'][1]} | {p['planted_r']:g} | {p['r']:.4f} | "
                   f"{p['subset_r']:.4f} |")
  lines.append(f"\nLargest abs difference between the {subset['rows']:,}-row and the "
               f"all-row r: {fmt(subset['max_abs_difference'], 4)}.")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.exit(child_tasks.child_main(sys.argv, lambda spec: measure(**spec)))
