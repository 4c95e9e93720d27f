"""Training throughput as a user sees it: a whole epoch of `fit` with the trainer's callbacks
over bare train steps on a constant batch, per model preset (issue 14).

The parent side (no TensorFlow): `fit_spec`, `run`, `evaluate_targets`, `markdown_lines`,
`DEFINITIONS`. The child side, one fresh process per preset so that its peak RSS is its own:

    python -m benchmarks.training SPEC.json RESULT.json

How one preset is measured (`measure`):

1. `modeling.training.train` trains a fresh run dir for 2 epochs over the first `images`
   training images of the raw shards, as tools.train_ae / train_vae call it: the same
   datasets (shuffled stream, known epoch length, validation split), the trainer's callbacks
   (NaN stop, CSV logger, backup, best checkpoint, TensorBoard, the preview image grid of 8
   test images) and Keras' progress bar (into the child's log).
2. When fit begins (a callback that runs after the trainer's), the bare steps' warm-up and
   first half run: the compiled train function that `fit` uses (`model.train_function`) on
   an iterator that repeats one fixed batch of the same size, with no callbacks, no progress
   bar and no input pipeline.
3. Epoch 1 traces the train and test functions and is not timed. Epoch 2 is timed from the
   end of epoch 1 to its own end, both in that last callback: its steps, the callbacks' work
   at its begin and end (history row, backup, best.keras when val_loss improved,
   TensorBoard, the image grid), and its validation, which is timed on its own (the
   callbacks' on_test_begin/on_test_end) and reported apart: it is more work (forward passes
   over other images), not overhead, and its share depends on the validation split's size.
4. After `train` returns, the bare steps' second half: halves before and after the fit
   cancel a steady drift of the machine's load.

The verdict's ratio is (training images of epoch 2 / its seconds without validation) over the
bare steps' images/s; >= FIT_VS_STEPS passes. Where the difference goes: `steps_ratio`
(epoch 2's steady steps, its 2nd to last batch, over the bare steps) and `per_epoch_seconds`
(the rest). Part of the rest is Keras' and TensorFlow's: fit makes new dataset iterators
during an epoch (a new training iterator after the last batch and again at the next epoch's
start, a fresh one for each validation), and tearing an old one down blocks until tf.data's
autotuning thread wakes from a sleep that doubles with the iterator's age, up to a minute
(TensorFlow 2.21; none with autotuning off). The epoch-start part shows in
`first_batch_seconds`. Being age-bound, this cost grows with the epoch until it reaches its
cap, so a short epoch's ratio does not extrapolate to a long one.
"""

import os
import shutil
import sys
import time

from benchmarks import child_tasks
from benchmarks.process_memory import peak_rss_mb
from benchmarks.report import fmt

PRESETS = ("ae_z256", "ae_z1600", "vae_fact5")
# Images per epoch by default: 15 to 20 s of steps on a 2-core CPU at 96x96 and batch 128 (an
# AE step takes ~10 s there, a vae_fact5 step ~1 s), as long as the whole benchmark's ten
# minutes allow, since per-epoch costs weigh less in longer epochs. Others: DEFAULT_IMAGES.
PRESET_IMAGES = {"ae_z256": 256, "ae_z1600": 256, "vae_fact5": 2048}
DEFAULT_IMAGES = 1024
FIT_VS_STEPS = 0.95  # Target on this machine (issue 14).
EPOCHS = 2  # Epoch 1 warms up (traces); epoch 2 is timed.

DEFINITIONS = {
    "fit_vs_steps": "images/s of epoch 2 of 2 as modeling.training.train runs it (fit with the "
                    "trainer's callbacks and progress bar, fed from the raw shards), validation "
                    "time excluded, over images/s of bare steps: fit's own compiled train "
                    "function on one fixed batch of the same size, no callbacks, as many steps "
                    "as the epoch has, timed in two halves, before fit's first epoch (after "
                    "--train_warmup_steps untimed ones) and after its last. Epoch 1 (tracing) "
                    "is not timed.",
    "ratio_with_validation": "the same with epoch 2's validation time included.",
    "steps_ratio": "images/s of epoch 2's steady train steps (its 2nd to last batch: the "
                   "stream, the progress bar and per-batch callbacks) over the bare steps'.",
    "first_batch_seconds": "from epoch 2's start to its first batch's end: one step plus "
                           "the epoch's start, where fit replaces its dataset iterator "
                           "(tearing the old one down waits for tf.data's autotuning thread).",
    "per_epoch_seconds": "epoch 2's seconds (validation excluded) beyond its batches at the "
                         "steady step rate: fit replacing its dataset iterators (see the "
                         "module docstring of benchmarks.training) and the callbacks' "
                         "epoch-end work (history row, backup, best.keras, TensorBoard, image "
                         "grid).",
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


def ratios(images, steps, seconds, bare_images_per_s):
  """The fit-over-bare ratios from epoch 2's timings (None where a rate is unknown).

  Args:
    images: training images in epoch 2.
    steps: its batches.
    seconds: epoch 2's {"epoch": all of it, "validation": its validation, "first_batch": its
      start to its first batch's end, "steps": its start to its last batch's end}.
    bare_images_per_s: images/s of the bare steps.

  Returns:
    {"fit_images_per_s", "ratio", "ratio_with_validation", "steps_ratio",
     "per_epoch_seconds"}.
  """
  fit_seconds = seconds["epoch"] - seconds["validation"]
  batch = images / steps

  def rate(n, s):
    return n / s if s > 0 else None

  def over_bare(value):
    return value / bare_images_per_s if value and bare_images_per_s else None

  # Steady steps: the first batch also pays for the epoch's start.
  steady = (rate(batch * (steps - 1), seconds["steps"] - seconds["first_batch"])
            if steps > 1 else None)
  return {"fit_images_per_s": rate(images, fit_seconds),
          "ratio": over_bare(rate(images, fit_seconds)),
          "ratio_with_validation": over_bare(rate(images, seconds["epoch"])),
          "steps_ratio": over_bare(steady),
          "per_epoch_seconds": fit_seconds - images / steady if steady else None}


def evaluate_targets(rows):
  """One target per preset: fit_vs_steps:<preset>, passed None when there is no ratio."""
  targets = []
  for row in rows:
    ratio = row.get("ratio")
    targets.append({
        "name": f"fit_vs_steps:{row['preset']}",
        "description": f"{row['preset']}: images/s of a fit epoch with the trainer's callbacks "
                       "(validation excluded) / images/s of bare train steps on a constant "
                       "batch", "value": ratio, "threshold": FIT_VS_STEPS,
        "passed": None if ratio is None else ratio >= FIT_VS_STEPS})
  return targets


def markdown_lines(rows):
  """The Markdown table of the rows (empty without rows)."""
  if not rows:
    return []
  lines = ["", f"Training throughput as a user sees it: epoch 2 of {EPOCHS} of `fit` with the "
           f"trainer's callbacks (batch {rows[0]['batch_size']}, validation time excluded) vs "
           "bare train steps on one fixed batch:", "",
           "| preset | epoch images | fit images/s | bare steps images/s | ratio | verdict | with "
           "validation | steady steps ratio | first batch s | per-epoch s | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    passed = None if row["ratio"] is None else row["ratio"] >= FIT_VS_STEPS
    verdict = {True: "pass", False: "FAIL", None: "not measured"}[passed]
    lines.append(
        f"| {row['preset']} | {row['images']:,} | {fmt(row['fit_images_per_s'], 1)} | "
        f"{fmt(row['bare_images_per_s'], 1)} | {fmt(row['ratio'], 3)} | {verdict} | "
        f"{fmt(row['ratio_with_validation'], 3)} | {fmt(row['steps_ratio'], 3)} | "
        f"{fmt(row['first_batch_seconds'], 2)} | {fmt(row['per_epoch_seconds'], 2)} | "
        f"{fmt(row['peak_rss_mb'])} |")
  return lines


def _datasets(spec):
  """(train, validation, preview images) as tools.train_common builds them."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from data_pipeline import make_dataset
  from data_pipeline import manifest as manifest_lib
  # pylint: enable=g-import-not-at-top
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
  """The callback that times epoch 2 and runs the bare steps' first half before fit's epochs."""
  import keras  # pylint: disable=g-import-not-at-top

  class EpochTimer(keras.callbacks.Callback):
    """Runs after the trainer's callbacks; see the module docstring, steps 2 and 3."""

    def __init__(self, bare_iterator, warmup_steps, first_half, best_path):
      super().__init__()
      self.bare_iterator, self.warmup_steps = bare_iterator, warmup_steps
      self.first_half, self.best_path = first_half, best_path
      self.start, self.end = None, None
      self.first_batch_end, self.last_batch_end = None, None
      self.test_begin, self.test_end = None, None
      self.bare_seconds, self.best_mtime = 0.0, None

    def _best_mtime(self):
      return os.path.getmtime(self.best_path) if os.path.exists(self.best_path) else None

    def on_train_batch_end(self, batch, logs=None):
      self.last_batch_end = time.perf_counter()
      if batch == 0:
        self.first_batch_end = self.last_batch_end

    def on_test_begin(self, logs=None):
      self.test_begin = time.perf_counter()

    def on_test_end(self, logs=None):
      self.test_end = time.perf_counter()

    def on_train_begin(self, logs=None):
      # Before fit's first epoch, while it holds no dataset iterator: in between epochs the
      # bare steps would prolong the life of the iterator that fit tears down at the next
      # epoch's start, and with it that teardown's wait (see first_batch_seconds).
      _bare_steps(self.model, self.bare_iterator, self.warmup_steps)  # Traces; not timed.
      self.bare_seconds += _bare_steps(self.model, self.bare_iterator, self.first_half)

    def on_epoch_end(self, epoch, logs=None):
      if epoch == 0:
        self.best_mtime = self._best_mtime()
        self.test_begin = self.test_end = None
        self.start = time.perf_counter()
      elif epoch == 1:
        self.end = time.perf_counter()

    def seconds(self):
      validation = (self.test_end - self.test_begin) if self.test_begin is not None else 0.0
      return {"epoch": self.end - self.start, "validation": validation,
              "first_batch": self.first_batch_end - self.start,
              "steps": self.last_batch_end - self.start}

    def best_saved(self):
      return self._best_mtime() != self.best_mtime

  return EpochTimer


def measure(spec):
  """The child's work: one preset's fit epoch and bare steps (see the module docstring)."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from modeling import config as config_lib
  from modeling import run_dir as run_dir_lib
  from modeling import training
  # pylint: enable=g-import-not-at-top
  batch_size = spec["batch_size"]
  steps = spec["images"] // batch_size
  model_config = config_lib.resolve_config(spec["preset"], {"image_size": spec["image_size"]})
  train_ds, val_ds, num_val, preview = _datasets(spec)
  validation_steps = min(spec["validation_steps"], -(-num_val // batch_size)) if num_val else None
  constant = tf.data.Dataset.from_tensors(next(iter(train_ds))).repeat()
  first_half = steps // 2
  if os.path.exists(spec["run_dir"]):  # A leftover run would be resumed, not trained.
    shutil.rmtree(spec["run_dir"])
  timer = _timer_class()(iter(constant), spec["warmup_steps"], first_half,
                         run_dir_lib.paths(spec["run_dir"]).best)
  train_config = training.TrainConfig(epochs=EPOCHS, batch_size=batch_size,
                                      validation_steps=validation_steps, seed=spec["seed"])
  training.train(model_config, train_config, train_ds, val_ds, spec["run_dir"],
                 preview_images=preview, callbacks=(timer,))
  bare_seconds = timer.bare_seconds + _bare_steps(timer.model, timer.bare_iterator,
                                                  steps - first_half)
  seconds = timer.seconds()
  images = steps * batch_size
  bare_rate = images / bare_seconds if bare_seconds > 0 else None
  result = {"preset": spec["preset"], "parameters": int(timer.model.count_params()),
            "images": images, "batch_size": batch_size, "steps": steps,
            "validation_steps": validation_steps, "warmup_steps": spec["warmup_steps"],
            "epoch_seconds": seconds["epoch"], "validation_seconds": seconds["validation"],
            "first_batch_seconds": seconds["first_batch"], "steps_seconds": seconds["steps"],
            "best_checkpoint_saved": timer.best_saved(), "bare_steps": steps,
            "bare_seconds": bare_seconds, "bare_images_per_s": bare_rate,
            **ratios(images, steps, seconds, bare_rate), "peak_rss_mb": peak_rss_mb()}
  shutil.rmtree(spec["run_dir"])  # Scratch: hundreds of MB of checkpoints for ae_z1600.
  return result


if __name__ == "__main__":
  sys.exit(child_tasks.child_main(sys.argv, measure))
