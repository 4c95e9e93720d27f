"""Runs a tool for CLI tests: in a subprocess as a user would, or its entry point in-process.

`run_tool` starts `python -m tools.NAME ...`: each call loads TensorFlow anew (5-8 s), so it is
kept for what only a real process shows (exit codes of the interpreter, signals, locks held by
another process, TensorFlow's own C++ lines on fd 2) and for one run per tool family.
`run_main` runs the same `run()` entry point (absl's app.run, the tool's flags, its one-line
errors and exit codes) inside the test process and returns the same kind of result.
"""

import contextlib
import io
import os
import signal
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def ctrl_c_reaches_children():
  """Processes started inside the block get SIGINT at its default, as from a terminal.

  An ignored SIGINT (a shell's background job has it, so a suite may be run that way) is
  inherited through exec; a handled one is reset to the default there.
  """
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)


def run_tool(name, *args, timeout=600, env=None):
  """Runs `python -m tools.<name> args...`; returns the CompletedProcess (text mode)."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
  full_env.update(env or {})
  return subprocess.run([sys.executable, "-m", f"tools.{name}", *map(str, args)],
                        cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _forget_tools(flag_values):
  """Drops the tools' modules and the flags they defined, so the next import defines anew."""
  for name in [n for n in sys.modules if n.startswith("tools.")]:
    del sys.modules[name]
  for name in list(flag_values):
    if (flag_values.find_module_defining_flag(name) or "").startswith("tools."):
      delattr(flag_values, name)


def run_main(name, *args):
  """Runs tools.<name>'s `run()` in this process as `python -m tools.<name> args...` would.

  The tool's module is imported fresh (its flags defined anew, at their defaults) and removed
  again afterwards with every flag it defined; Keras' global dtype policy and absl's verbosity
  are restored. Its stdout and stderr (Python's streams and absl's log; not TensorFlow's C++
  lines) are captured.

  Returns:
    subprocess.CompletedProcess with returncode (the tool's exit code), stdout and stderr.
  """
  import importlib  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  argv = [os.path.join(REPO_ROOT, "tools", f"{name}.py"), *map(str, args)]
  policy, verbosity = keras.mixed_precision.global_policy().name, logging.get_verbosity()
  handler = logging.get_absl_handler().python_handler
  stream, saved_argv, saved_main = handler.stream, sys.argv, sys.modules["__main__"]
  stdout, stderr = io.StringIO(), io.StringIO()
  code = 0
  _forget_tools(flags.FLAGS)
  try:
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      handler.stream, sys.argv = stderr, argv
      try:
        tool = importlib.import_module(f"tools.{name}")
        sys.modules["__main__"] = tool  # As under `python -m`: names the program in errors.
        tool.run()
      except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
  finally:
    handler.stream, sys.argv, sys.modules["__main__"] = stream, saved_argv, saved_main
    keras.mixed_precision.set_global_policy(policy)
    logging.set_verbosity(verbosity)
    _forget_tools(flags.FLAGS)
  return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def error_lines(result):
  """The `error:` lines a tool printed on stderr."""
  return [line for line in result.stderr.splitlines() if ": error: " in line]


def assert_clean_error(result, *expected, code=None):
  """Asserts a one-line error (no traceback) that mentions every string in `expected`."""
  assert result.returncode != 0, f"expected failure, got success:\n{result.stdout}"
  if code is not None:
    assert result.returncode == code, (result.returncode, result.stderr)
  assert "Traceback" not in result.stderr, result.stderr
  errors = error_lines(result)
  assert len(errors) == 1, result.stderr
  for text in expected:
    assert text in errors[0], (text, errors[0])
  return errors[0]
