"""Mixed precision: speed and quality of float32 vs bf16 training, and what `auto` picks here.

`--mixed_precision auto` (the trainers' default) trains in bf16 where the hardware runs it
natively and in float32 elsewhere (modeling.devices.resolve_precision). This benchmark checks
both halves: each preset is trained from the same seed for the same epochs once per precision,
as the trainers train it, each in a fresh child process (`python -m benchmarks.precision
SPEC.json RESULT.json`, so no dtype policy leaks and each peak RSS is its own); its test-split
PSNR must stay within PARITY_DB of float32's, and its steady train step gives the speed-up of
what `auto` resolves to. Without native bf16 TensorFlow emulates it, much slower.
docs/benchmarks/README.md explains the method.
"""

import dataclasses
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from benchmarks import child_tasks
from benchmarks import report as report_lib
from benchmarks import training as training_benchmark
from benchmarks.process_memory import peak_rss_mb
from benchmarks.report import fmt
from benchmarks.report import verdict
from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from evaluation.errors import EvaluationError
from modeling import config as config_lib
from modeling import flag_choices
from modeling import run_dir as run_dir_lib

# TensorFlow, and our modules that load it, are imported inside the functions the child
# process runs: tools.benchmark_precision imports this module for its flag choices, and its
# --helpshort loads no TensorFlow (docs/ARCHITECTURE.md, Imports).

PARITY_DB = 0.2  # Largest |test PSNR difference| between bf16 and float32.
PRECISIONS = ("off", "bf16")  # Resolved modes compared: float32 and bf16 mixed precision.


@dataclasses.dataclass(frozen=True)
class Options:
  """What the benchmark trains and measures.

  Attributes:
    data_dir: a raw-encoded data dir (tools.prepare_data) with train and test images.
    presets: model presets (modeling.config.PRESETS).
    precisions: resolved mixed-precision modes (flag_choices.PRECISION_POLICIES), float32 ("off")
      first: the others are compared with it.
    epochs: epochs of every run.
    train_images: training images per epoch (whole batches; the split's first ones).
    batch_size: global batch size.
    test_images: test images measured (the split's first ones; capped at the split).
    seed: seeds weights, data order and the VAE's sampling noise of every run.
    shuffle_buffer: records in the shuffle buffer.
    work_dir: where the run dirs and children's logs go; None: a temporary folder, removed.
    child_timeout_s: seconds after which one run's child is stopped as failed.
  """

  data_dir: str
  presets: tuple = ("ae_z256", "vae_fact5")
  precisions: tuple = PRECISIONS
  epochs: int = 3
  train_images: int = 320
  batch_size: int = 32
  test_images: int = 450
  seed: int = 0
  shuffle_buffer: int = 1024
  work_dir: str | None = None
  child_timeout_s: float = 7200.0


DEFINITIONS = {
    "test_psnr_db": "mean PSNR (dB, images in [0, 1]) of the saved model's reconstructions of "
                    "the test split's first test_images images, as compare_reconstructions "
                    "measures it.",
    "psnr_difference_db": "test_psnr_db of this precision minus float32's, same preset.",
    "steady_step_seconds": "median seconds between consecutive train batch ends, every "
                           "epoch's first batch left out.",
    "step_over_float32": "float32's steady step / this precision's (above 1: faster).",
    "auto_over_float32": "float32's steady step / the steady step of the precision that "
                         "--mixed_precision auto resolves to on this machine.",
}


def check_choices(presets, precisions, train_images, batch_size):
  """Checks what the runs would be, without the data (tools.benchmark_precision's validator).

  Raises:
    EvaluationError: an unknown or missing preset or mode, modes that do not start with off
      (float32, which the others are compared with), or less than one batch per epoch.
  """
  unknown = [p for p in presets if p not in config_lib.PRESETS]
  unknown += [p for p in precisions if p not in flag_choices.PRECISION_POLICIES]
  if unknown or not presets:
    raise EvaluationError(f"unknown or missing --presets/--precisions value(s): "
                          f"{', '.join(unknown) or 'none given'}")
  if not precisions or precisions[0] != "off":
    raise EvaluationError("--precisions must start with off (float32), which the others are "
                          "compared with, e.g. off,bf16")
  if train_images < batch_size:
    raise EvaluationError(f"--train_images {train_images} is less than one batch (--batch_size "
                          f"{batch_size})")


def check_options(options):
  """Checks the options and the data dir before any run starts.

  Raises:
    EvaluationError: options no run could satisfy, or a data dir without raw records or
      without test images (one line).
    DataError: a missing or malformed data dir (data_pipeline.manifest.read_manifest).
  """
  check_choices(options.presets, options.precisions, options.train_images, options.batch_size)
  manifest = manifest_lib.read_manifest(options.data_dir)
  if manifest.get("encoding") != "raw":
    raise EvaluationError(f"--data_dir {options.data_dir} holds {manifest.get('encoding')} "
                          "records; the precision benchmark streams raw ones (prepare it with "
                          "tools.prepare_data --encoding=raw)")
  splits = manifest.get("splits", {})
  if not splits.get("test", {}).get("num_examples"):
    raise EvaluationError(f"--data_dir {options.data_dir} has no test images to measure; "
                          "prepare it from a CelebA folder with a test split")
  if splits.get("train", {}).get("num_examples", 0) < options.train_images:
    raise EvaluationError(f"--data_dir {options.data_dir} has fewer than --train_images "
                          f"{options.train_images} training images; lower --train_images")


def run_benchmark(options, resolve_auto=None):
  """Trains and measures every (preset, precision) in a child; returns the report dict.

  Args:
    options: the Options.
    resolve_auto: () -> (mode, reason) of "auto" on this machine; None asks
      modeling.devices.resolve_precision in a child (it loads TensorFlow).

  Raises:
    EvaluationError: bad options or data, or a child that failed (naming its log).
  """
  check_options(options)
  start = time.perf_counter()
  work_dir = options.work_dir or tempfile.mkdtemp(prefix="benchmark_precision_")
  logs_dir = os.path.join(work_dir, "logs")
  os.makedirs(logs_dir, exist_ok=True)
  if resolve_auto is None:
    auto = child_tasks.run("benchmarks.precision", {"task": "auto"},
                           os.path.join(logs_dir, "auto.log"), 300, "resolving auto")
  else:
    mode, reason = resolve_auto()
    auto = {"mode": mode, "reason": reason}
  try:
    rows = _run_children(options, work_dir, logs_dir)
  except BaseException:
    if not options.work_dir:  # Keep the log the error names; drop the run dirs (100s of MB).
      shutil.rmtree(os.path.join(work_dir, "runs"), ignore_errors=True)
    raise
  if not options.work_dir:
    shutil.rmtree(work_dir, ignore_errors=True)
  rows = compare_rows(rows, auto["mode"])
  manifest_sha256 = provenance.sha256_file(os.path.join(options.data_dir, "manifest.json"))
  report = {"machine": report_lib.machine_description(),
            "inputs": dict(dataclasses.asdict(options), manifest_sha256=manifest_sha256,
                           parity_db=PARITY_DB),
            "provenance": provenance.describe_run(
                seed=options.seed,
                inputs={os.path.join(options.data_dir, "manifest.json"): manifest_sha256}),
            "auto": auto, "definitions": DEFINITIONS, "rows": rows,
            "targets": evaluate_targets(rows),
            "elapsed_seconds": time.perf_counter() - start}
  report["table"] = markdown(report)
  return report


def _run_children(options, work_dir, logs_dir):
  """One child per (preset, precision), in order; their result rows."""
  rows = []
  for preset in options.presets:
    for precision in options.precisions:
      spec = {"task": "train", "preset": preset, "precision": precision,
              "data_dir": options.data_dir, "epochs": options.epochs,
              "train_images": options.train_images // options.batch_size * options.batch_size,
              "batch_size": options.batch_size, "test_images": options.test_images,
              "seed": options.seed, "shuffle_buffer": options.shuffle_buffer,
              "run_dir": os.path.join(work_dir, "runs", f"{preset}-{precision}")}
      rows.append(child_tasks.run(
          "benchmarks.precision", spec, os.path.join(logs_dir, f"{preset}-{precision}.log"),
          options.child_timeout_s, f"{preset} in {flag_choices.PRECISION_NAMES[precision]}",
          "raise --child_timeout_s or lower --train_images"))
  return rows


def compare_rows(rows, auto_mode):
  """The rows with each one's differences from float32 of its preset, and auto's speed-up.

  Args:
    rows: child results, each with "preset", "precision", "test_psnr_db", "test_ssim",
      "steady_step_seconds".
    auto_mode: the mode "auto" resolves to on this machine.

  Returns:
    New dicts: each row with "psnr_difference_db", "ssim_difference", "step_over_float32"
    and "auto_over_float32" (per preset, on every row of it; None where a run is missing).
  """
  by = {(r["preset"], r["precision"]): r for r in rows}
  out = []
  for row in rows:
    base = by.get((row["preset"], "off"))
    auto = by.get((row["preset"], auto_mode))

    def diff(key, r=row, b=base):
      return None if b is None else r[key] - b[key]

    def speedup(other, b=base):
      return (None if b is None or other is None
              else b["steady_step_seconds"] / other["steady_step_seconds"])
    out.append(dict(row, psnr_difference_db=diff("test_psnr_db"),
                    ssim_difference=diff("test_ssim"), step_over_float32=speedup(row),
                    auto_over_float32=speedup(auto)))
  return out


def evaluate_targets(rows):
  """parity:<preset>:<precision> for every precision but float32: |PSNR difference| <= 0.2 dB."""
  targets = []
  for row in rows:
    if row["precision"] == "off":
      continue
    value = row["psnr_difference_db"]
    targets.append({
        "name": f"parity:{row['preset']}:{flag_choices.PRECISION_NAMES[row['precision']]}",
        "description": f"{row['preset']}: test PSNR in "
                       f"{flag_choices.PRECISION_NAMES[row['precision']]}"
                       f" minus in float32, same seed and epochs (pass within +-{PARITY_DB:g} "
                       "dB)", "value": value, "threshold": PARITY_DB,
        "passed": None if value is None else abs(value) <= PARITY_DB})
  return targets


def markdown(report):
  """The report's Markdown: machine, what auto picks, one row per run, the targets."""
  machine, inputs, auto = report["machine"], report["inputs"], report["auto"]
  # What was measured: --test_images capped at the test split's size.
  measured = sorted({row["test_images"] for row in report["rows"]}) or [inputs["test_images"]]
  epochs = f"{inputs['epochs']} epoch{'s' if inputs['epochs'] != 1 else ''}"
  lines = [f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, TensorFlow "
           f"{machine['tensorflow']}, Keras {machine['keras']}; {machine['date']}.",
           f"`--mixed_precision auto` here: {flag_choices.PRECISION_NAMES[auto['mode']]} "
           f"({auto['reason']}).",
           f"Each run: {epochs} of {inputs['train_images']:,} training images at batch "
           f"{inputs['batch_size']}, seed {inputs['seed']}; PSNR/SSIM on the test split's first "
           f"{' or '.join(f'{n:,}' for n in measured)} images.", "",
           "| preset | precision | steady step s | step speed vs float32 | final loss | "
           "test PSNR dB | vs float32 dB | test SSIM | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|"]
  for row in report["rows"]:
    lines.append(
        f"| {row['preset']} | {flag_choices.PRECISION_NAMES[row['precision']]} | "
        f"{fmt(row['steady_step_seconds'], 2)} | {fmt(row['step_over_float32'], 2)}x | "
        f"{fmt(row['final_loss'], 1)} | {fmt(row['test_psnr_db'], 2)} | "
        f"{_signed(row['psnr_difference_db'])} | {fmt(row['test_ssim'], 3)} | "
        f"{fmt(row['peak_rss_mb'])} |")
  speedups = {row["preset"]: row["auto_over_float32"] for row in report["rows"]}
  lines += ["", "Speed-up of `auto` over float32 (train steps): " + ", ".join(
      f"{preset} {fmt(value, 2)}x" for preset, value in speedups.items()) + ".", "",
            "| target | value | threshold | result |", "|---|---|---|---|"]
  for t in report["targets"]:
    lines.append(f"| {t['name']} | {_signed(t['value'])} | +-{t['threshold']:g} | "
                 f"{verdict(t['passed'])} |")
  return "\n".join(lines) + "\n"


def _signed(value):
  return "n/a" if value is None else f"{value:+.3f}"


def _step_timer():
  """A Keras callback that keeps the seconds between consecutive train batch ends."""
  import keras

  class StepTimer(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.steps, self._last = [], None

    def on_epoch_begin(self, epoch, logs=None):
      self._last = None  # The epoch's first batch also pays for its start: left out.

    def on_train_batch_end(self, batch, logs=None):
      now = time.perf_counter()
      if self._last is not None:
        self.steps.append(now - self._last)
      self._last = now

  return StepTimer()


def _train(spec):
  """The child's work for one (preset, precision): train, reload, measure the test split."""
  # Local: they load TensorFlow and SciPy, which --helpshort does not need.
  from data_pipeline import make_dataset
  from evaluation import reconstruction
  from modeling import training
  manifest = manifest_lib.read_manifest(spec["data_dir"])
  test_total = manifest["splits"]["test"]["num_examples"]
  model_config = config_lib.resolve_config(spec["preset"],
                                           {"image_size": manifest["image_size"]})
  train_ds, val_ds, _, preview = training_benchmark.datasets(
      {"raw_dir": spec["data_dir"], "batch_size": spec["batch_size"],
       "images": spec["train_images"], "seed": spec["seed"],
       "shuffle_buffer": spec["shuffle_buffer"]})
  if os.path.exists(spec["run_dir"]):  # A leftover run would be resumed, not trained.
    shutil.rmtree(spec["run_dir"])
  timer = _step_timer()
  train_config = training.TrainConfig(
      epochs=spec["epochs"], batch_size=spec["batch_size"], validation_steps=1,
      seed=spec["seed"], mixed_precision=spec["precision"])
  result = training.train(model_config, train_config, train_ds, val_ds, spec["run_dir"],
                           preview_images=preview, callbacks=(timer,))
  run = run_dir_lib.load_run(spec["run_dir"])
  subject = reconstruction.Subject.from_run(spec["preset"], run)
  test_images = min(spec["test_images"], test_total)
  batches = (b.numpy() for b in make_dataset(spec["data_dir"], "test", spec["batch_size"],
                                              shuffle=False, max_images=test_images))
  stats = reconstruction.split_statistics([subject], batches, total=test_images,
                                          description=f"{spec['precision']} test").stats
  measured = stats[spec["preset"]]
  return {"preset": spec["preset"], "precision": spec["precision"],
          "policy": flag_choices.PRECISION_POLICIES[spec["precision"]],
          "epochs": spec["epochs"], "train_images": spec["train_images"],
          "test_images": test_images, "final_loss": float(result.history[-1]["loss"]),
          "steady_step_seconds": float(np.median(timer.steps)) if timer.steps else None,
          "timed_steps": len(timer.steps),
          "test_psnr_db": measured["psnr"]["mean"], "test_ssim": measured["ssim"]["mean"],
          "peak_rss_mb": peak_rss_mb()}


def _auto(spec):
  del spec  # Unused.
  from modeling import devices
  mode, reason = devices.resolve_precision("auto")
  return {"mode": mode, "reason": reason}


def work(spec):
  """The child's entry: spec["task"] is "train" or "auto"."""
  return {"train": _train, "auto": _auto}[spec["task"]](spec)


if __name__ == "__main__":
  sys.exit(child_tasks.child_main(sys.argv, work))
