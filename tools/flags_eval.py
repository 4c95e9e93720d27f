"""Flags that the evaluation tools share (encode, analyze_latents, generate,
compare_reconstructions): each defined here once, with its validator.

A tool calls the `define_*` functions it needs at import time, with its own help text where the
flag means something particular to it, and then `flags.adopt_module_key_flags` on this module
(and on tools.flags_data, which defines --data_dir, --seed and the split flags) so that
--helpshort lists them. Names, defaults and validators are the public contract
(../shared/DESIGN.md). Imports only absl and modeling.flag_choices (pure Python), so --help and
flag errors answer without loading TensorFlow.
"""

import contextlib

from absl import flags

from evaluation.errors import FlagValueError
from modeling import flag_choices
from tools import _cli

RUN_DIR_HELP = "Run dir written by tools.train_ae or tools.train_vae."


def define_model_dir(help_text=RUN_DIR_HELP):
  """--model_dir: a run dir (None unless given)."""
  flags.DEFINE_string("model_dir", None, help_text)


def define_checkpoint(of="the run"):
  """--checkpoint: which model file of a run dir is loaded (final or best)."""
  flags.DEFINE_enum("checkpoint", "final", flag_choices.CHECKPOINTS, f"Model file of {of}: final "
                    "(model.keras) or best (best.keras, lowest validation loss).")


def define_output_dir(what):
  """--output_dir: the folder that receives `what` (created if needed)."""
  flags.DEFINE_string("output_dir", None, f"Directory for {what} (created if needed; files of "
                      "an earlier run are replaced).")


def define_face_judge(default_images, images_help):
  """--face_judge (bool) and --face_judge_images: the independent face judge and its cap.

  The judge is MTCNN (evaluation.face_judge); --noface_judge leaves the face figures out
  (null in the report).

  Args:
    default_images: the default of --face_judge_images.
    images_help: what --face_judge_images caps, for its help.
  """
  flags.DEFINE_bool("face_judge", True, "Measure face figures (face rate, face score, FD-face, "
                    "with 95 % intervals) with the independent face judge (MTCNN), calibrated "
                    "on the real images; --noface_judge leaves them out (null).")
  flags.DEFINE_integer("face_judge_images", default_images, images_help, lower_bound=1)


def parse_floats(values):
  """A DEFINE_list value (strings) as a tuple of floats; None when one is not a number."""
  try:
    return tuple(float(v) for v in values)
  except (TypeError, ValueError):
    return None


def register_float_list(name, what, allowed=lambda value: True):
  """A validator: --name must be a non-empty comma list of numbers, each `allowed`.

  Args:
    name: the list flag.
    what: what the values are, for the message (e.g. "numbers > 0, e.g. 0.5,1,4").
    allowed: a test of one value.
  """
  def check(values):
    parsed = parse_floats(values or [])
    if not parsed or not all(allowed(v) for v in parsed):
      raise flags.ValidationError(f"--{name} needs a comma list of {what}; got "
                                  f"{','.join(values or []) or 'nothing'}")
    return True
  flags.register_validator(name, check)


def define_sharpen(default, help_text):
  """--sharpen: PIL sharpness factors >= 0 (1 = unchanged)."""
  flags.DEFINE_list("sharpen", default, help_text)
  register_float_list("sharpen", "factors >= 0, e.g. 1,7", lambda v: v >= 0)


def flag_values(names):
  """{name: value} of the given flags, as the reports record them."""
  return {name: flags.FLAGS[name].value for name in names}


@contextlib.contextmanager
def flag_errors():
  """Reports a FlagValueError of the libraries (a flag the inputs refute) as a bad flag: exit 2."""
  try:
    yield
  except FlagValueError as error:
    raise _cli.FlagError(str(error)) from None
