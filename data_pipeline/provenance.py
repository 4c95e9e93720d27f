"""Provenance shared by every output dir: content hashes, versions, command line, atomic writes.

Every output directory of celeba-stream records what produced it, so that any number or figure
can be traced back to its inputs and reproduced. Writes go to a temporary name in the same
directory and are renamed into place, so a crash never leaves a half-written file behind.
"""

import hashlib
import json
import os
import platform
import shlex
import sys
import tempfile
from importlib import metadata

_LIBRARIES = ("celeba-stream", "tensorflow", "tensorflow-cpu", "keras", "tensorflow-datasets",
              "numpy", "pillow", "scikit-learn", "absl-py")


def sha256_file(path, chunk_bytes=1 << 20):
  """Hex sha256 of a file's content, read in chunks (bounded memory)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk_bytes), b""):
      digest.update(block)
  return digest.hexdigest()


def library_versions():
  """Versions of Python and of the installed libraries that can change results."""
  versions = {"python": platform.python_version()}
  for name in _LIBRARIES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      continue
  return versions


def command_line():
  """The command line of this process, as a user would retype it (`python -m tools.x ...`)."""
  main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if main_spec is not None and main_spec.name:
    head = ["python", "-m", main_spec.name.removesuffix(".__main__")]
  else:
    head = [os.path.basename(sys.argv[0])] if sys.argv else ["python"]
  return " ".join(shlex.quote(arg) for arg in head + sys.argv[1:])


# Environment variables that change which kernels TensorFlow runs, hence the last digits.
_TF_ENV = ("TF_ENABLE_ONEDNN_OPTS", "TF_DETERMINISTIC_OPS")


def describe_run(seed=None, inputs=None):
  """The common provenance block: inputs (path -> sha256), seed, versions, command line."""
  return {
      "inputs": dict(inputs or {}),
      "seed": seed,
      "versions": library_versions(),
      "command_line": command_line(),
      "platform": platform.platform(),
      # TensorFlow's CPU kernels (modeling/tf_env.py): float rounding differs with the choice.
      "tensorflow_env": {name: os.environ.get(name) for name in _TF_ENV},
  }


def atomic_write_bytes(path, data):
  """Writes `data` to `path` via a temporary file in the same directory and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    # mkstemp creates the file as 0600; give it the mode a plain open() would have.
    os.chmod(tmp_path, 0o666 & ~_umask())
    os.replace(tmp_path, path)
  except BaseException as error:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    if isinstance(error, OSError) and not error.filename:
      # A failed write names no file: name the one that was being written.
      raise OSError(error.errno, error.strerror, path) from error
    raise


def _umask():
  mask = os.umask(0)  # The only portable way to read the umask is to set it and restore it.
  os.umask(mask)
  return mask


def atomic_write_json(path, obj):
  """Writes `obj` as stable, sorted, indented JSON (same content -> same bytes)."""
  text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
  atomic_write_bytes(path, text.encode("utf-8"))
