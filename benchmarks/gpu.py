"""The GPU check: train images/s per preset, batch size, precision and XLA, the GPU memory
peak, and whether the stream from the shards keeps the GPU fed.

    python -m benchmarks.gpu --data_dir=/tmp/faces96 --output_json=gpu_check.json

benchmarks/gpu_check.sh runs it on a fresh GPU machine (install, synthetic data, this). One fresh
child process per (preset, batch size) measures every precision with XLA off and on
(`measure_config`): fit's compiled train function on one constant batch, then on the stream from
the shards; ratio = stream images/s / constant images/s. A config that fails (out of memory,
XLA or bf16 unsupported) becomes a row with its error text. The parent loads no TensorFlow.
docs/benchmarks/README.md explains the method in full.
"""

import dataclasses
import gc
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

from absl import flags

from benchmarks import child_tasks
from benchmarks import report as report_lib
from benchmarks.process_memory import peak_rss_mb
from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from data_pipeline.errors import DataError
from evaluation.errors import EvaluationError
from modeling import config as config_lib
from modeling import flag_choices
from modeling import tf_env
from modeling.errors import ModelError

# TensorFlow, and our modules that load it, are imported inside the functions the child
# processes run: the parent loads none (docs/ARCHITECTURE.md, Imports).

PROGRAM = "python -m benchmarks.gpu"
CHILD_MODULE = "benchmarks.gpu"
PRESETS = tuple(config_lib.PRESETS)
# This benchmark's precision names (the reports') -> modeling.devices' mixed-precision modes.
PRECISION_MODES = {name: mode for mode, name in flag_choices.PRECISION_NAMES.items()}
PRECISIONS = tuple(PRECISION_MODES)
XLA_CHOICES = {"both": (False, True), "off": (False,), "on": (True,)}
STREAM_VS_CONSTANT = 0.95  # Target: the stream keeps the GPU fed.
# The order in which a child measures its configs: the trainers' defaults first (their "auto"
# precision is bf16 on compute capability >= 8.0 and float32 below, without XLA), so that when
# --budget_s runs out, the configs left out are the least used ones.
CONFIG_PRIORITY = (("bf16", False), ("float32", False), ("bf16", True), ("float32", True),
                   ("fp16", False), ("fp16", True))
# Stream warm-up steps beyond --warmup_steps, on top of one per usable core (see the module
# docstring, step 3): prefetch's own buffer and batches in flight.
STREAM_EXTRA_WARMUP = 4
# A child killed at the time budget gets this long past it to finish its config's timing.
KILL_GRACE_S = 15.0
_MB = 1e6
_ERROR_CHARS = 400  # TensorFlow's errors run to pages; the first line names what failed.

DEFINITIONS = {
    "constant_images_per_s": "images/s of --steps calls of fit's compiled train function "
                             "(model.train_function) on an iterator that repeats one batch, "
                             "after --warmup_steps untimed calls (tracing, XLA compilation).",
    "stream_images_per_s": "the same fed by data_pipeline.make_dataset over the raw shards "
                           "(shuffled, repeating, autotuning off as modeling.training feeds "
                           "fit), after stream_warmup_steps untimed calls.",
    "ratio": f"stream_images_per_s / constant_images_per_s; >= {STREAM_VS_CONSTANT} means the "
             "stream keeps the GPU fed.",
    "first_step_seconds": "the first call of the train function: tracing, XLA compilation "
                          "when on, GPU kernel autotuning, and one step.",
    "gpu_memory_peak_mb": "tf.config.experimental.get_memory_info('GPU:0')['peak'] over the "
                          "config (both feeds), in MB (10**6 bytes), after "
                          "reset_memory_stats; null without a GPU.",
    "gpu_memory_start_mb": "GPU memory in use when the config started (left over from the "
                           "child's earlier configs), in MB.",
    "peak_rss_mb": "the child process's peak RSS so far, in MB: it grows over the configs of "
                   "one child.",
    "status": "ok, failed (error holds the first line of the error), or skipped (--budget_s "
              "ran out before the config started).",
}


@dataclasses.dataclass(frozen=True)
class Options:
  """What to measure; each field is the flag of its name (below, `_FLAGS`)."""
  data_dir: str
  output_json: str
  presets: tuple = PRESETS
  batch_sizes: tuple = (128, 512)
  precisions: tuple = PRECISIONS
  xla: str = "both"
  steps: int = 20
  warmup_steps: int = 3
  shuffle_buffer: int = 1024
  seed: int = 0
  budget_s: float | None = None
  child_timeout_s: float = 1800.0
  logs_dir: str | None = None
  allow_cpu: bool = False


# ---------------------------------------------------------------------------------------------
# Parent side: plans, budget, rows, targets, tables (no TensorFlow).


def config_plan(precisions, xla_modes):
  """The (precision, xla) configs one child measures, in CONFIG_PRIORITY order.

  Args:
    precisions: names from PRECISIONS.
    xla_modes: XLA settings to measure, a subset of (False, True).

  Returns:
    [(precision, xla)], e.g. [("bf16", False), ("float32", False)].
  """
  return [(p, x) for p, x in CONFIG_PRIORITY if p in precisions and x in xla_modes]


def child_specs(options, image_size):
  """One child spec per (batch size, preset): batch sizes outer, so that a time budget that
  runs out leaves every preset measured at the first batch size.

  Args:
    options: Options.
    image_size: side S of the data dir's images (pixels); the models are built for it.

  Returns:
    A list of JSON-able dicts (the child's `measure` task).
  """
  configs = config_plan(options.precisions, XLA_CHOICES[options.xla])
  return [{"task": "measure", "preset": preset, "batch_size": batch_size,
           "configs": [list(c) for c in configs], "data_dir": os.path.abspath(options.data_dir),
           "image_size": image_size, "steps": options.steps,
           "warmup_steps": options.warmup_steps, "shuffle_buffer": options.shuffle_buffer,
           "seed": options.seed}
          for batch_size in options.batch_sizes for preset in options.presets]


def child_label(spec):
  """A child's name in logs and messages: "ae_z256@128"."""
  return f"{spec['preset']}@{spec['batch_size']}"


def child_deadline(now, deadline, children_left):
  """When a child should stop starting configs: an equal share of the time left.

  A child that finishes early leaves its unused share to the ones after it.

  Args:
    now: time.time() now (s).
    deadline: time.time() at which the whole budget ends (s), or None for no budget.
    children_left: children still to run, this one included (>= 1).

  Returns:
    The child's deadline (time.time() seconds), or None without a budget.
  """
  if deadline is None:
    return None
  return now + max(deadline - now, 0.0) / children_left


def empty_row(spec, precision, xla, status, error=None):
  """A row with every field of a measured one, the measurements None."""
  return {"preset": spec["preset"], "batch_size": spec["batch_size"], "precision": precision,
          "xla": bool(xla), "status": status, "error": error, "error_type": None,
          "compute_dtype": None, "parameters": None, "steps": spec["steps"],
          "warmup_steps": spec["warmup_steps"], "stream_warmup_steps": None,
          "first_step_seconds": None, "constant_seconds": None, "constant_images_per_s": None,
          "stream_seconds": None, "stream_images_per_s": None, "ratio": None, "loss": None,
          "loss_finite": None, "gpu_memory_start_mb": None, "gpu_memory_peak_mb": None,
          "peak_rss_mb": None, "seconds": None}


def complete_rows(spec, done_rows, status, error):
  """`done_rows` plus an `empty_row` of `status` for every planned config they lack.

  Args:
    spec: the child's spec (its "configs" are the plan).
    done_rows: rows the child finished (from its result, or its progress file if it died).
    status: "failed" or "skipped", for the configs without a row.
    error: why they have none (one line).

  Returns:
    One row per planned config, in the plan's order.
  """
  by_config = {(r["precision"], r["xla"]): r for r in done_rows}
  return [by_config.get((p, bool(x))) or empty_row(spec, p, x, status, error)
          for p, x in spec["configs"]]


def _read_progress(path):
  """The rows a child appended to its progress file (JSON lines; a torn last line is dropped)."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, "r", encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:
        break  # Killed mid-write.
  return rows


def _run_child(spec, logs_dir, timeout_s, budgeted):
  """One child's rows; a child that fails or is killed keeps the rows it finished."""
  label = child_label(spec)
  progress = os.path.join(logs_dir, f"{label}.rows.jsonl")
  if os.path.exists(progress):
    os.remove(progress)
  spec = dict(spec, progress_path=progress)
  hint = ("it was stopped at the --budget_s time budget" if budgeted
          else "raise --child_timeout_s")
  try:
    result = child_tasks.run(CHILD_MODULE, spec, os.path.join(logs_dir, f"{label}.log"),
                             timeout_s, f"the GPU check of {label}", hint)
  except EvaluationError as error:
    return complete_rows(spec, _read_progress(progress), "failed", str(error))
  return complete_rows(spec, result["rows"], "failed", "missing from the child's result")


def run_children(specs, logs_dir, child_timeout_s, budget_s=None, clock=time.time):
  """Runs every spec in a fresh child process; returns all rows, one per planned config.

  Args:
    specs: from `child_specs`.
    logs_dir: where each child's log and progress file go.
    child_timeout_s: wall-clock limit per child (s).
    budget_s: seconds for all children together, or None. Each child gets an equal share of
      what is left (`child_deadline`) to start configs in, and is killed KILL_GRACE_S after the
      whole budget ends; children that no longer fit are skipped.
    clock: time.time, or a fake in tests.

  Returns:
    A list of row dicts (`empty_row`'s fields).
  """
  os.makedirs(logs_dir, exist_ok=True)
  deadline = None if budget_s is None else clock() + budget_s
  rows = []
  for index, spec in enumerate(specs):
    timeout_s = child_timeout_s
    if deadline is not None:
      left = deadline - clock()
      if left <= 0:
        rows += complete_rows(spec, [], "skipped", "not started: --budget_s ran out")
        continue
      spec = dict(spec, deadline=child_deadline(clock(), deadline, len(specs) - index))
      timeout_s = min(child_timeout_s, left + KILL_GRACE_S)
    _log(f"measuring {child_label(spec)}: {len(spec['configs'])} configs")
    done = _run_child(spec, logs_dir, timeout_s, deadline is not None)
    for row in done:
      _log(f"  {config_name(row)}: {row_outcome(row)}")
    rows += done
  return rows


def row_outcome(row):
  """One row in words, for the progress log."""
  if row["status"] != "ok":
    return f"{row['status']}: {row['error']}"
  return (f"constant {report_lib.fmt(row['constant_images_per_s'])} images/s, stream "
          f"{report_lib.fmt(row['stream_images_per_s'])}, ratio {row['ratio']:.3f}, GPU peak "
          f"{report_lib.fmt(row['gpu_memory_peak_mb'])} MB, first step "
          f"{row['first_step_seconds']:.1f} s")


def row_sort_key(row):
  """Preset, batch size, precision, then XLA off before on."""
  return (PRESETS.index(row["preset"]) if row["preset"] in PRESETS else len(PRESETS),
          row["batch_size"], PRECISIONS.index(row["precision"]), row["xla"])


def config_name(row):
  """A config's name: "ae_z256@128/bf16/xla" or ".../no_xla"."""
  return (f"{row['preset']}@{row['batch_size']}/{row['precision']}/"
          f"{'xla' if row['xla'] else 'no_xla'}")


def evaluate_targets(rows):
  """One target per config: stream_vs_constant:<config>, passed None when not measured."""
  targets = []
  for row in rows:
    ratio = row["ratio"]
    targets.append({
        "name": f"stream_vs_constant:{config_name(row)}",
        "description": f"{config_name(row)}: train images/s fed from the shards / fed from "
                       "a constant batch", "value": ratio, "threshold": STREAM_VS_CONSTANT,
        "passed": None if ratio is None else ratio >= STREAM_VS_CONSTANT})
  return targets


def summarize(rows, targets):
  """Counts: configs by status, and targets passed, failed and not measured."""
  statuses = [r["status"] for r in rows]
  verdicts = [t["passed"] for t in targets]
  return {"configs": len(rows), "ok": statuses.count("ok"),
          "failed": statuses.count("failed"), "skipped": statuses.count("skipped"),
          "targets_passed": verdicts.count(True), "targets_failed": verdicts.count(False),
          "targets_not_measured": verdicts.count(None)}


def _note(row, width=60):
  """The table's last column: a failure's error (shortened), else nothing."""
  if row["status"] == "ok":
    return "" if row["loss_finite"] else "loss not finite"
  text = f"{row['status']}: {row['error'] or ''}".replace("|", "/")
  return text if len(text) <= width else text[:width - 3] + "..."


def markdown_lines(rows, machine):
  """The Markdown table of the rows, headed by the GPU and TensorFlow it ran on."""
  gpus = ", ".join(f"{g['device_name']} (compute capability {g['compute_capability']})"
                   for g in machine.get("gpus") or []) or "no GPU (CPU only)"
  lines = [f"GPU check: {gpus}; TensorFlow {machine.get('tensorflow')}, Keras "
           f"{machine.get('keras')}, driver {machine.get('driver') or 'n/a'}.", "",
           "| preset | batch | precision | XLA | constant images/s | stream images/s | ratio | "
           "verdict | GPU peak MB | first step s | note |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    ratio = row["ratio"]
    verdict = ("not measured" if ratio is None
               else "pass" if ratio >= STREAM_VS_CONSTANT else "FAIL")
    lines.append(
        f"| {row['preset']} | {row['batch_size']} | {row['precision']} | "
        f"{'on' if row['xla'] else 'off'} | {report_lib.fmt(row['constant_images_per_s'])} | "
        f"{report_lib.fmt(row['stream_images_per_s'])} | {report_lib.fmt(ratio, 3)} | "
        f"{verdict} | {report_lib.fmt(row['gpu_memory_peak_mb'])} | "
        f"{report_lib.fmt(row['first_step_seconds'], 1)} | {_note(row)} |")
  return lines


def refusal(probe, allow_cpu, probe_log):
  """The one-line error when TensorFlow sees no GPU and --allow_cpu is off, else None."""
  if probe["gpus"] or allow_cpu:
    return None
  cuda = "a CUDA build" if probe["build"].get("is_cuda_build") else "not a CUDA build"
  return (f"no GPU is visible to TensorFlow {probe['tensorflow']} ({cuda}); on an NVIDIA "
          "machine install the GPU build (pip install -e '.[gpu]', or run "
          "benchmarks/gpu_check.sh) and check nvidia-smi and CUDA_VISIBLE_DEVICES "
          f"(TensorFlow's messages: {probe_log}), or pass --allow_cpu to try the plumbing on "
          "the CPU")


def nvidia_smi():
  """[{"name", "driver_version", "memory_total"}] per GPU from nvidia-smi; [] without it."""
  if not shutil.which("nvidia-smi"):
    return []
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  keys = ("name", "driver_version", "memory_total")
  return [dict(zip(keys, (f.strip() for f in line.split(",")))) for line in out.splitlines()
          if line.count(",") == len(keys) - 1]


def machine_info(probe):
  """The host (benchmarks.report), the GPUs and TensorFlow's build as the probe saw them."""
  smi = nvidia_smi()
  return {**report_lib.machine_description(), "tensorflow": probe["tensorflow"],
          "keras": probe["keras"], "gpus": probe["gpus"], "tensorflow_build": probe["build"],
          "nvidia_smi": smi, "driver": smi[0]["driver_version"] if smi else None}


def build_report(options, inputs, machine, rows, elapsed_s, command_line):
  """The JSON report: machine, settings, rows, targets, definitions, command line."""
  rows = sorted(rows, key=row_sort_key)
  targets = evaluate_targets(rows)
  table = "\n".join(markdown_lines(rows, machine)) + "\n"
  return {"benchmark": "gpu_check", "machine": machine,
          "settings": {**dataclasses.asdict(options), **inputs},
          "targets": targets, "summary": summarize(rows, targets), "rows": rows,
          "definitions": DEFINITIONS, "command_line": command_line,
          "provenance": provenance.describe_run(seed=options.seed),
          "elapsed_seconds": elapsed_s, "table": table}


def check_inputs(options):
  """{"image_size", "train_images"} of the data dir, after checking every preset fits it.

  Raises:
    DataError: no prepared data dir, or no training images.
    ModelError: a preset that cannot take the data's image size.
  """
  manifest = manifest_lib.read_manifest(options.data_dir)
  image_size = int(manifest["image_size"])
  train_images = manifest["splits"].get("train", {}).get("num_examples", 0)
  if not train_images:
    raise DataError(f"{options.data_dir} has no training images")
  for preset in options.presets:
    config_lib.resolve_config(preset, {"image_size": image_size})
  return {"image_size": image_size, "train_images": train_images}


# The command line: absl flags in a FlagValues of this module's own, not absl's global
# flags.FLAGS: the benchmarks may not import tools (its flag helpers and _cli), and the global
# registry would clash (DuplicateFlagError on --data_dir, --output_json) wherever this module is
# imported next to a tool that defines them, as the tests do.
_FLAGS = flags.FlagValues()
_HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")


class _Parser(flags.ArgumentParser):
  """An absl flag parser from a function text -> value that raises ValueError when bad."""

  def __init__(self, parse):
    super().__init__()
    self._parse = parse

  def parse(self, argument):
    return self._parse(argument) if isinstance(argument, str) else argument


def _comma_list(allowed=None, cast=str):
  """A comma list of `cast` values (from `allowed` when given), no repeats, as a tuple."""
  def parse(text):
    try:
      values = tuple(cast(v) for v in text.split(",") if v)
    except ValueError:
      raise ValueError(f"not a comma list of {cast.__name__}: {text}") from None
    unknown = [v for v in values if allowed is not None and v not in allowed]
    if unknown or not values:
      what = f"unknown value(s) {', '.join(map(str, unknown))}" if unknown else "empty"
      raise ValueError(f"{what}; choose from {', '.join(map(str, allowed))}"
                       if allowed else f"{what}: {text}")
    if len(set(values)) != len(values) or (cast is int and min(values) < 1):
      raise ValueError(f"repeated or non-positive values: {text}")
    return values
  return parse


def _positive_float(text):
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f"not a number: {text}") from None
  if not value > 0:
    raise ValueError(f"must be > 0, got {text}")
  return value


def _define(name, parse, default, help_text):
  """A flag of `parse`'s values; a comma list (tuple) prints as one."""
  serializer = flags.CsvListSerializer(",") if isinstance(default, tuple) else None
  flags.DEFINE(_Parser(parse), name, default, help_text, flag_values=_FLAGS,
               serializer=serializer)


flags.DEFINE_string("data_dir", None, "Prepared data dir (tools.prepare_data; raw encoding is "
                    "what the trainers read fastest); its image size is the models'.",
                    flag_values=_FLAGS)
flags.DEFINE_string("output_json", None, "Report file to write (JSON).", flag_values=_FLAGS)
_define("presets", _comma_list(PRESETS), PRESETS,
        f"Comma list of {', '.join(PRESETS)} (default: all).")
_define("batch_sizes", _comma_list(cast=int), (128, 512),
        "Comma list of batch sizes (default 128,512).")
_define("precisions", _comma_list(PRECISIONS), PRECISIONS,
        "Comma list of float32, bf16 (mixed_bfloat16), fp16 (mixed_float16 with loss scaling).")
flags.DEFINE_enum("xla", "both", sorted(XLA_CHOICES), "Compile the train step with XLA: off, "
                  "on or both (default).", flag_values=_FLAGS)
flags.DEFINE_integer("steps", 20, "Timed train steps per feed (constant batch, stream) and "
                     "config.", lower_bound=1, flag_values=_FLAGS)
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps before each timing (the first traces "
                     "and compiles).", lower_bound=1, flag_values=_FLAGS)
flags.DEFINE_integer("shuffle_buffer", 1024, "Shuffle buffer of the stream (records).",
                     lower_bound=1, flag_values=_FLAGS)
flags.DEFINE_integer("seed", 0, "Seeds the weights and the stream.", flag_values=_FLAGS)
_define("budget_s", _positive_float, None, "Seconds for all measurements; configs that no "
        "longer fit are recorded as skipped (default: no limit).")
_define("child_timeout_s", _positive_float, 1800.0, "Seconds after which one child (a preset "
        "at a batch size) is stopped; its finished configs are kept.")
flags.DEFINE_string("logs_dir", None, "The children's logs; default: <output_json without "
                    ".json>_logs beside it.", flag_values=_FLAGS)
flags.DEFINE_boolean("allow_cpu", False, "Run without a GPU (to try the plumbing on the CPU "
                     "with tiny settings); else no GPU is an error.", flag_values=_FLAGS)
for _name in ("data_dir", "output_json"):
  flags.mark_flag_as_required(_name, flag_values=_FLAGS)


def _flag_error(message):
  sys.stderr.write(f"{PROGRAM}: error: {' '.join(message.split())} (see --help)\n")
  sys.exit(2)


def parse_args(argv):
  """Options from the command line (argv without the program name); exit 2 on a bad flag."""
  if any(arg in _HELP_FLAGS for arg in argv):
    print(f"usage: {PROGRAM} --data_dir=DIR --output_json=FILE [flags]\n\n"
          f"{__doc__.split(chr(10) * 2)[0]}\n{_FLAGS.get_help()}")
    sys.exit(0)
  _FLAGS.unparse_flags()  # Parsed anew on each call, from the defaults.
  try:
    positional = _FLAGS([PROGRAM, *argv])[1:]
  except flags.Error as error:
    _flag_error(str(error))
  if positional:
    _flag_error(f"unexpected positional arguments {positional}; every input is a --flag")
  return Options(**{field.name: _FLAGS[field.name].value
                    for field in dataclasses.fields(Options)})


def _log(message):
  sys.stderr.write(f"{PROGRAM}: {message}\n")
  sys.stderr.flush()


def _fail(message):
  sys.stderr.write(f"{PROGRAM}: error: {message}\n")
  return 1


def main(argv=None):
  """The command line; returns the exit code (0 report written, 1 error, 2 bad flag)."""
  tf_env.enable_onednn()  # As its children (child_main) run, so that the report records it.
  argv = sys.argv[1:] if argv is None else list(argv)
  options = parse_args(argv)
  start = time.perf_counter()
  options = dataclasses.replace(options, logs_dir=options.logs_dir or
                                os.path.splitext(options.output_json)[0] + "_logs")
  logs_dir = options.logs_dir
  try:
    inputs = check_inputs(options)
    os.makedirs(logs_dir, exist_ok=True)
    probe_log = os.path.join(logs_dir, "probe.log")
    probe = child_tasks.run(CHILD_MODULE, {"task": "probe"}, probe_log, 600.0,
                            "the GPU probe")
    refused = refusal(probe, options.allow_cpu, probe_log)
    if refused:
      return _fail(refused)
    machine = machine_info(probe)
    rows = run_children(child_specs(options, inputs["image_size"]), logs_dir,
                        options.child_timeout_s, options.budget_s)
    report = build_report(options, inputs, machine, rows, time.perf_counter() - start,
                          f"{PROGRAM} {shlex.join(argv)}")
    os.makedirs(os.path.dirname(os.path.abspath(options.output_json)), exist_ok=True)
    provenance.atomic_write_json(options.output_json, report)
  except (DataError, ModelError, EvaluationError, OSError) as error:
    return _fail(str(error))
  except KeyboardInterrupt:
    _fail("interrupted")
    return 130
  print(report["table"], end="")
  summary = report["summary"]
  _log(f"wrote {options.output_json} in {report['elapsed_seconds']:.0f} s: {summary['ok']} of "
       f"{summary['configs']} configs measured ({summary['failed']} failed, "
       f"{summary['skipped']} skipped); stream >= {STREAM_VS_CONSTANT} of constant in "
       f"{summary['targets_passed']}, below in {summary['targets_failed']}")
  return 0


# ---------------------------------------------------------------------------------------------
# Child side (TensorFlow).


def probe(spec):
  """The `probe` task: TensorFlow's and Keras' versions, its CUDA build, the visible GPUs."""
  del spec  # Nothing to choose.
  # Level 1: TensorFlow's warnings (a CUDA library it cannot load) reach the probe's log.
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
  # After TF_CPP_MIN_LOG_LEVEL is set, which TensorFlow reads at its import.
  import keras
  import tensorflow as tf
  gpus = []
  for device in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(device)
    capability = details.get("compute_capability")
    gpus.append({"name": device.name, "device_name": details.get("device_name"),
                 "compute_capability": ".".join(map(str, capability)) if capability else None})
  build = tf.sysconfig.get_build_info()  # CUDA builds also name their CUDA and cuDNN.
  return {"tensorflow": tf.__version__, "keras": keras.__version__, "gpus": gpus,
          "build": {"is_cuda_build": bool(build.get("is_cuda_build")),
                    "cuda_version": build.get("cuda_version"),
                    "cudnn_version": build.get("cudnn_version")}}


def _error_text(error):
  """"Type: first line of the message", at most _ERROR_CHARS characters."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else ''}"[:_ERROR_CHARS]


def _gpu_memory_mb(tf, key):
  """GPU:0's allocator statistic `key` ("current" or "peak") in MB; None without a GPU."""
  if not tf.config.list_logical_devices("GPU"):
    return None
  return tf.config.experimental.get_memory_info("GPU:0")[key] / _MB


def _train_steps(model, iterator, steps):
  """(seconds, last loss) of `steps` calls of fit's compiled train function on `iterator`.

  The loss is read at the end: it exists only once the device has run every step.
  """
  start = time.perf_counter()
  logs = None
  for _ in range(steps):
    logs = model.train_function(iterator)
  loss = float(logs["loss"])
  return time.perf_counter() - start, loss


def _compiled_model(model_config, precision, xla, seed):
  """A fresh model at `precision` (its layers take the global policy now), compiled."""
  from modeling import devices
  from modeling import training
  train_config = training.TrainConfig(mixed_precision=PRECISION_MODES[precision],
                                      jit_compile=xla, seed=seed)
  devices.set_precision(train_config.mixed_precision)
  devices.set_seed(seed)
  with devices.make_strategy("default").scope():
    model = training.compiled_model(model_config, train_config)  # As the trainers build it.
  model.make_train_function()
  return model


def _stream(spec):
  """The shards as the trainers feed fit: shuffled, repeating, whole uint8 [B,S,S,3] batches."""
  from data_pipeline import make_dataset
  from modeling import training
  return training.without_autotuning(make_dataset(
      spec["data_dir"], "train", spec["batch_size"], shuffle=True, seed=spec["seed"],
      repeat=True, drop_remainder=True, shuffle_buffer=spec["shuffle_buffer"]))


def stream_warmup_steps(warmup_steps):
  """Untimed stream steps: --warmup_steps plus the pipeline's backlog.

  docs/benchmarks/README.md, the GPU check, step 3.
  """
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return warmup_steps + (cores or 1) + STREAM_EXTRA_WARMUP


def measure_config(spec, model_config, constant_batch, precision, xla):
  """One config's row (see docs/benchmarks/README.md); raises what the model or TensorFlow raise.

  Args:
    spec: the child's spec.
    model_config: the preset at the data's image size.
    constant_batch: uint8 [B,S,S,3] tensor on the host, repeated by the constant feed.
    precision: one of PRECISIONS.
    xla: compile the train step with XLA.
  """
  import tensorflow as tf
  steps, warmup = spec["steps"], spec["warmup_steps"]
  images = steps * spec["batch_size"]
  if tf.config.list_logical_devices("GPU"):
    tf.config.experimental.reset_memory_stats("GPU:0")
  row = empty_row(spec, precision, xla, "ok")
  row["gpu_memory_start_mb"] = _gpu_memory_mb(tf, "current")
  model = _compiled_model(model_config, precision, xla, spec["seed"])
  row.update(compute_dtype=model.dtype_policy.compute_dtype, parameters=model.count_params())
  constant = iter(tf.data.Dataset.from_tensors(constant_batch).repeat())
  row["first_step_seconds"], _ = _train_steps(model, constant, 1)
  if warmup > 1:
    _train_steps(model, constant, warmup - 1)
  row["constant_seconds"], _ = _train_steps(model, constant, steps)
  row["stream_warmup_steps"] = stream_warmup_steps(warmup)
  stream = iter(_stream(spec))  # Made only now: no pipeline work during the constant timing.
  _train_steps(model, stream, row["stream_warmup_steps"])
  row["stream_seconds"], row["loss"] = _train_steps(model, stream, steps)
  row["constant_images_per_s"] = images / row["constant_seconds"]
  row["stream_images_per_s"] = images / row["stream_seconds"]
  row["ratio"] = row["stream_images_per_s"] / row["constant_images_per_s"]
  row["loss_finite"] = math.isfinite(row["loss"])
  row["gpu_memory_peak_mb"] = _gpu_memory_mb(tf, "peak")
  return row


def _release(keras):
  """Frees the last config's model and graphs (and its GPU memory); policy back to float32."""
  keras.mixed_precision.set_global_policy("float32")
  keras.backend.clear_session()
  gc.collect()


def _measure_or_record(spec, model_config, constant_batch, precision, xla):
  """measure_config's row, or a failed row with the error's first line."""
  start = time.perf_counter()
  try:
    row = measure_config(spec, model_config, constant_batch, precision, xla)
  except Exception as error:  # pylint: disable=broad-except
    # Recorded, not fatal: out of memory at a large batch, XLA or bf16 unsupported, ...
    row = dict(empty_row(spec, precision, xla, "failed", _error_text(error)),
               error_type=type(error).__name__)
  row["seconds"] = time.perf_counter() - start
  row["peak_rss_mb"] = peak_rss_mb()
  return row


def _append_progress(path, row):
  """Appends the row to the progress file, which the parent reads if this child dies."""
  if path:
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row, sort_keys=True) + "\n")


def measure(spec):
  """The `measure` task: every config of one preset at one batch size; {"rows": [...]}."""
  import keras
  from data_pipeline import make_dataset
  from modeling import devices
  devices.configure_devices(memory_growth=True)  # As the trainers: before any tensor.
  model_config = config_lib.resolve_config(spec["preset"], {"image_size": spec["image_size"]})
  # The first batch in file order; repeating, so that a split smaller than a batch still fills it.
  constant_batch = next(iter(make_dataset(spec["data_dir"], "train", spec["batch_size"],
                                          shuffle=False, repeat=True, drop_remainder=True)))
  rows, longest = [], 0.0
  for precision, xla in spec["configs"]:
    deadline = spec.get("deadline")
    if deadline is not None and time.time() + longest > deadline:
      row = empty_row(spec, precision, xla, "skipped", "not started: --budget_s ran out")
    else:
      row = _measure_or_record(spec, model_config, constant_batch, precision, xla)
      longest = max(longest, row["seconds"])
      _release(keras)
    rows.append(row)
    _append_progress(spec.get("progress_path"), row)
    print(f"{config_name(row)}: {row_outcome(row)}", flush=True)  # Into the child's log.
  return {"rows": rows}


TASKS = {"probe": probe, "measure": measure}


def _is_child(argv):
  """`python -m benchmarks.gpu SPEC.json RESULT.json`: two positional arguments."""
  return len(argv) == 3 and not any(a.startswith("-") for a in argv[1:])


if __name__ == "__main__":
  if _is_child(sys.argv):
    sys.exit(child_tasks.child_main(sys.argv, lambda spec: TASKS[spec["task"]](spec)))
  sys.exit(main())
