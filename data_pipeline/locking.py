"""An exclusive lock on an output dir, so that two writers refuse each other instead of mixing.

`exclusive(directory)` opens `directory/.prepare.lock` and takes a non-blocking exclusive
`fcntl.flock` on it for as long as the `with` block runs; a second holder (another process, or
another open of the file in this one) gets a `DataError` naming the holder's pid.

The lock is the kernel's flock, not the file: the kernel drops it when the holder closes the
file or dies in any way (SIGKILL and the out-of-memory killer included), so a crashed run never
leaves a stale lock behind, and the file may stay (it holds only the last holder's pid, for the
error message). Deleting it on exit would open a race (a waiter could lock the deleted file
while a newcomer locks a fresh one), so it is never deleted.

Children forked while the lock is held (the writer's worker pool) close their inherited copy
at once: flock locks belong to the open file description, which a fork shares, and a worker
orphaned by a killed parent must not keep the dir locked.

Where flock is missing (not POSIX) or unsupported by the filesystem (some network mounts), the
dir is not locked and a warning says so.
"""

import contextlib
import errno
import os

from absl import logging

from data_pipeline.errors import DataError

try:
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # Not POSIX.
  fcntl = None

LOCK_FILE = ".prepare.lock"
# flock answers these where the filesystem cannot lock at all (rather than "someone holds it").
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

_held = {}  # fd -> pid of the process that took the lock (a forked child sees its parent's).


def _close_inherited():
  for fd, owner in list(_held.items()):
    if owner != os.getpid():
      del _held[fd]
      with contextlib.suppress(OSError):
        os.close(fd)  # Drops only this child's reference; the parent keeps its lock.


if hasattr(os, "register_at_fork"):
  os.register_at_fork(after_in_child=_close_inherited)


def _holder_pid(fd):
  with contextlib.suppress(OSError, ValueError):
    return int(os.pread(fd, 32, 0).decode("ascii").strip())
  return "unknown"  # The holder has not written its pid yet, or an old file.


@contextlib.contextmanager
def exclusive(directory, holder="prepare_data", flag="--output_dir"):
  """Holds an exclusive lock on `directory` (which must exist) for the `with` block.

  Args:
    directory: the dir to lock; `LOCK_FILE` is created in it.
    holder: what holds such locks, for the error message (e.g. "prepare_data").
    flag: the flag that names the dir, for the error message.

  Yields:
    The lock file's path.

  Raises:
    DataError: another process (or another open in this one) holds the lock.
    OSError: the lock file cannot be created (read-only dir, full disk): the caller knows what
      the dir is for and words that error.
  """
  path = os.path.join(directory, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    locked = False
    if fcntl is not None:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
      except BlockingIOError:
        raise DataError(f"{flag} {directory} is being written by another {holder} process "
                        f"(pid {_holder_pid(fd)}); wait for it to finish, or choose another "
                        f"{flag}") from None
      except OSError as error:
        if error.errno not in _UNSUPPORTED:
          raise
    if not locked:
      logging.warning("cannot lock %s (no flock here); make sure that no other %s process "
                      "writes into %s at the same time", path, holder, directory)
    _held[fd] = os.getpid()
    # Only for the message of a refused second writer; a full disk must not stop the run here.
    with contextlib.suppress(OSError):
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    yield path
  finally:
    _held.pop(fd, None)
    os.close(fd)
