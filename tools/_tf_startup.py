"""Keeps TensorFlow's start-up log lines below TF_CPP_MIN_LOG_LEVEL out of the tools' output.

`tools/__init__.py` sets TF_CPP_MIN_LOG_LEVEL to "1" unless the user chose a level. TensorFlow
honours it only once its logging is initialized, and prints a few lines before that while
`import tensorflow` runs (absl's "All log messages before absl::InitializeLog()" notice and, where
oneDNN is on, its INFO line). `install` filters stderr (fd 2) for exactly that window: lines
below the level are dropped, everything else passes unchanged. The filter is a child process,
not a thread, so that the last line before a crash in the import still gets out; TensorFlow is
imported lazily, hence an import hook rather than an import here.
"""

import importlib.abc
import os
import subprocess
import sys

# absl's notice that logging is not initialized yet; it carries nothing for a user.
ABSL_PREINIT_NOTICE = ("WARNING: All log messages before absl::InitializeLog() is called are "
                       "written to STDERR")

# The filter process. A line dropped: a TensorFlow (absl-format) log line whose severity is
# below the level, e.g. "I0000 00:00:1796132226.724532    3812 port.cc:153] ...", or the notice.
# Once stderr is gone (a closed pipe), it keeps reading so that the tool never writes into a
# broken pipe.
_FILTER = r"""
import re, sys
level, notice = int(sys.argv[1]), sys.argv[2].encode()
header = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
rank = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
out, open_ = sys.stdout.buffer, True
for line in sys.stdin.buffer:
  match = header.match(line)
  if (match and rank[match.group(1)] < level) or (level >= 1 and line.rstrip() == notice):
    continue
  if open_:
    try:
      out.write(line)
      out.flush()
    except OSError:
      open_ = False
"""


def min_log_level():
  """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0 when unset or not a number)."""
  try:
    return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
  except ValueError:
    return 0


class _FilteredStderr:
  """While active, fd 2 goes through the filter process; restores fd 2 when it ends."""

  def __init__(self, level):
    self._level = level
    self._saved = None
    self._child = None

  def __enter__(self):
    try:
      if sys.stderr is not None:
        sys.stderr.flush()
      self._saved = os.dup(2)
      self._child = subprocess.Popen(
          [sys.executable, "-I", "-S", "-c", _FILTER, str(self._level), ABSL_PREINIT_NOTICE],
          stdin=subprocess.PIPE, stdout=self._saved, stderr=self._saved,
          # Out of the terminal's process group: Ctrl-C interrupts the tool, which then prints
          # its own message, and not the filter, which forwards to the end.
          start_new_session=True)
      os.dup2(self._child.stdin.fileno(), 2)
    except (OSError, ValueError):
      # No filter (no fd 2, no interpreter to start): unfiltered output beats no output.
      self._restore()
    return self

  def __exit__(self, *exc_info):
    self._restore()
    return False

  def _restore(self):
    try:
      if sys.stderr is not None:
        sys.stderr.flush()
    except (OSError, ValueError):
      pass
    if self._saved is not None:
      os.dup2(self._saved, 2)
      os.close(self._saved)
      self._saved = None
    if self._child is not None:
      self._child.stdin.close()
      try:
        # Everything the import wrote is out before anything written after it.
        self._child.wait(timeout=10)
      except subprocess.TimeoutExpired:
        pass  # Someone else still holds the pipe open; the filter ends when they do.
      self._child = None


class _FilteredLoader(importlib.abc.Loader):
  """Runs the real loader of `tensorflow` inside _FilteredStderr."""

  def __init__(self, loader, level):
    self._loader = loader
    self._level = level

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    # One import is all: the hook leaves, and the module keeps TensorFlow's own loader.
    _uninstall()
    module.__loader__ = module.__spec__.loader = self._loader
    with _FilteredStderr(self._level):
      self._loader.exec_module(module)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` with the other finders and wraps its loader.

  It stays until TensorFlow is loaded (not just looked up: importlib.util.find_spec calls
  this too, and that spec may be thrown away).
  """

  def __init__(self, level):
    self._level = level

  def find_spec(self, fullname, path=None, target=None):
    if fullname != "tensorflow":
      return None
    for finder in sys.meta_path:
      find = getattr(finder, "find_spec", None)
      spec = find(fullname, path, target) if find and finder is not self else None
      if spec is not None:
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
          spec.loader = _FilteredLoader(spec.loader, self._level)
        return spec
    return None


def _uninstall():
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TensorFlowFinder)]


def install():
  """Filters TensorFlow's pre-logging lines at its first import (see above).

  Does nothing when TensorFlow is already imported, or when TF_CPP_MIN_LOG_LEVEL is 0 (the
  user asked for every line).
  """
  level = min_log_level()
  if level <= 0 or "tensorflow" in sys.modules:
    return
  if not any(isinstance(finder, _TensorFlowFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _TensorFlowFinder(level))
