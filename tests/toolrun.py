"""Runs a tool as a user would (`python -m tools.NAME ...`) in a subprocess, for CLI tests.

Each call is a separate process, and a tool that loads TensorFlow costs seconds to start, so
tests batch their checks per call. Tools import TensorFlow inside main(), which keeps bad-flag
tests fast.
"""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(name, *args, timeout=600, env=None):
  """Runs `python -m tools.<name> args...`; returns the CompletedProcess (text mode)."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
  full_env.update(env or {})
  return subprocess.run([sys.executable, "-m", f"tools.{name}", *map(str, args)],
                        cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
                        timeout=timeout, check=False)


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
