"""Exclusive locks on output dirs, so that two writers refuse each other instead of mixing.

`exclusive(directory)` holds a non-blocking `filelock.UnixFileLock` (flock) on
`directory/.prepare.lock` (the data writer's) or another lock file; `output_dir(directory,
holder, flag)` is what every other tool uses for its output folder (creates it, locks `.lock`,
removes the lock file at the end). A second holder gets a one-line `DataError` naming the dir,
the holder's tool and pid, which the holder writes into the lock file.

The lock is the kernel's, not the file: it is dropped when the holder dies in any way, so no
stale lock survives a crash; filelock closes the copy that a forked child inherits. Where
flock is missing or unsupported (some network mounts) the dir is not locked, with a warning.
"""

import contextlib
import errno
import os
import time

from absl import logging
import filelock

from data_pipeline.errors import DataError

LOCK_FILE = ".prepare.lock"  # A data dir's (tools.prepare_data); kept after the run.
OUTPUT_LOCK_FILE = ".lock"  # Every other tool's output folder; removed after the run.
# flock answers these where the filesystem cannot lock at all (rather than "someone holds it").
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
# filelock gives up at once (Timeout) also when the lock file it opened was removed by a holder
# that has just finished, and fails (FileNotFoundError) when such a holder removed the folder
# it had made; a few immediate retries (filelock re-creates the folder) tell those apart from
# a holder that still holds the lock.
_ATTEMPTS = 5
# How long a refused process waits for a holder that has just locked to write its pid.
_PID_WAIT_S = 0.5


def _holder(path, default_tool):
  """(pid, tool) that the lock's holder wrote into the file; ("unknown", default) if none."""
  deadline = time.monotonic() + _PID_WAIT_S
  while True:
    with contextlib.suppress(OSError):
      with open(path, "rb") as f:
        words = f.read(256).decode("ascii", "replace").split()
      if words and words[0].isdigit():
        # Files of older versions hold the pid alone.
        return words[0], (words[1] if len(words) > 1 else default_tool)
    if time.monotonic() >= deadline:
      return "unknown", default_tool  # An old holder that never wrote it.
    time.sleep(0.02)  # The holder locks first and writes its pid right after.


def _lock(path, holder):
  """The held `filelock.UnixFileLock` of `path`, or None where flock is unsupported.

  Raises:
    filelock.Timeout: another process (or another open in this one) holds it.
  """

  def write_holder(fd):
    # Only for the message of a refused second writer; a full disk must not stop the run here.
    with contextlib.suppress(OSError):
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()} {holder}\n".encode("ascii"), 0)

  for attempt in range(_ATTEMPTS):
    lock = filelock.UnixFileLock(path, blocking=False, fallback_to_soft=False,
                                 on_acquired=write_holder)
    try:
      lock.acquire()
      return lock
    except (filelock.Timeout, FileNotFoundError):  # Both OSErrors: caught first.
      if attempt == _ATTEMPTS - 1:
        raise
    except OSError as error:
      if error.errno not in _UNSUPPORTED:
        raise
      logging.warning("cannot lock %s (no flock here); make sure that no other process "
                      "writes into %s at the same time", path, os.path.dirname(path))
      return None
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
    remove: remove the lock file when done (while still holding the lock).

  Yields:
    The lock file's path.

  Raises:
    DataError: another process (or another open in this one) holds the lock.
    OSError: the lock file cannot be created (read-only dir, full disk): the caller knows what
      the dir is for and words that error.
  """
  path = os.path.join(directory, lock_file)
  subject = subject or f"{flag} {directory}"

  try:
    lock = _lock(path, holder)
  except filelock.Timeout:
    pid, tool = _holder(path, holder)
    raise DataError(f"{subject} is being written by another {tool} process (pid {pid}); wait "
                    f"for it to finish, or choose another {flag}") from None
  try:
    yield path
  finally:
    if remove:
      with contextlib.suppress(OSError):
        os.remove(path)  # Still held: a newcomer that opened it before retries (see _ATTEMPTS).
    if lock is not None:
      lock.release()


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
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise DataError(f"{subject} exists and is not a directory; choose another {flag}")
  made = not os.path.isdir(directory)
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:
    raise DataError(f"cannot create {subject} ({error.strerror or error}); create it yourself "
                    f"or choose another {flag}") from None
  with contextlib.ExitStack() as stack:
    if made:  # Registered first, so it runs last (after the lock file is removed).
      stack.callback(_remove_if_empty, directory)
    try:
      stack.enter_context(exclusive(directory, holder, flag, lock_file=OUTPUT_LOCK_FILE,
                                    subject=subject, remove=True))
    except OSError as error:
      raise DataError(f"cannot write into {subject} ({error.strerror or error}); make it "
                      f"writable (or free space there), or choose another {flag}") from None
    yield directory


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
