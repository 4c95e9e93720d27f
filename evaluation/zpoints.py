"""Z-point files: N x z_dim float32 .npy written and read without holding them in RAM.

Layout (written by tools.encode):
- Z.npy: [N, z_dim] float32, one row per image in the order the split was read;
- Z.ids.npy: [N] CelebA file names ("000001.jpg") of the rows;
- Z.log_var.npy (VAE, --with_log_var): [N, z_dim] float32 log-variances of q(z|x).

Writers fill a memory-mapped temporary file and rename it into place when complete, so an
interrupted encode never leaves a truncated Z.npy that looks finished.
"""

import os

import numpy as np

from evaluation.errors import EvaluationError

_CHECK_ROWS = 65536  # Rows checked for NaN/Inf at a time: bounded memory on big files.


def companion_path(path, kind):
  """Z.npy -> Z.ids.npy / Z.log_var.npy."""
  base = path[:-4] if path.endswith(".npy") else path
  return f"{base}.{kind}.npy"


def load_z_points(path, *, what="--z_points"):
  """Opens a z-point file memory-mapped, after checking it.

  Returns:
    A read-only [N, dim] float array (np.memmap).

  Raises:
    EvaluationError: missing or unreadable file, not 2-D, not floating point, empty, or any
      NaN/Inf (named with the first bad row).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise EvaluationError(f"{what} {path} does not exist; write it with tools.encode")
  try:
    z = np.load(path, mmap_mode="r", allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise EvaluationError(f"{what} {path} is not a readable .npy file ({e}); "
                          "rewrite it with tools.encode") from None
  if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
    raise EvaluationError(f"{what} {path} must hold a non-empty [N, z_dim] array, got shape "
                          f"{z.shape}")
  if not np.issubdtype(z.dtype, np.floating):
    raise EvaluationError(f"{what} {path} must hold floats, got dtype {z.dtype}")
  for start in range(0, len(z), _CHECK_ROWS):
    finite = np.isfinite(z[start:start + _CHECK_ROWS]).all(axis=1)
    if not finite.all():
      row = start + int(np.argmin(finite))
      raise EvaluationError(f"{what} {path} has NaN or Inf values (first in row {row}); "
                            "re-encode with a model whose training did not diverge")
  return z


def load_ids(path):
  """The ids written beside a z-point file, or None when there are none."""
  ids_path = companion_path(os.fspath(path), "ids")
  if not os.path.isfile(ids_path):
    return None
  return np.load(ids_path, allow_pickle=False)


class ZPointsWriter:
  """Writes rows into a memory-mapped [num_rows, dim] float32 .npy, atomically.

  Use as a context manager; `append(rows)` in order; on a clean exit with every row written the
  temporary file is renamed to `path`, otherwise it is removed.
  """

  def __init__(self, path, num_rows, dim):
    self.path = os.fspath(path)
    self._tmp = f"{self.path}.partial.npy"
    self.num_rows, self.dim, self.filled = int(num_rows), int(dim), 0
    self._array = None

  def __enter__(self):
    directory = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(directory, exist_ok=True)
    self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float32,
                                            shape=(self.num_rows, self.dim))
    return self

  def append(self, rows):
    rows = np.asarray(rows, dtype=np.float32)
    end = self.filled + len(rows)
    if rows.ndim != 2 or rows.shape[1] != self.dim or end > self.num_rows:
      raise EvaluationError(f"cannot append rows of shape {rows.shape} at row {self.filled} "
                            f"of a [{self.num_rows}, {self.dim}] z-point file")
    self._array[self.filled:end] = rows
    self.filled = end

  def __exit__(self, exc_type, exc, tb):
    array, self._array = self._array, None
    array.flush()
    del array  # Closes the map before the rename (needed on Windows, harmless elsewhere).
    if exc_type is None and self.filled == self.num_rows:
      os.replace(self._tmp, self.path)
      return False
    if os.path.exists(self._tmp):
      os.remove(self._tmp)
    if exc_type is None:
      raise EvaluationError(f"only {self.filled} of {self.num_rows} rows were written to "
                            f"{self.path}; nothing was saved")
    return False


def save_companion(path, kind, array):
  """Writes Z.<kind>.npy beside Z.npy atomically (ids, log_var)."""
  target = companion_path(os.fspath(path), kind)
  tmp = f"{target}.partial.npy"
  np.save(tmp, np.asarray(array), allow_pickle=False)
  os.replace(tmp, target)
  return target
