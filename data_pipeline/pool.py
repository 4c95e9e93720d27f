"""Worker processes of the writers (shards, synthetic faces): spawned, and gone with the caller.

`process_pool` is a concurrent.futures.ProcessPoolExecutor whose workers are spawned, never
forked (a fork of a process whose TensorFlow threads run can deadlock the child), are born
ignoring SIGINT (a terminal sends Ctrl-C to the whole process group; the caller decides), and die
with the caller (Linux PR_SET_PDEATHSIG). When the `with` block raises, KeyboardInterrupt
included, the workers are killed at once instead of being waited for, with further Ctrl-Cs
ignored meanwhile: a tool ends within seconds however many interrupts arrive, and keeps only
what its tasks had completed.
"""

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import signal
import sys
import threading

from data_pipeline.errors import DataError


class _WorkerProcess(multiprocessing.context.SpawnProcess):
  """A spawned worker born with SIGINT ignored: an ignored signal stays ignored across exec,
  and Python then installs no KeyboardInterrupt handler, so a Ctrl-C while the worker still
  imports (TensorFlow: seconds) cannot print a traceback from it."""

  def start(self):
    with _interrupts_ignored():
      super().start()


class _SpawnContext(multiprocessing.context.SpawnContext):
  Process = _WorkerProcess


def _init_worker(initializer, initargs):
  if sys.platform.startswith("linux"):
    # PR_SET_PDEATHSIG (1): the kernel SIGKILLs this worker when its parent dies, even by
    # SIGKILL, so that no orphan goes on writing beside a rerun. Best effort.
    with contextlib.suppress(OSError, AttributeError):
      ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
  if initializer is not None:
    initializer(*initargs)


@contextlib.contextmanager
def _interrupts_ignored():
  """SIGINT ignored inside the block (main thread only: elsewhere signals cannot be set)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def process_pool(num_workers, initializer=None, initargs=(), what="worker"):
  """A ProcessPoolExecutor of `num_workers` spawned workers, killed if the block raises.

  Args:
    num_workers: processes (>= 1).
    initializer, initargs: run in each worker after its set-up (picklable, as for spawn).
    what: the tool's name for its workers, for the error below.

  Yields:
    The executor.

  Raises:
    DataError: a worker died (killed, e.g. by the out-of-memory killer): BrokenProcessPool.
  """
  before = set(multiprocessing.active_children())
  pool = concurrent.futures.ProcessPoolExecutor(
      num_workers, mp_context=_SpawnContext(),
      initializer=_init_worker, initargs=(initializer, initargs))
  try:
    yield pool
  except BaseException as error:
    with _interrupts_ignored():
      workers = [p for p in multiprocessing.active_children() if p not in before]
      for process in workers:
        process.kill()
      for process in workers:
        process.join(timeout=10)
      # Then the pool, waiting for its manager thread (it ends once it sees its workers gone):
      # one left running (shutdown(wait=False)) can close its wake-up pipe while the
      # interpreter's exit writes to it (CPython 3.11: an "OSError: Bad file descriptor" trace).
      pool.shutdown(wait=True, cancel_futures=True)
    if isinstance(error, concurrent.futures.process.BrokenProcessPool):
      raise DataError(f"a {what} process died (killed, e.g. by the out-of-memory killer); "
                      "rerun the same command to resume where it stopped, with fewer "
                      f"--num_workers (now {num_workers}) if memory is short") from None
    raise
  pool.shutdown(wait=True)
