"""Flags that the tools reading or writing data share: each defined here once.

A tool calls the `define_*` functions it needs at import time, with its own help text where the
flag means something particular to it, and then `flags.adopt_module_key_flags(flags_data)` so
that --helpshort lists them. Names, defaults and validators are the public contract of every
tool that uses them (../shared/DESIGN.md). Imports only absl and modeling.choices (pure
Python), so --help and flag errors answer at once.
"""

from absl import flags

from modeling import choices

DATA_DIR_HELP = "Prepared data dir (tools.prepare_data)."


def define_data_dir(help_text=DATA_DIR_HELP):
  """--data_dir: a data dir written by tools.prepare_data (None unless given)."""
  flags.DEFINE_string("data_dir", None, help_text)


def define_seed(help_text):
  """--seed: an integer >= 0, default 0; `help_text` says what it seeds in this tool."""
  flags.DEFINE_integer("seed", 0, help_text, lower_bound=0)


def define_split(help_text, default="train", name="split"):
  """An enum flag over the data's splits (train, validation, test)."""
  flags.DEFINE_enum(name, default, choices.SPLITS, help_text)
