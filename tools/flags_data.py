"""Flags that tools read or write data with, shared across the tool families (data tools,
trainers, evaluation tools, benchmarks, the demo): each defined here once.

A tool calls the `define_*` functions it needs at import time, with its own help text where the
flag means something particular to it, and then `flags.adopt_module_key_flags(flags_data)` so
that --helpshort lists them. Names, defaults and validators are the public contract of every
tool that uses them (../shared/DESIGN.md). Imports only absl and modeling.flag_choices (pure
Python), so --help and flag errors answer at once.
"""

from absl import flags

from modeling import flag_choices

DATA_DIR_HELP = "Prepared data dir (tools.prepare_data)."


def define_data_dir(help_text=DATA_DIR_HELP):
  """--data_dir: a data dir written by tools.prepare_data (None unless given)."""
  flags.DEFINE_string("data_dir", None, help_text)


def define_seed(help_text):
  """--seed: an integer >= 0, default 0; `help_text` says what it seeds in this tool."""
  flags.DEFINE_integer("seed", 0, help_text, lower_bound=0)


def define_max_images(help_text, lower_bound=1):
  """--max_images: use only the first N images (None: all); `help_text` says of what."""
  flags.DEFINE_integer("max_images", None, help_text, lower_bound=lower_bound)


def define_batch_size(default, help_text):
  """--batch_size: images per batch (per model call, or the global training batch), >= 1."""
  flags.DEFINE_integer("batch_size", default, help_text, lower_bound=1)


def define_output_dir(help_text):
  """--output_dir: the folder a tool writes (None unless given)."""
  flags.DEFINE_string("output_dir", None, help_text)


def define_overwrite(help_text):
  """--overwrite (bool, default False): what it replaces is the tool's `help_text`."""
  flags.DEFINE_boolean("overwrite", False, help_text)


def define_num_workers(help_text):
  """--num_workers: worker processes, >= 1 (None: all cores)."""
  flags.DEFINE_integer("num_workers", None, help_text, lower_bound=1)


def define_jpeg_quality(help_text):
  """--jpeg_quality: JPEG quality in [1, 100], default 95 (CelebA's is about 95)."""
  flags.DEFINE_integer("jpeg_quality", 95, help_text, lower_bound=1, upper_bound=100)


def define_progress():
  """--progress (bool, default True): a progress bar on stderr."""
  flags.DEFINE_boolean("progress", True, "Show a progress bar.")


def define_shuffle_buffer(help_text):
  """--shuffle_buffer: records in tf.data's shuffle buffer, >= 1, default 1024."""
  flags.DEFINE_integer("shuffle_buffer", 1024, help_text, lower_bound=1)


def define_split(help_text, default="train", name="split"):
  """An enum flag over the data's splits (train, validation, test)."""
  flags.DEFINE_enum(name, default, flag_choices.SPLITS, help_text)
