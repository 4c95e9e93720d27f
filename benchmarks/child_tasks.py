"""One measurement per fresh child process: a JSON spec in, a JSON result out.

The benchmarks run each measurement in a process of its own so that its peak memory
(benchmarks.process_memory) is its own and one measurement's caches never warm another's.
The parent calls `run(module, spec, ...)`, which starts `python -m MODULE SPEC.json RESULT.json`;
the child module ends with `sys.exit(child_main(sys.argv, work))`, where `work(spec)` returns
the result dict.
"""

import json
import os
import subprocess
import sys
import tempfile

from evaluation.errors import EvaluationError
from modeling import tf_env


def child_env():
  """The parent's environment, with this repository importable and TensorFlow's C++ logs quiet."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


def run(module, spec, log_path, timeout_s, label, timeout_hint="raise it"):
  """Runs `python -m module` on `spec` in a fresh process; returns its result dict.

  Args:
    module: the child module (ends with `child_main`).
    spec: JSON-able task description.
    log_path: where the child's stdout and stderr go.
    timeout_s: wall-clock limit (--child_timeout_s).
    label: what the child measures, for error messages ("method stream_raw at 10000 images").
    timeout_hint: what to do when it runs out of time.

  Raises:
    EvaluationError: the child failed or ran out of time (its output is in `log_path`).
  """
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  with tempfile.TemporaryDirectory(prefix="celeba_bench_") as tmp:
    spec_path, result_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "result.json")
    with open(spec_path, "w", encoding="utf-8") as f:
      json.dump(spec, f)
    with open(log_path, "w", encoding="utf-8") as log:
      try:
        process = subprocess.run([sys.executable, "-m", module, spec_path, result_path],
                                 stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                 timeout=timeout_s, check=False)
      except subprocess.TimeoutExpired:
        raise EvaluationError(f"{label} ran past --child_timeout_s {timeout_s:g}; "
                              f"{timeout_hint} (log: {log_path})") from None
    if process.returncode != 0 or not os.path.exists(result_path):
      why = " (killed: out of memory?)" if process.returncode in (-9, 137) else ""
      raise EvaluationError(f"{label} failed with exit code {process.returncode}{why}; see "
                            f"{log_path}")
    with open(result_path, "r", encoding="utf-8") as f:
      return json.load(f)


def child_main(argv, work):
  """The child's side: reads SPEC.json, writes work(spec) to RESULT.json atomically."""
  tf_env.enable_onednn()  # The tools' CPU kernels, so that a benchmark measures what they run.
  if len(argv) != 3:
    sys.stderr.write(f"usage: python -m {argv[0]} SPEC.json RESULT.json\n")
    return 2
  with open(argv[1], "r", encoding="utf-8") as f:
    spec = json.load(f)
  result = work(spec)
  tmp_path = argv[2] + ".tmp"
  with open(tmp_path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2, sort_keys=True)
  os.replace(tmp_path, argv[2])
  return 0
