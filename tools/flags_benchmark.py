"""Flags that the benchmark tools share (benchmark_pipeline, benchmark_latents), defined once.

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


def define_child_timeout(default_s, what):
  """--child_timeout_s: seconds after which a measuring child process is stopped as failed."""
  flags.DEFINE_float("child_timeout_s", default_s, f"Seconds after which {what} is stopped as "
                     "failed.")
  flags.register_validator("child_timeout_s", lambda value: value > 0,
                           message="--child_timeout_s must be > 0 seconds")
