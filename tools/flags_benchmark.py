"""Flags that the benchmark tools share (benchmark_pipeline, benchmark_latents), defined once,
and the pipeline benchmark's training-throughput flags (`define_fit_flags`).

A tool calls the `define_*` functions it needs at import time and then
`flags.adopt_module_key_flags` on this module so that --helpshort lists them. Names, defaults
and validators are the public contract (../shared/DESIGN.md). Imports only absl, so --help and
flag errors answer at once.
"""

import os

from absl import flags


def register_file_path(name, example):
  """A validator: --name must not be an existing folder (found before a long run, not after).

  Args:
    name: a flag naming an output file.
    example: the file name suggested inside that folder, e.g. "pipeline.json".
  """
  def check(path):
    if path and os.path.isdir(path):
      raise flags.ValidationError(f"--{name} {path} is a directory; give a file path such as "
                                  f"{os.path.join(path, example)}")
    return True
  flags.register_validator(name, check)


def define_output_json(example):
  """--output_json: the report file; its folder is created if needed."""
  flags.DEFINE_string("output_json", None, "Report file (JSON) to write; its folder is created "
                      "if needed.")
  register_file_path("output_json", example)


def define_work_dir(holds, default):
  """--work_dir: the benchmark's scratch folder; `holds` and `default` complete its help."""
  flags.DEFINE_string("work_dir", None, f"Folder for {holds}; default: {default}.")


def define_child_timeout(default_s, what):
  """--child_timeout_s: seconds after which a measuring child process is stopped as failed."""
  flags.DEFINE_float("child_timeout_s", default_s, f"Seconds after which {what} is stopped as "
                     "failed.")
  flags.register_validator("child_timeout_s", lambda value: value > 0,
                           message="--child_timeout_s must be > 0 seconds")


def define_fit_flags(presets, default_presets, default_images):
  """--train_presets, --train_images, --train_validation_steps (training throughput).

  Training throughput as a user sees it: a fit epoch with the trainer's callbacks vs bare train
  steps, per preset (benchmarks.training).

  Args:
    presets: every preset name (the choices).
    default_presets: the presets measured by default.
    default_images: the default epoch lengths, in words for --train_images' help.
  """
  flags.DEFINE_list("train_presets", list(default_presets), "Model presets whose training "
                    "throughput is measured (comma list of " + ", ".join(presets) + "; empty "
                    "skips it): images/s of epochs 2 to 4 of a 4-epoch fit with the trainer's "
                    "callbacks over images/s of bare train steps on one fixed batch, and every "
                    "epoch's first batch over a steady step. One child process per preset; "
                    "'fit_vs_steps' and 'epoch_start_vs_step' in the report's definitions.")
  flags.DEFINE_integer("train_images", None, "Training images per epoch of that measurement, "
                       "for every preset (whole batches of --batch_size; 2 or more give a steady "
                       "step); default: per preset (about 60 s of steps on a 2-core CPU: "
                       + default_images + "), capped at the data dir's training images. The "
                       "ratio depends on the epoch's length: see per_epoch_seconds in the "
                       "report's definitions.",
                       lower_bound=1)
  flags.DEFINE_integer("train_validation_steps", 1, "Validation batches per epoch of that "
                       "measurement (timed apart from the ratio's epoch time).", lower_bound=1)

  def check_presets(values):
    unknown = [v for v in values or [] if v not in presets]
    if unknown:
      raise flags.ValidationError(f"--train_presets: unknown value(s) {', '.join(unknown)}; "
                                  f"choose from {', '.join(presets)}")
    if len(set(values)) != len(values):
      raise flags.ValidationError(f"--train_presets lists a value twice: {','.join(values)}")
    return True

  def check_images(f):
    if f["train_images"] and f["batch_size"] and f["train_images"] < f["batch_size"]:
      raise flags.ValidationError(f"--train_images {f['train_images']} is smaller than "
                                  f"--batch_size {f['batch_size']}; an epoch needs a whole batch")
    return True

  flags.register_validator("train_presets", check_presets)
  flags.register_multi_flags_validator(["train_images", "batch_size"], check_images)
