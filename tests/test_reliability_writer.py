"""The sharded writer under faults: SIGKILL at any moment, a full disk, a read-only output dir,
and two writers into one dir.

Each test checks the row of docs/RELIABILITY.md ("Preparing data") that it feeds: a rerun after
a kill finishes the data dir record for record as an uninterrupted run would; a killed worker,
a full disk, an unwritable dir and a second writer each end with exit 1 and the one-line
message quoted there, keeping the complete shards.
"""

import concurrent.futures
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data_pipeline import locking
from data_pipeline import manifest as manifest_lib
from data_pipeline import pool as pool_lib
from data_pipeline import sources
from data_pipeline import verify
from data_pipeline import writer
from data_pipeline.errors import DataError
import data_pipeline as dp
from tests.toolrun import REPO_ROOT
from tests.test_output_locks import refused_while_first_writes
from tests.toolrun import assert_clean_error, ctrl_c_reaches_children

SPLITS = ("train", "validation", "test")
# Enough images, in small enough shards (6 or 7 records each, 50 shards), that a run is still far
# from done when its first shards are complete: the kill points below are events, not timings.
BIG_IMAGES = 300
BIG_SETTINGS = {"image_size": 32, "encoding": "raw", "shard_mb": 0.02}
_TOOL_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)


def _prepare(source_dir, output_dir, **kwargs):
  kwargs.setdefault("num_workers", 1)
  kwargs.setdefault("progress", False)
  return writer.prepare(sources.CelebAFolderSource(source_dir), str(output_dir), **kwargs)


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
  from data_pipeline.synthetic import write_synthetic_celeba  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("big_celeba")
  write_synthetic_celeba(str(path), BIG_IMAGES, seed=1, num_workers=2)
  return str(path)


@pytest.fixture(scope="module")
def big_clean(big_source, tmp_path_factory):
  """`big_source` prepared in one uninterrupted run: the reference for the resumed ones."""
  path = tmp_path_factory.mktemp("big_clean")
  _prepare(big_source, path, **BIG_SETTINGS)
  return str(path)


def _start_tool(log_dir, *args):
  """Starts `python -m tools.prepare_data args...` as a user would; stdout/stderr to files."""
  os.makedirs(log_dir, exist_ok=True)
  with open(os.path.join(log_dir, "stdout"), "w") as out, \
       open(os.path.join(log_dir, "stderr"), "w") as err:
    return subprocess.Popen([sys.executable, "-m", "tools.prepare_data", *map(str, args)],
                            cwd=REPO_ROOT, env=_TOOL_ENV, stdout=out, stderr=err, text=True)


def _stderr(log_dir):
  with open(os.path.join(log_dir, "stderr")) as f:
    return f.read()


def _complete_shards(data_dir):
  """Shards listed in prepare_progress.json (written atomically after every shard)."""
  try:
    with open(os.path.join(data_dir, manifest_lib.PROGRESS)) as f:
      return len(json.load(f)["shards"])
  except (FileNotFoundError, ValueError):
    return 0


def _wait_until(condition, process, log_dir, what, timeout=300):
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      pytest.fail(f"the run ended (exit {process.returncode}) before {what}:\n"
                  f"{_stderr(log_dir)[-3000:]}")
    if time.monotonic() > deadline:
      process.kill()
      pytest.fail(f"no {what} within {timeout} s")
    time.sleep(0.01)


def _children(pid):
  """Pids of the live worker processes whose parent is `pid` (Linux /proc); not the
  multiprocessing resource tracker that spawned pools start beside them."""
  found = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        tracker = b"resource_tracker" in f.read()
    except (OSError, IndexError, ValueError):
      continue
    if int(ppid) == pid and state != "Z" and not tracker:
      found.append(int(entry))
  return found


def _is_alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def _records(data_dir, split):
  """[(id, uint8 pixels)] of a split in file order."""
  out = []
  for batch in dp.make_dataset(data_dir, split, 64, shuffle=False, with_ids=True):
    out += zip((i.decode() for i in batch["id"].numpy()), batch["image"].numpy())
  return out


def _leftovers(data_dir):
  return [f for f in os.listdir(data_dir) if ".tmp" in f or f == manifest_lib.PROGRESS]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers in /proc")
def test_sigkill_at_any_moment_then_rerun_gives_the_clean_result(big_source, big_clean,
                                                                 tmp_path):
  """Kills the real tool twice (its main process, then one worker), then reruns it to the end.

  The kill points are events (shards listed in prepare_progress.json), so the test does not
  depend on the machine's speed: with 50 shards a run is far from done at either point, and
  the workers usually have shards in flight (.tmp files, which the rerun removes).
  """
  out = tmp_path / "data"
  args = [f"--source_dir={big_source}", f"--output_dir={out}", "--image_size=32",
          "--encoding=raw", "--shard_mb=0.02", "--num_workers=2", "--noprogress"]
  clean_shards = dp.read_manifest(big_clean)["shards"]

  # 1. SIGKILL the main process only, as `kill -9 PID` or the out-of-memory killer would.
  run1 = _start_tool(tmp_path / "run1", *args)
  _wait_until(lambda: _complete_shards(out) >= 3, run1, tmp_path / "run1", "3 complete shards")
  workers = _children(run1.pid)
  assert len(workers) == 2, workers
  # Meanwhile a second writer into the same dir is refused, --overwrite or not.
  with pytest.raises(DataError) as refused:
    _prepare(big_source, out, overwrite=True, **BIG_SETTINGS)
  assert (f"--output_dir {out} is being written by another prepare_data process "
          f"(pid {run1.pid})") in str(refused.value)
  run1.send_signal(signal.SIGKILL)
  assert run1.wait(timeout=60) == -signal.SIGKILL
  assert not os.path.exists(out / manifest_lib.MANIFEST)
  kept = _complete_shards(out)
  assert 3 <= kept < len(clean_shards)
  # Its workers die with it, so that no orphan writes on beside the rerun.
  deadline = time.monotonic() + 10
  while any(_is_alive(pid) for pid in workers) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not [pid for pid in workers if _is_alive(pid)], "orphaned workers still run"

  # 2. The rerun resumes; now SIGKILL one of its workers: a one-line error, exit 1.
  run2 = _start_tool(tmp_path / "run2", *args)
  _wait_until(lambda: _complete_shards(out) >= kept + 2, run2, tmp_path / "run2",
              "2 more complete shards")
  os.kill(_children(run2.pid)[0], signal.SIGKILL)
  assert run2.wait(timeout=120) == 1, _stderr(tmp_path / "run2")
  errors = [line for line in _stderr(tmp_path / "run2").splitlines() if ": error: " in line]
  assert len(errors) == 1 and "worker process died" in errors[0], errors
  assert "Traceback" not in _stderr(tmp_path / "run2")
  assert not os.path.exists(out / manifest_lib.MANIFEST)
  assert _complete_shards(out) >= kept + 2

  # 3. The same command once more finishes the data dir.
  run3 = _start_tool(tmp_path / "run3", *args)
  assert run3.wait(timeout=300) == 0, _stderr(tmp_path / "run3")
  assert not _leftovers(out)
  report = verify.verify(str(out))
  assert report["num_records"] == BIG_IMAGES
  manifest = dp.read_manifest(str(out))
  assert manifest["shards"] == clean_shards  # Same files, record counts, sizes and sha256.
  partition = sources.parse_partition(os.path.join(big_source, "list_eval_partition.txt"))
  for split in SPLITS:
    resumed = _records(str(out), split)
    # Every listed image exactly once, in the source's order: none missing, none twice.
    assert [image_id for image_id, _ in resumed] == partition[split]
    clean = dict(_records(big_clean, split))
    for image_id, pixels in resumed:
      np.testing.assert_array_equal(pixels, clean[image_id], err_msg=image_id)



@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers in /proc")
def test_ctrl_c_pressed_again_and_again_ends_the_tool_within_seconds(big_source, tmp_path):
  """Ctrl-C in a terminal reaches the whole process group, workers included, and a user who
  sees no exit presses it again: the tool ends at once, keeping its complete shards."""
  out = tmp_path / "data"
  os.makedirs(tmp_path / "run", exist_ok=True)
  with open(tmp_path / "run" / "stdout", "w") as stdout, \
       open(tmp_path / "run" / "stderr", "w") as stderr, ctrl_c_reaches_children():
    run = subprocess.Popen(
        [sys.executable, "-m", "tools.prepare_data", f"--source_dir={big_source}",
         f"--output_dir={out}", "--image_size=32", "--encoding=raw", "--shard_mb=0.02",
         "--num_workers=2", "--noprogress"], cwd=REPO_ROOT, env=_TOOL_ENV, stdout=stdout,
        stderr=stderr, start_new_session=True)  # Its own process group, as in a terminal.
  _wait_until(lambda: _complete_shards(out) >= 2, run, tmp_path / "run", "2 complete shards")
  workers = _children(run.pid)
  for _ in range(4):
    os.killpg(run.pid, signal.SIGINT)
    time.sleep(0.1)
  try:
    code = run.wait(timeout=30)
  except subprocess.TimeoutExpired:
    os.killpg(run.pid, signal.SIGKILL)
    pytest.fail("prepare_data still runs 30 s after Ctrl-C")
  stderr = _stderr(tmp_path / "run")
  assert code == 130, stderr
  errors = [line for line in stderr.splitlines() if ": error: " in line]
  assert len(errors) == 1 and "interrupted; rerun the same command" in errors[0], stderr
  assert "Traceback" not in stderr
  assert not [pid for pid in workers if _is_alive(pid)], "workers outlived the tool"
  assert _complete_shards(out) >= 2 and not os.path.exists(out / manifest_lib.MANIFEST)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the stopped group in /proc")
def test_second_prepare_data_process_is_refused_and_the_first_finishes_intact(
    big_source, big_clean, tmp_path):
  out = tmp_path / "data"
  args = [f"--source_dir={big_source}", f"--output_dir={out}", "--image_size=32",
          "--encoding=raw", "--shard_mb=0.02", "--num_workers=2", "--noprogress"]
  # The first is stopped (with its workers) after 3 of its 50 shards; the second, which would
  # delete them (--overwrite), is refused.
  refused_while_first_writes("prepare_data", args, out, tmp_path / "first.log",
                             flag="--output_dir", second_args=[*args, "--overwrite"],
                             lock_file=locking.LOCK_FILE, ready=lambda: _complete_shards(out) >= 3)
  assert not _leftovers(out)
  # Same files, record counts, sizes and sha256 as an uninterrupted run.
  assert dp.read_manifest(str(out))["shards"] == dp.read_manifest(big_clean)["shards"]


def _kernel_enospc(monkeypatch):
  """The third shard's .tmp is a symlink to /dev/full: the kernel answers its writes with
  ENOSPC, and TensorFlow's TFRecordWriter turns that into its own error, as on a full disk."""
  if not os.path.exists("/dev/full"):
    pytest.skip("no /dev/full")
  real_write_shard, calls = writer._write_shard, []

  def write_shard(task):
    calls.append(task)
    if len(calls) == 3:
      os.symlink("/dev/full", task.path + manifest_lib.TMP_SUFFIX)
    return real_write_shard(task)

  monkeypatch.setattr(writer, "_write_shard", write_shard)


def _python_enospc(monkeypatch):
  """The shard writer's write() raises OSError(ENOSPC) at the 31st record: 13 records per
  train shard, so two shards are complete and the third has 4 records in its .tmp file."""
  written = []

  class FullDiskWriter(writer.tf.io.TFRecordWriter):

    def write(self, record):
      if len(written) == 30:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      written.append(record)
      super().write(record)

  monkeypatch.setattr(writer.tf.io, "TFRecordWriter", FullDiskWriter)


def _shard_not_writable(monkeypatch):
  """Opening the third shard's .tmp fails as TensorFlow fails on EACCES (or EROFS): the dir
  turned read-only mid-run. (A dir read-only from the start is the CLI test below, for real.)"""
  opened = []
  real_writer = writer.tf.io.TFRecordWriter

  def open_shard(path, *args, **kwargs):
    opened.append(path)
    if len(opened) == 3:
      raise writer.tf.errors.PermissionDeniedError(None, None, f"{path}; Permission denied")
    return real_writer(path, *args, **kwargs)

  monkeypatch.setattr(writer.tf.io, "TFRecordWriter", open_shard)


@pytest.mark.parametrize("inject, expected", [
    (_python_enospc, ("no space left on the device of --output_dir", "No space left on device",
                      "free space there, then rerun the same command")),
    (_kernel_enospc, ("no space left on the device of --output_dir", "No space left on device",
                      "free space there, then rerun the same command")),
    (_shard_not_writable, ("cannot write into --output_dir", "Permission denied",
                           "make it writable, or choose another --output_dir")),
], ids=["enospc_from_write", "enospc_from_kernel", "eacces_opening_shard"])
def test_failed_shard_write_keeps_complete_shards_and_resumes(
    synthetic_celeba_dir, prepared_data_dir, tmp_path, monkeypatch, inject, expected):
  """num_workers=1 writes the shards in this process, so the injected faults hit the real
  writer code; the train split has 4 shards, and the third one fails."""
  reference = dp.read_manifest(prepared_data_dir)["shards"]
  out = tmp_path / "data"
  inject(monkeypatch)
  with pytest.raises(DataError) as info:
    _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  monkeypatch.undo()
  message = str(info.value)
  assert "\n" not in message
  assert f"--output_dir {out} (" in message
  assert "celeba_stream-train.tfrecord-00002-of-00004.tmp" in message
  for text in expected:
    assert text in message, (text, message)
  # No half-written shard; the complete ones and the progress file that lists them are kept.
  assert not [f for f in os.listdir(out) if ".tmp" in f]
  assert not os.path.exists(out / manifest_lib.MANIFEST)
  with open(out / manifest_lib.PROGRESS) as f:
    progress = json.load(f)
  kept = sorted(entry["shard"]["file"] for entry in progress["shards"])
  assert kept == [s["file"] for s in reference[:2]]
  mtimes = {name: os.stat(out / name).st_mtime_ns for name in kept}

  # Space freed (or the dir writable again): the same call resumes and gives the clean result.
  manifest = _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  assert manifest["shards"] == reference
  assert {name: os.stat(out / name).st_mtime_ns for name in kept} == mtimes
  assert not _leftovers(out)


_DROP_DAC_OVERRIDE = """
import ctypes, os, sys
# Root writes into any dir; without CAP_DAC_OVERRIDE (dropped from the bounding set, so that
# the exec below loses it) the dir's mode applies to root too. prctl 24: PR_CAPBSET_DROP.
if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:
  sys.exit(99)
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""


@pytest.mark.slow
def test_read_only_output_dir_is_a_clear_error(synthetic_celeba_dir, tmp_path):
  """Real permissions: the tool runs with the dir at mode 0555, and as root (where chmod does
  not stop writes) without CAP_DAC_OVERRIDE, so the kernel refuses the writes with EACCES."""
  out = tmp_path / "readonly"
  out.mkdir()
  out.chmod(0o555)
  try:
    result = subprocess.run(
        [sys.executable, "-c", _DROP_DAC_OVERRIDE, "-m", "tools.prepare_data",
         f"--source_dir={synthetic_celeba_dir}", f"--output_dir={out}", "--image_size=16",
         "--noprogress"], cwd=REPO_ROOT, env=_TOOL_ENV, capture_output=True, text=True,
        timeout=300, check=False)
    if result.returncode == 99:
      pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    assert_clean_error(result, f"cannot write into --output_dir {out} (Permission denied",
                       "make it writable, or choose another --output_dir", code=1)
    assert os.listdir(out) == []  # Nothing written, not even the lock file.
  finally:
    out.chmod(0o755)
  # An --output_dir that cannot be created (here: under a regular file).
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(DataError, match=rf"cannot create --output_dir {blocker}/data \(Not a "
                     r"directory\); create it yourself or choose another --output_dir"):
    _prepare(synthetic_celeba_dir, blocker / "data", image_size=16)


_HOLD_LOCK = """
import sys
from data_pipeline import locking
with locking.exclusive(sys.argv[1]):
  print("locked", flush=True)
  sys.stdin.readline()
"""


def test_second_writer_is_refused_and_a_dead_holder_leaves_no_lock(synthetic_celeba_dir,
                                                                   prepared_data_dir, tmp_path):
  out = tmp_path / "data"
  shutil.copytree(prepared_data_dir, out)  # Complete: --overwrite would delete its shards.
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], cwd=REPO_ROOT,
                            env=_TOOL_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    before = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}
    for overwrite in (False, True):
      with pytest.raises(DataError) as info:
        _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05, overwrite=overwrite)
      assert str(info.value) == (
          f"--output_dir {out} is being written by another prepare_data process (pid "
          f"{holder.pid}); wait for it to finish, or choose another --output_dir")
    assert {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)} == before
    # flock locks belong to an open file description: a second open in one process conflicts.
    with locking.exclusive(str(tmp_path)):
      with pytest.raises(DataError, match="being written by another prepare_data process"):
        with locking.exclusive(str(tmp_path)):
          pass
    with locking.exclusive(str(tmp_path)):  # Released by the `with` above.
      pass
  finally:
    # Killed, not asked: the kernel drops a dead holder's lock, so none goes stale.
    holder.kill()
    holder.wait()
  manifest = _prepare(synthetic_celeba_dir, out, image_size=16, shard_mb=0.05, overwrite=True)
  assert manifest["image_size"] == 16


def test_a_kill_after_the_manifest_leaves_nothing_stale(synthetic_celeba_dir, prepared_data_dir,
                                                        tmp_path):
  """Killed between writing manifest.json and removing prepare_progress.json, or in the middle
  of an atomic JSON write: the rerun removes the leftovers and rewrites nothing."""
  out = tmp_path / "data"
  shutil.copytree(prepared_data_dir, out)
  manifest = dp.read_manifest(str(out))
  with open(out / manifest_lib.PROGRESS, "w") as f:
    json.dump({"settings": manifest["settings"], "shards": manifest["shards"]}, f)
  (out / ".tmp-k1l2m3n4prepare_progress.json").write_text("{")
  (out / ".tmp-o5p6q7r8manifest.json").write_text("")
  before = os.stat(out / manifest_lib.MANIFEST).st_mtime_ns
  _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  assert os.stat(out / manifest_lib.MANIFEST).st_mtime_ns == before
  assert not _leftovers(out)


def test_a_complete_dir_that_cannot_be_locked_is_still_nothing_to_do(prepared_data_dir,
                                                                     synthetic_celeba_dir,
                                                                     tmp_path, monkeypatch):
  """A complete data dir on read-only media (simulated: creating the lock file fails with
  EROFS) is checked without the lock, as before there was one: nothing to do, nothing written."""
  out = tmp_path / "data"
  shutil.copytree(prepared_data_dir, out)
  os.remove(out / locking.LOCK_FILE)
  real_open = os.open

  def read_only_open(path, flags, *args):
    if os.path.basename(path) == locking.LOCK_FILE:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    return real_open(path, flags, *args)

  monkeypatch.setattr(locking.os, "open", read_only_open)
  before = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}
  manifest = _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  assert manifest["shards"] == dp.read_manifest(prepared_data_dir)["shards"]
  assert {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)} == before


def test_a_pool_left_by_an_exception_kills_its_busy_workers_at_once():
  """Both writers' pool (data_pipeline.pool): an interrupt does not wait for running tasks."""
  start = time.monotonic()
  with pytest.raises(KeyboardInterrupt):
    with pool_lib.process_pool(2) as pool:
      futures = [pool.submit(time.sleep, 60) for _ in range(10)]
      while not all(f.running() for f in futures[:2]):
        time.sleep(0.05)
      workers = [p.pid for p in pool_lib.multiprocessing.active_children()]
      raise KeyboardInterrupt
  assert time.monotonic() - start < 30
  assert not [pid for pid in workers if _is_alive(pid)]
  # Tasks still waiting never run (the pool hands up to workers + 1 more to its call queue):
  # cancelled, or failed with the broken pool once its workers were killed.
  assert all(f.cancelled() or isinstance(f.exception(), concurrent.futures.BrokenExecutor) for f in futures[-3:])


def _report_sigint(queue):
  queue.put(signal.getsignal(signal.SIGINT))


def test_pool_workers_are_born_ignoring_ctrl_c():
  """Ignored from the start (inherited through exec), before any of our code runs in the
  worker: a Ctrl-C while it still imports its modules cannot print a traceback from it."""
  context = pool_lib._SpawnContext()  # pylint: disable=protected-access
  queue = context.SimpleQueue()
  process = context.Process(target=_report_sigint, args=(queue,))
  before = signal.getsignal(signal.SIGINT)
  process.start()
  assert queue.get() == signal.SIG_IGN
  process.join(timeout=30)
  assert signal.getsignal(signal.SIGINT) == before  # The caller's own is back.
