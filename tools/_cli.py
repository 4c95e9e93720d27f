"""The shared shape of every tool: flag parsing, one-line errors and exit codes.

Exit codes: 0 success; 1 a problem with the user's data, files or run dirs; 2 a bad flag
(missing, malformed, out of range, or contradicting another flag); 130 interrupted.
User mistakes are printed as one `error: ...` line on stderr, never as a traceback; real bugs
still raise so that they can be reported.
"""

import importlib.util
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from data_pipeline.errors import NO_SPACE_ERRNOS
from data_pipeline.errors import DataError
from data_pipeline.provenance import atomic_write_bytes
from evaluation.errors import EvaluationError
from modeling import tf_env
from modeling.errors import ModelError

FLAGS = flags.FLAGS

EXIT_USER_ERROR = 1
EXIT_FLAG_ERROR = 2
USER_ERRORS = (DataError, ModelError, EvaluationError)


class FlagError(Exception):
  """A flag value that the validators could not catch (e.g. depends on the data)."""


def _program():
  main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if main_spec is not None and main_spec.name:
    return main_spec.name
  return os.path.basename(sys.argv[0]) if sys.argv else "tool"


def fail(message, code=EXIT_USER_ERROR):
  """Prints one error line and exits; for checks done inside a tool's main."""
  sys.stderr.write(f"{_program()}: error: {message}\n")
  sys.exit(code)


def _parse_flags(argv):
  try:
    remaining = FLAGS(argv)
  except flags.Error as error:
    message = " ".join(str(error).split())
    if "Unable to open flagfile" in message:  # absl's wording: "ERROR:: Unable to open ...".
      message = "--flagfile " + message.split("Unable to open flagfile:", 1)[1].strip()
      fail(f"{message}; check the path of --flagfile", EXIT_FLAG_ERROR)
    fail(f"{message} (see --helpshort)", EXIT_FLAG_ERROR)
  expand_home()
  return remaining


def expand_home():
  """Expands a leading `~` in every string flag and list-flag item, as the shell would have.

  A value the shell did not expand (quoted, `--flag=~/x` in some shells, or read from a
  flagfile) would otherwise become a folder literally named `~` in the current directory.
  """
  for name in FLAGS:
    flag = FLAGS[name]
    if isinstance(flag.value, str) and flag.value.startswith("~"):
      flag.value = os.path.expanduser(flag.value)
    elif isinstance(flag.value, list) and any(
        isinstance(item, str) and item.startswith("~") for item in flag.value):
      flag.value = [os.path.expanduser(item) if isinstance(item, str) else item
                    for item in flag.value]


def _no_space_where(error):
  """'FOLDER (what failed)' for a write that failed on a full disk or quota, else None."""
  if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
    if error.filename:
      return f"{os.path.dirname(os.path.abspath(error.filename))} (writing " \
             f"{os.path.basename(error.filename)}: {error.strerror})"
    return f"the output folder ({error.strerror or error})"
  tf = sys.modules.get("tensorflow")
  if (tf is not None and isinstance(error, tf.errors.ResourceExhaustedError)
      and "space" in str(error).lower()):
    # TensorFlow words a failed write as "<path>; No space left on device".
    path, _, reason = str(error).splitlines()[0].rpartition("; ")
    return f"{os.path.dirname(path) or 'the output folder'} ({reason})"
  return None


def _guarded(main):
  def wrapper(argv):
    if len(argv) > 1:
      fail(f"unexpected positional arguments {argv[1:]}; every input is a --flag (see "
           "--helpshort)", EXIT_FLAG_ERROR)
    try:
      return main(argv)
    except FlagError as error:
      fail(str(error), EXIT_FLAG_ERROR)
    except USER_ERRORS as error:
      fail(str(error), EXIT_USER_ERROR)
    except Exception as error:  # pylint: disable=broad-except
      where = _no_space_where(error)
      if where is None:
        raise
      fail(f"no space left on the device of {where}; free space there, then rerun the same "
           "command: what is complete is kept and it goes on from there", EXIT_USER_ERROR)
    except KeyboardInterrupt:
      # Exiting already: a Ctrl-C pressed again would break into the exit's clean-up.
      signal.signal(signal.SIGINT, signal.SIG_IGN)
      fail("interrupted; rerun the same command to continue where it stopped", 130)
  return wrapper


def _prepare_tensorflow():
  """Settings TensorFlow reads once, at its first import (tools import it inside main)."""
  # Level 1 hides TensorFlow's C++ INFO lines and keeps its warnings; a level the user set stays.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  tf_env.enable_onednn()
  if importlib.util.find_spec("tensorflow") is None:
    fail("TensorFlow is not installed. Install the project with the extra that fits this "
         "machine: pip install -e '.[cpu]' (CPU) or pip install -e '.[gpu]' (NVIDIA GPU).")


def run(main, required=()):
  """Marks the required flags and runs `main` under absl with one-line user errors."""
  _prepare_tensorflow()
  for name in required:
    flags.mark_flag_as_required(name)
  logging.set_verbosity(logging.INFO)
  app.run(_guarded(main), flags_parser=_parse_flags)


def write_flagfile(path):
  """Writes the resolved flags of this tool as a flagfile (`--flagfile=PATH` reruns it)."""
  main_module = sys.argv[0]
  module_flags = FLAGS.flags_by_module_dict().get(main_module, [])
  lines = [f.serialize() for f in module_flags if f.value is not None and f.serialize()]
  for module, defined in FLAGS.flags_by_module_dict().items():
    if module.startswith("tools.") and module != main_module:
      lines += [f.serialize() for f in defined if f.value is not None and f.serialize()]
  atomic_write_bytes(path, ("\n".join(sorted(set(lines))) + "\n").encode("utf-8"))
