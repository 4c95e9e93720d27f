"""Z-point files: N x z_dim float32 .npy written and read without holding them in RAM.

Layout (written by tools.encode):
- Z.npy: [N, z_dim] float32, one row per image in the order the split was read;
- Z.ids.npy: [N] CelebA file names ("000001.jpg") of the rows;
- Z.log_var.npy (VAE, --with_log_var): [N, z_dim] float32 log-variances of q(z|x).

Writers fill a memory-mapped temporary file and rename it into place when complete, so an
interrupted encode never leaves a truncated Z.npy that looks finished.
"""

import contextlib
import mmap
import os

import numpy as np
from tqdm import tqdm

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
    # The scan reads the whole file; like iter_chunks, hand the pages back as it goes so that
    # loading a file larger than RAM does not fill this process's resident memory.
    _release_pages(z)
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
    # The map's file is sparse: on a full disk, a write into it would kill the process with
    # SIGBUS. Its blocks are allocated now instead, where a full disk is an OSError.
    try:
      with open(self._tmp, "r+b") as f:
        if hasattr(os, "posix_fallocate"):
          os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as error:
      self._array = None
      os.remove(self._tmp)
      raise OSError(error.errno, error.strerror, self.path) from error
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
  try:
    np.save(tmp, np.asarray(array), allow_pickle=False)
    os.replace(tmp, target)
  except OSError as error:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise OSError(error.errno, error.strerror, target) from error
  return target


def iter_chunks(z, chunk_rows, rows=None):
  """Yields consecutive float64 chunks [<= chunk_rows, dim] of z (or of z[rows], in order).

  Memory is O(chunk_rows * dim) whatever N is. For a memory-mapped z the pages of a chunk are
  handed back to the page cache once it has been used (madvise DONTNEED), so that a pass over
  a file larger than RAM does not show up as resident memory of this process.

  Args:
    z: [N, dim] array or np.memmap.
    chunk_rows: rows per chunk (>= 1).
    rows: optional sorted indices into z: yields z[rows] in chunks instead.
  """
  chunk_rows = max(1, int(chunk_rows))
  total = len(z) if rows is None else len(rows)
  for start in range(0, total, chunk_rows):
    if rows is None:
      block = z[start:start + chunk_rows]
    else:
      block = z[rows[start:start + chunk_rows]]
    yield np.asarray(block, dtype=np.float64)
    _release_pages(z)


def _release_pages(z):
  # np.memmap keeps its mmap.mmap in `_mmap` (also on views of it); dropping our mapping of
  # clean, read-only file pages is safe: a later read faults them back in from the page cache.
  mapped = getattr(z, "_mmap", None)
  advise = getattr(mapped, "madvise", None)
  dont_need = getattr(mmap, "MADV_DONTNEED", None)
  if advise is None or dont_need is None or getattr(z, "mode", "r") != "r":
    return
  try:
    advise(dont_need)
  except (OSError, ValueError):  # A closed map or a platform that refuses: nothing to free.
    pass


def encode_to_npy(encode_fn, batches, output, total, *, with_log_var=False,
                  description="encoding"):
  """Streams images through an encoder into Z.npy (+ Z.ids.npy, + Z.log_var.npy), atomically.

  Args:
    encode_fn: uint8 images [B, S, S, 3] -> z [B, dim], or -> (z_mean, z_log_var) when
      `with_log_var`.
    batches: iterable of dicts with "image" (uint8 [B, S, S, 3]) and "id" ([B] bytes or str).
    output: path of Z.npy.
    total: number of images the batches hold (the files are allocated for exactly this many).
    with_log_var: also write the log-variances to Z.log_var.npy.
    description: progress bar text.

  Returns:
    {"num_vectors", "dim", "files": [written paths]}.

  Raises:
    EvaluationError: the batches held no images or not `total` of them (nothing is written).
  """
  output = os.fspath(output)
  ids, iterator = [], iter(batches)
  first = next(iterator, None)
  if first is None or int(total) < 1:
    raise EvaluationError(f"no images to encode into {output}: the data split is empty")

  def encoded(batch):
    out = encode_fn(batch["image"])
    if with_log_var:
      return np.asarray(out[0], np.float32), np.asarray(out[1], np.float32)
    return np.asarray(out, np.float32), None

  z0, lv0 = encoded(first)
  paths = [output] + ([companion_path(output, "log_var")] if with_log_var else [])
  # Leaving the stack closes the log-variance writer first; if it raises (rows missing), the
  # z writer sees the error and removes its temporary file too: all files or none.
  with contextlib.ExitStack() as stack:
    progress = stack.enter_context(tqdm(total=total, desc=description, unit="img",
                                        disable=None))
    writers = [stack.enter_context(ZPointsWriter(path, total, z0.shape[1])) for path in paths]
    batch, z, lv = first, z0, lv0
    while batch is not None:
      writers[0].append(z)
      if with_log_var:
        writers[1].append(lv)
      ids.extend(_as_text(v) for v in np.asarray(batch["id"]).reshape(-1))
      progress.update(len(z))
      batch = next(iterator, None)
      if batch is not None:
        z, lv = encoded(batch)
  files = paths + [save_companion(output, "ids", np.asarray(ids, dtype=str))]
  return {"num_vectors": int(total), "dim": int(z0.shape[1]), "files": files}


def _as_text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
