"""Training throughput as a user sees it, per model preset: `fit` against bare train steps.

Part of the pipeline benchmark. For each preset a fresh child process
(`python -m benchmarks.training SPEC.json RESULT.json`, so its peak RSS is its own) trains a run
dir as tools.train_ae / train_vae do, with the trainer's callbacks, and after every epoch times
a block of bare train steps on one constant batch. The verdict compares fit's images/s (epoch 1
traces and is not timed; validation apart) with the bare blocks just before and after each
epoch, because a shared machine's speed drifts over minutes. The `epoch_start:<preset>` target
checks that no epoch's first batch stalls (tf.data autotuning made it wait for seconds).

Parent side, no TensorFlow: `fit_spec`, `run`, `evaluate_targets`, `markdown_lines`,
`DEFINITIONS`; child side: `measure`. docs/benchmarks/README.md explains the method in full.
"""

import os
import shutil
import sys
import time

from benchmarks import child_tasks
from benchmarks.process_memory import peak_rss_mb
from benchmarks.report import fmt
from benchmarks.report import verdict
from data_pipeline import manifest as manifest_lib
from modeling import config as config_lib
from modeling import run_dir as run_dir_lib

# TensorFlow, and our modules that load it, are imported inside the functions the child
# process runs: tools.benchmark_pipeline imports this module for its flag choices, and its
# --helpshort loads no TensorFlow (docs/ARCHITECTURE.md, Imports).

PRESETS = ("ae_z256", "ae_z1600", "vae_fact5")
# Images per epoch by default: about a minute of steps at batch 128 on a small CPU, so that
# the epoch-end work of the trainer's callbacks (mostly the backup and best.keras) weighs what
# it weighs in real epochs, not more (docs/benchmarks/README.md). Others: DEFAULT_IMAGES.
PRESET_IMAGES = {"ae_z256": 1280, "ae_z1600": 1280, "vae_fact5": 2560}
DEFAULT_IMAGES = 1024
FIT_VS_STEPS = 0.95  # Target on this machine.
# At most: a timed epoch's first batch over a steady step. Without the stall a first batch is
# about one step (making the epoch's iterator is quick next to a step); the stall added
# several steps of any preset.
EPOCH_START_VS_STEP = 2.0
EPOCHS = 4  # Epoch 1 warms up (traces); epochs 2 to 4 are timed.

DEFINITIONS = {
    "fit_vs_steps": "images/s of epochs 2 to 4 of 4 as modeling.training.train runs them (fit "
                    "with the trainer's callbacks and progress bar, fed from the raw shards), "
                    "validation time excluded, over images/s of bare steps: fit's own compiled "
                    "train function on one fixed batch of the same size, no callbacks, timed in "
                    "blocks of half an epoch's steps run after every epoch (after the trainer's "
                    "callbacks), each timed epoch against the blocks just before and just after "
                    "it (after --train_warmup_steps untimed ones when fit begins). Epoch 1 "
                    "(tracing) is not timed.",
    "ratio_per_epoch": "per timed epoch (2 to 4), the same ratio of that epoch alone over its "
                       "two bare blocks.",
    "bare_block_seconds": "per epoch, 1 to 4: seconds of the block of bare steps (half an "
                          "epoch's, rounded up) run right after it, after the trainer's "
                          "callbacks; epoch k is judged against the blocks after epochs k-1 "
                          "and k.",
    "ratio_with_validation": "the same with the validation time of epochs 2 to 4 included.",
    "steps_ratio": "images/s of the steady train steps of epochs 2 to 4 (each epoch's 2nd to "
                   "last batch: the stream, the progress bar and per-batch callbacks) over the "
                   "bare steps'.",
    "steady_step_seconds": "mean seconds of one steady train step of epochs 2 to 4: their 2nd "
                           "to last batches (each epoch's first batch's end to its last's).",
    "first_batch_seconds_per_epoch": "per epoch, 1 to 4: from the epoch's start (epoch 1: the "
                                     "end of the untimed warm-up steps, before fit's first "
                                     "epoch; later: the end of the bare block after the "
                                     "previous epoch's validation and callbacks) to its first "
                                     "batch's end: one step plus fit replacing its training "
                                     "iterator (with tf.data's autotuning on, tearing the old "
                                     "one down waited for the autotuning thread: see "
                                     "modeling.training.without_autotuning).",
    "epoch_start_vs_step": "the largest first_batch_seconds_per_epoch of epochs 2 to 4 over "
                           f"steady_step_seconds; at most {EPOCH_START_VS_STEP:g} passes "
                           "(target epoch_start).",
    "per_epoch_seconds": "mean over epochs 2 to 4 of an epoch's seconds (validation excluded) "
                         "beyond its batches at the steady step rate: fit replacing its dataset "
                         "iterators (see the module docstring of benchmarks.training) and the "
                         "callbacks' epoch-end work (history row, backup, best.keras, "
                         "TensorBoard, image grid).",
}


def epoch_images(preset, requested, available, batch_size):
  """Images per epoch: `requested`, else the preset's default capped at `available`.

  Whole batches only: 0 when not even one batch fits.
  """
  images = requested or min(PRESET_IMAGES.get(preset, DEFAULT_IMAGES), available)
  return images // batch_size * batch_size


def fit_spec(preset, raw_dir, options, image_size, available, run_root):
  """The child's spec for one preset (`options`: benchmarks.pipeline.Options)."""
  return {"preset": preset, "raw_dir": raw_dir, "image_size": image_size,
          "images": epoch_images(preset, options.train_images, available, options.batch_size),
          "batch_size": options.batch_size,
          "validation_steps": options.train_validation_steps,
          "warmup_steps": options.train_warmup_steps,
          "shuffle_buffer": options.shuffle_buffer, "seed": options.seed,
          "run_dir": os.path.join(run_root, preset)}


def run(specs, logs_dir, timeout_s):
  """Measures each spec's preset in a fresh child process; returns the result rows.

  Raises:
    EvaluationError: a child failed or ran out of time (its log is named).
  """
  rows = []
  for spec in specs:
    rows.append(child_tasks.run(
        "benchmarks.training", spec, os.path.join(logs_dir, f"fit-{spec['preset']}.log"),
        timeout_s, f"the fit measurement of {spec['preset']}",
        "raise it or lower --train_images"))
  return rows


def bare_reference(block_seconds, block_images):
  """Images/s of bare steps for the timed epochs: each one's blocks before and after it.

  Args:
    block_seconds: per epoch, epoch 1 first, the seconds of the bare block run right after it.
    block_images: images per block.

  Returns:
    (images/s of the blocks around epochs 2 to N together, the blocks next to two timed
    epochs counting twice; per timed epoch, the images/s of its two blocks). None (and [])
    with fewer than two blocks.
  """
  pairs = [block_seconds[k - 1] + block_seconds[k] for k in range(1, len(block_seconds))]
  if not pairs or min(pairs) <= 0:
    return None, []
  return 2 * block_images * len(pairs) / sum(pairs), [2 * block_images / p for p in pairs]


def ratios(images, steps, epochs, bare_images_per_s, bare_per_epoch=()):
  """The fit-over-bare ratios and the epochs' starts from every epoch's timings.

  Epoch 1 (tracing) counts in no rate and in no epoch-start check; only its first batch is
  passed on. A value is None where it is unknown (no timed epoch, one batch per epoch, no
  bare rate).

  Args:
    images: training images per epoch.
    steps: its batches.
    epochs: per epoch, epoch 1 first, its seconds {"epoch": all of it, "validation": its
      validation, "first_batch": its start to its first batch's end, "steps": its start to its
      last batch's end}.
    bare_images_per_s: images/s of the bare steps (bare_reference).
    bare_per_epoch: per timed epoch, the images/s of its own bare blocks (bare_reference).

  Returns:
    {"fit_images_per_s", "ratio", "ratio_per_epoch", "ratio_with_validation", "steps_ratio",
     "per_epoch_seconds", "steady_step_seconds", "first_batch_seconds_per_epoch" (one per
     epoch of `epochs`), "epoch_start_vs_step"}.
  """
  timed = epochs[1:]
  timed_images = images * len(timed)
  fit_seconds = sum(e["epoch"] - e["validation"] for e in timed)

  def rate(n, s):
    return n / s if s > 0 else None

  def over_bare(value):
    return value / bare_images_per_s if value and bare_images_per_s else None

  # Steady steps: the first batch also pays for the epoch's start.
  steady_step = (sum(e["steps"] - e["first_batch"] for e in timed) / (len(timed) * (steps - 1))
                 if timed and steps > 1 else None)
  steady = rate(images / steps, steady_step) if steady_step is not None else None
  starts = [e["first_batch"] / steady_step for e in timed] if steady else []
  return {"fit_images_per_s": rate(timed_images, fit_seconds),
          "ratio": over_bare(rate(timed_images, fit_seconds)),
          "ratio_per_epoch": [rate(images, e["epoch"] - e["validation"]) / bare
                              for e, bare in zip(timed, bare_per_epoch)],
          "ratio_with_validation": over_bare(rate(timed_images, sum(e["epoch"] for e in timed))),
          "steps_ratio": over_bare(steady),
          "per_epoch_seconds": fit_seconds / len(timed) - steps * steady_step if steady else None,
          "steady_step_seconds": steady_step,
          "first_batch_seconds_per_epoch": [e["first_batch"] for e in epochs],
          "epoch_start_vs_step": max(starts) if starts else None}


def evaluate_targets(rows):
  """Two targets per preset, passed None when their value is unknown.

  fit_vs_steps:<preset>: the ratio, at least FIT_VS_STEPS passes. epoch_start:<preset>:
  epoch_start_vs_step, at most EPOCH_START_VS_STEP passes: an upper bound like
  benchmarks.pipeline's peak_rss_mb. A target has no field for its direction (the report
  shows value, threshold and result), so its description says it.
  """
  targets = []
  for row in rows:
    preset, ratio, start = row["preset"], row.get("ratio"), row.get("epoch_start_vs_step")
    targets.append({
        "name": f"fit_vs_steps:{preset}",
        "description": f"{preset}: images/s of fit epochs with the trainer's callbacks "
                       "(validation excluded) / images/s of bare train steps on a constant "
                       "batch", "value": ratio, "threshold": FIT_VS_STEPS,
        "passed": None if ratio is None else ratio >= FIT_VS_STEPS})
    targets.append({
        "name": f"epoch_start:{preset}",
        "description": f"{preset}: the largest first batch of epochs 2 to {EPOCHS} (seconds "
                       "from the epoch's start) / a steady train step's seconds (pass at most "
                       f"{EPOCH_START_VS_STEP:g})", "value": start,
        "threshold": EPOCH_START_VS_STEP,
        "passed": None if start is None else start <= EPOCH_START_VS_STEP})
  return targets


def per_epoch(values, digits):
  """One value per epoch for the table: "4.1 / 0.9 / 0.9 / 1.0" (n/a if none)."""
  return " / ".join(fmt(v, digits) for v in values) if values else "n/a"


def markdown_lines(rows):
  """The Markdown table of the rows (empty without rows)."""
  if not rows:
    return []
  lines = ["", f"Training throughput as a user sees it: epochs 2 to {EPOCHS} of {EPOCHS} of "
           f"`fit` with the trainer's callbacks (batch {rows[0]['batch_size']}, validation time "
           "excluded) vs bare train steps on one fixed batch, and every epoch's first batch in "
           "seconds from the epoch's start (target epoch_start):", "",
           "| preset | epoch images | fit images/s | bare steps images/s | ratio | verdict | "
           f"ratio per epoch, 2-{EPOCHS} | with validation | steady steps ratio | steady step s "
           f"| first batch s, epochs 1-{EPOCHS} | per-epoch s | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    passed = None if row["ratio"] is None else row["ratio"] >= FIT_VS_STEPS
    lines.append(
        f"| {row['preset']} | {row['images']:,} | {fmt(row['fit_images_per_s'], 1)} | "
        f"{fmt(row['bare_images_per_s'], 1)} | {fmt(row['ratio'], 3)} | {verdict(passed)} | "
        f"{per_epoch(row.get('ratio_per_epoch'), 3)} | "
        f"{fmt(row['ratio_with_validation'], 3)} | {fmt(row['steps_ratio'], 3)} | "
        f"{fmt(row['steady_step_seconds'], 2)} | "
        f"{per_epoch(row['first_batch_seconds_per_epoch'], 1)} | "
        f"{fmt(row['per_epoch_seconds'], 2)} | {fmt(row['peak_rss_mb'])} |")
  return lines


def datasets(spec):
  """(train, validation, preview images) as tools.train_common builds them."""
  import tensorflow as tf
  from data_pipeline import make_dataset
  raw_dir, batch_size = spec["raw_dir"], spec["batch_size"]
  steps = spec["images"] // batch_size
  train_ds = make_dataset(raw_dir, "train", batch_size, shuffle=True, seed=spec["seed"],
                          drop_remainder=True, max_images=steps * batch_size,
                          shuffle_buffer=spec["shuffle_buffer"])
  train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(steps))
  splits = manifest_lib.read_manifest(raw_dir)["splits"]
  num_val = splits.get("validation", {}).get("num_examples", 0)
  val_ds = None
  if num_val:
    val_ds = make_dataset(raw_dir, "validation", batch_size, shuffle=False).apply(
        tf.data.experimental.assert_cardinality(-(-num_val // batch_size)))
  # The trainers' default preview: the first 8 test images (else validation).
  preview_split = "test" if splits.get("test", {}).get("num_examples") else "validation"
  preview = None
  if splits.get(preview_split, {}).get("num_examples"):
    preview = next(iter(make_dataset(raw_dir, preview_split, 8, shuffle=False))).numpy()
  return train_ds, val_ds, num_val, preview


def _wait(logs):
  """Blocks until the step that returned `logs` has finished."""
  for value in logs.values():
    value.numpy()


def _bare_steps(model, iterator, steps):
  """Seconds for `steps` calls of fit's compiled train function on `iterator`."""
  start = time.perf_counter()
  logs = None
  for _ in range(steps):
    logs = model.train_function(iterator)
  if logs is not None:
    _wait(logs)
  return time.perf_counter() - start


def _timer_class():
  """The callback that times every epoch and runs the bare steps' first half before fit's."""
  import keras

  class EpochTimer(keras.callbacks.Callback):
    """Runs after the trainer's callbacks; see docs/benchmarks/README.md, steps 2 and 3."""

    def __init__(self, bare_iterator, warmup_steps, block_steps, best_path):
      super().__init__()
      self.bare_iterator, self.warmup_steps = bare_iterator, warmup_steps
      self.block_steps, self.best_path = block_steps, best_path
      self.epochs = []  # Per finished epoch: its marks (time.perf_counter), see _marks.
      self.block_seconds = []  # Per finished epoch: the seconds of the bare block after it.
      self.current, self.test_begin = None, None
      self.best_mtime = None

    @staticmethod
    def _marks(start):
      return {"start": start, "first_batch_end": None, "last_batch_end": None,
              "validation": 0.0, "end": None}

    def _best_mtime(self):
      return os.path.getmtime(self.best_path) if os.path.exists(self.best_path) else None

    def on_train_batch_end(self, batch, logs=None):
      now = time.perf_counter()
      self.current["last_batch_end"] = now
      if batch == 0:
        self.current["first_batch_end"] = now

    def on_test_begin(self, logs=None):
      self.test_begin = time.perf_counter()

    def on_test_end(self, logs=None):
      self.current["validation"] += time.perf_counter() - self.test_begin

    def on_train_begin(self, logs=None):
      _bare_steps(self.model, self.bare_iterator, self.warmup_steps)  # Traces; not timed.
      self.current = self._marks(time.perf_counter())  # Epoch 1 starts.

    def on_epoch_end(self, epoch, logs=None):
      self.current["end"] = time.perf_counter()
      self.epochs.append(self.current)
      if epoch == 0:
        self.best_mtime = self._best_mtime()
      # The epoch's training iterator lives on through the block: with autotuning on, that
      # would lengthen the teardown wait at the next epoch's start, which the epoch_start
      # target would then show the more clearly (modeling.training.without_autotuning).
      self.block_seconds.append(_bare_steps(self.model, self.bare_iterator, self.block_steps))
      self.current = self._marks(time.perf_counter())  # The next epoch starts after it.

    def seconds(self):
      """Per finished epoch, epoch 1 first: the `epochs` argument of `ratios`."""
      return [{"epoch": e["end"] - e["start"], "validation": e["validation"],
               "first_batch": e["first_batch_end"] - e["start"],
               "steps": e["last_batch_end"] - e["start"]} for e in self.epochs]

    def best_saved(self):
      """Whether a timed epoch wrote best.keras (val_loss improved after epoch 1)."""
      return self._best_mtime() != self.best_mtime

  return EpochTimer


def measure(spec):
  """The child's work: one preset's fit epochs and bare steps (docs/benchmarks/README.md)."""
  import tensorflow as tf
  from modeling import training
  batch_size = spec["batch_size"]
  steps = spec["images"] // batch_size
  block_steps = -(-steps // 2)  # Half an epoch's, after each of the EPOCHS epochs.
  model_config = config_lib.resolve_config(spec["preset"], {"image_size": spec["image_size"]})
  train_ds, val_ds, num_val, preview = datasets(spec)
  validation_steps = min(spec["validation_steps"], -(-num_val // batch_size)) if num_val else None
  constant = tf.data.Dataset.from_tensors(next(iter(train_ds))).repeat()
  if os.path.exists(spec["run_dir"]):  # A leftover run would be resumed, not trained.
    shutil.rmtree(spec["run_dir"])
  timer = _timer_class()(iter(constant), spec["warmup_steps"], block_steps,
                         run_dir_lib.paths(spec["run_dir"]).best)
  # The trainers' default precision: fit is timed as a user of the tools runs it.
  train_config = training.TrainConfig(epochs=EPOCHS, batch_size=batch_size,
                                      validation_steps=validation_steps, seed=spec["seed"],
                                      mixed_precision="auto")
  training.train(model_config, train_config, train_ds, val_ds, spec["run_dir"],
                 preview_images=preview, callbacks=(timer,))
  epochs = timer.seconds()
  images = steps * batch_size
  bare_rate, bare_per_epoch = bare_reference(timer.block_seconds, block_steps * batch_size)
  result = {"preset": spec["preset"], "parameters": int(timer.model.count_params()),
            "images": images, "batch_size": batch_size, "steps": steps, "epochs": EPOCHS,
            "validation_steps": validation_steps, "warmup_steps": spec["warmup_steps"],
            # Per epoch, epoch 1 first (see `ratios`).
            "epoch_seconds_per_epoch": [e["epoch"] for e in epochs],
            "validation_seconds_per_epoch": [e["validation"] for e in epochs],
            "steps_seconds_per_epoch": [e["steps"] for e in epochs],
            "best_checkpoint_saved": timer.best_saved(),
            "bare_steps": block_steps * len(timer.block_seconds),
            "bare_block_seconds": timer.block_seconds, "bare_images_per_s": bare_rate,
            **ratios(images, steps, epochs, bare_rate, bare_per_epoch),
            "peak_rss_mb": peak_rss_mb()}
  shutil.rmtree(spec["run_dir"])  # Scratch: hundreds of MB of checkpoints for ae_z1600.
  return result


if __name__ == "__main__":
  sys.exit(child_tasks.child_main(sys.argv, measure))
