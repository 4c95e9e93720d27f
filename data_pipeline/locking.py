"""Exclusive locks on output dirs, so that two writers refuse each other instead of mixing.

`exclusive(directory)` holds a non-blocking `fcntl.flock` on `directory/.prepare.lock` (the
data writer's) or another lock file; `output_dir(directory, holder, flag)` is what every other
tool uses for its output folder (creates it, locks `.lock`, removes the lock file at the end).
A second holder gets a one-line `DataError` naming the dir, the holder's tool and pid.

The lock is the kernel's, not the file: it is dropped when the holder dies in any way, so no
stale lock survives a crash. Children forked while it is held close their inherited copy.
Where flock is missing or unsupported (some network mounts) the dir is not locked, with a
warning.
"""

import contextlib
import errno
import os
import time

from absl import logging

from data_pipeline.errors import DataError

try:
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # Not POSIX.
  fcntl = None

LOCK_FILE = ".prepare.lock"  # A data dir's (tools.prepare_data); kept after the run.
OUTPUT_LOCK_FILE = ".lock"  # Every other tool's output folder; removed after the run.
# flock answers these where the filesystem cannot lock at all (rather than "someone holds it").
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
# Tries to lock a file that its holder keeps removing and re-creating; each retry needs a
# holder that finished in between, so a few are plenty.
_ATTEMPTS = 5
# How long a refused process waits for a holder that has just locked to write its pid.
_PID_WAIT_S = 0.5

_held = {}  # fd -> pid of the process that took the lock (a forked child sees its parent's).


def _close_inherited():
  for fd, owner in list(_held.items()):
    if owner != os.getpid():
      del _held[fd]
      with contextlib.suppress(OSError):
        os.close(fd)  # Drops only this child's reference; the parent keeps its lock.


if hasattr(os, "register_at_fork"):
  os.register_at_fork(after_in_child=_close_inherited)


def _holder(fd, default_tool):
  """(pid, tool) that the lock's holder wrote into the file; ("unknown", default) if none."""
  deadline = time.monotonic() + _PID_WAIT_S
  while True:
    with contextlib.suppress(OSError):
      words = os.pread(fd, 256, 0).decode("ascii", "replace").split()
      if words and words[0].isdigit():
        # Files of older versions hold the pid alone.
        return words[0], (words[1] if len(words) > 1 else default_tool)
    if time.monotonic() >= deadline:
      return "unknown", default_tool  # An old holder that never wrote it.
    time.sleep(0.02)  # The holder locks first and writes its pid right after.


def _is_current(fd, path):
  """Whether `fd` is still the file at `path` (its holder may have removed it meanwhile).

  A holder removes its lock file while still holding the lock; whoever locks a file checks
  afterwards that it is still the one at the path, else it locked a removed file while waiting
  and tries again. Without that check a waiter and a newcomer could both "hold" the lock, one
  on the removed file and one on a new one. The data dir's `.prepare.lock` is never removed.
  """
  try:
    return os.path.samestat(os.fstat(fd), os.stat(path))
  except OSError:
    return False


def _lock(path, holder, refusal):
  """An fd of `path` holding its flock (or unlocked where flock is unsupported)."""
  for attempt in range(_ATTEMPTS):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      if fcntl is None:
        locked = False
      else:
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
          locked = True
        except BlockingIOError:
          pid, tool = _holder(fd, holder)
          raise DataError(refusal(pid, tool)) from None
        except OSError as error:
          if error.errno not in _UNSUPPORTED:
            raise
          locked = False
      if not locked:
        logging.warning("cannot lock %s (no flock here); make sure that no other process "
                        "writes into %s at the same time", path, os.path.dirname(path))
        return fd
      if _is_current(fd, path) or attempt == _ATTEMPTS - 1:
        return fd
    except BaseException:
      os.close(fd)
      raise
    os.close(fd)  # Locked a file that its last holder removed: lock the one there now.
  raise AssertionError("unreachable")


@contextlib.contextmanager
def exclusive(directory, holder="prepare_data", flag="--output_dir", *, lock_file=LOCK_FILE,
              subject=None, remove=False):
  """Holds an exclusive lock on `directory` (which must exist) for the `with` block.

  Args:
    directory: the dir to lock; `lock_file` is created in it.
    holder: the tool that takes the lock (e.g. "prepare_data"), written into the lock file for
      the message of a refused process.
    flag: the flag that names the dir, for the error message.
    lock_file: the lock file's name: `LOCK_FILE` for data dirs, `OUTPUT_LOCK_FILE` for other
      output folders.
    subject: how the error message names the dir (default: "FLAG DIRECTORY").
    remove: remove the lock file when done (still holding the lock, see the module doc).

  Yields:
    The lock file's path.

  Raises:
    DataError: another process (or another open in this one) holds the lock.
    OSError: the lock file cannot be created (read-only dir, full disk): the caller knows what
      the dir is for and words that error.
  """
  path = os.path.join(directory, lock_file)
  subject = subject or f"{flag} {directory}"

  def refusal(pid, tool):
    return (f"{subject} is being written by another {tool} process (pid {pid}); wait for it "
            f"to finish, or choose another {flag}")

  fd = _lock(path, holder, refusal)
  _held[fd] = os.getpid()
  try:
    # Only for the message of a refused second writer; a full disk must not stop the run here.
    with contextlib.suppress(OSError):
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()} {holder}\n".encode("ascii"), 0)
    yield path
  finally:
    _held.pop(fd, None)
    if remove:
      with contextlib.suppress(OSError):
        os.remove(path)
    os.close(fd)


def file_folder(path, flag):
  """(folder, flag, subject) for `output_dirs` of an output file: its tool locks its folder."""
  folder = os.path.dirname(os.path.abspath(path))
  return folder, flag, f"the folder {folder} of {flag} {path}"


@contextlib.contextmanager
def output_dir(directory, holder, flag, *, subject=None):
  """Creates `directory` when missing and holds its `OUTPUT_LOCK_FILE` for the `with` block.

  For a tool's output folder: taken before the tool writes or deletes anything there, held
  until it is done. Afterwards the lock file is removed, and so is the folder when this call
  created it and nothing else was written into it (a tool that failed leaves nothing behind).

  Args:
    directory: the output folder.
    holder: the tool, e.g. "train_vae" (named to a refused second process).
    flag: the flag that names the folder (or the file in it), e.g. "--model_dir".
    subject: how errors name the folder (default: "FLAG DIRECTORY"), e.g. "the folder F of
      --output Z.npy" for a tool whose flag names a file.

  Yields:
    The absolute folder.

  Raises:
    DataError: the folder cannot be created or written into, or another process holds it.
  """
  directory = os.path.abspath(directory)
  subject = subject or f"{flag} {directory}"
  made = []  # Whether this call created the folder (on any attempt).
  with contextlib.ExitStack() as stack:
    # Registered first, so it runs last (after the lock file is removed).
    stack.callback(lambda: made and _remove_if_empty(directory))
    for attempt in range(_ATTEMPTS):
      if not os.path.isdir(directory):
        made.append(directory)
      _make_folder(directory, subject, flag)
      try:
        stack.enter_context(exclusive(directory, holder, flag, lock_file=OUTPUT_LOCK_FILE,
                                      subject=subject, remove=True))
        break
      except FileNotFoundError:
        if attempt == _ATTEMPTS - 1:
          raise DataError(f"{subject} keeps disappearing (removed by another process?); "
                          f"rerun, or choose another {flag}") from None
        # Another tool that had made the folder removed it, empty, as it finished.
      except OSError as error:
        raise DataError(f"cannot write into {subject} ({error.strerror or error}); make it "
                        f"writable (or free space there), or choose another {flag}") from None
    yield directory


def _make_folder(directory, subject, flag):
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise DataError(f"{subject} exists and is not a directory; choose another {flag}")
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:
    raise DataError(f"cannot create {subject} ({error.strerror or error}); create it yourself "
                    f"or choose another {flag}") from None


def _remove_if_empty(directory):
  with contextlib.suppress(OSError):  # Not empty (the tool wrote something), or gone.
    os.rmdir(directory)


@contextlib.contextmanager
def output_dirs(holder, folders):
  """`output_dir` for each (directory, flag, subject or None) of `folders`, each folder once.

  For tools with several outputs (a report's folder and a work dir); a folder named twice is
  locked once (a second lock in the same process would refuse the first).

  Yields:
    The absolute folders, in order, without repeats.
  """
  locked = []
  with contextlib.ExitStack() as stack:
    for directory, flag, subject in folders:
      if os.path.realpath(directory) not in {os.path.realpath(d) for d in locked}:
        locked.append(stack.enter_context(output_dir(directory, holder, flag, subject=subject)))
    yield locked
