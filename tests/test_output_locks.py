"""One writer per output folder: every tool refuses a folder that another process writes.

- The lock itself (data_pipeline.locking.output_dir): creation, pid and tool in the lock file,
  one-line refusal, cleanup, a killed holder's stale lock file taken over, no flock.
- Each tool against itself (`refused_while_first_writes`, also used by test_reliability_writer):
  the real tool is stopped with SIGSTOP once it holds the folder, the same tool run again there
  must fail with one line and touch nothing, and the first then finishes intact.
- Two real train_vae on one run dir: the second is refused; the first's history, then damaged
  as two trainers used to damage it, is repaired by a resume.
- Readers take no lock: two verify_data at once on a data dir whose lock a writer holds.
"""

import contextlib
import errno
import fcntl
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
from data_pipeline.errors import DataError
from tests.tiny_runs import Z_DIM
from tests.toolrun import REPO_ROOT, assert_clean_error, run_main, run_tool

TOOL_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)

# A stand-in writer: holds the lock on every folder named, as its tool would, until stdin ends.
_HOLD = """
import sys
from data_pipeline import locking
with locking.output_dirs(sys.argv[1], [(d, "--output_dir", None) for d in sys.argv[2:]]):
  print("locked", flush=True)
  sys.stdin.readline()
"""


def _snapshot(folder):
  """{relative path: (size, mtime_ns)} of everything under `folder`."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      stat = os.stat(path)
      found[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
  return found


def _hold(holder, *folders):
  """A child process holding the locks of `folders` as tool `holder`; its `locked` line read."""
  process = subprocess.Popen([sys.executable, "-c", _HOLD, holder, *map(str, folders)],
                             cwd=REPO_ROOT, env=TOOL_ENV, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "locked"
  return process


def _wait_until(condition, process, log, what, timeout=300, details=lambda: ""):
  deadline = time.monotonic() + timeout
  while not condition():
    assert process.poll() is None, f"exited before {what}:\n{log.read_text()}"
    assert time.monotonic() < deadline, f"no {what} within {timeout} s {details()}"
    time.sleep(0.05)


# The lock itself, in this process.

def test_output_dir_creates_locks_and_cleans_up(tmp_path):
  folder = tmp_path / "a" / "out"
  with locking.output_dir(str(folder), "generate", "--output_dir") as locked:
    assert locked == str(folder)
    lock_file = folder / locking.OUTPUT_LOCK_FILE
    assert lock_file.read_text() == f"{os.getpid()} generate\n"
    with pytest.raises(DataError) as refused:  # A second open conflicts, in-process too.
      with locking.output_dir(str(folder), "encode", "--output_dir"):
        pass
    assert str(refused.value) == (
        f"--output_dir {folder} is being written by another generate process (pid "
        f"{os.getpid()}); wait for it to finish, or choose another --output_dir")
  # Nothing written: the folder it made goes with the lock file; the parent it made stays.
  assert not folder.exists() and (tmp_path / "a").is_dir()

  with locking.output_dir(str(folder), "generate", "--output_dir"):
    (folder / "grid.png").write_bytes(b"png")
  assert os.listdir(folder) == ["grid.png"]  # Written: kept, and no lock file left.
  with pytest.raises(ValueError):
    with locking.output_dir(str(folder), "generate", "--output_dir"):
      raise ValueError("the tool failed")
  assert os.listdir(folder) == ["grid.png"]  # A folder it did not make stays.

  # A folder named twice (a report beside its work files) is locked once.
  with locking.output_dirs("benchmark_latents", [
      locking.file_folder(str(folder / "b.json"), "--output_json"),
      (str(folder), "--work_dir", None)]) as folders:
    assert folders == [str(folder)]


def test_output_dir_errors_are_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(DataError, match=rf"^--model_dir {blocker} exists and is not a directory; "
                     "choose another --model_dir$"):
    with locking.output_dir(str(blocker), "train_vae", "--model_dir"):
      pass
  with pytest.raises(DataError, match=rf"^cannot create the folder {blocker}/sub of --output "
                     rf"{blocker}/sub/Z.npy \(Not a directory\); create it yourself"):
    with locking.output_dirs("encode", [locking.file_folder(str(blocker / "sub" / "Z.npy"),
                                                            "--output")]):
      pass
  if os.geteuid() != 0:  # root writes anywhere.
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
      with pytest.raises(DataError, match=rf"^cannot write into --output_dir {read_only} "
                         r"\(Permission denied\); make it writable"):
        with locking.output_dir(str(read_only), "generate", "--output_dir"):
          pass
    finally:
      read_only.chmod(0o755)


def test_a_lock_file_removed_while_waiting_is_not_held_twice(tmp_path, monkeypatch):
  # A holder removes its lock file as it finishes. Whoever opened that file before and locks
  # it after holds a removed file: it must lock the one at the path instead.
  path = tmp_path / locking.OUTPUT_LOCK_FILE
  path.write_text("")
  real_flock, removed = fcntl.flock, []

  def flock_after_the_holder_finished(fd, operation):
    if not removed and operation & fcntl.LOCK_EX:
      removed.append(path)
      os.remove(path)  # The holder, finishing between this open and this flock.
    return real_flock(fd, operation)

  monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_finished)
  with locking.exclusive(str(tmp_path), "a", lock_file=locking.OUTPUT_LOCK_FILE, remove=True):
    assert removed and path.read_text() == f"{os.getpid()} a\n"
    with pytest.raises(DataError, match="another a process"):
      with locking.exclusive(str(tmp_path), "b", lock_file=locking.OUTPUT_LOCK_FILE):
        pass
  assert not path.exists()


@pytest.mark.parametrize("error", [errno.ENOSYS, errno.ENOLCK])
def test_a_filesystem_without_flock_is_written_unlocked_with_a_warning(error, tmp_path,
                                                                      monkeypatch, caplog):
  def no_flock(fd, operation):
    raise OSError(error, os.strerror(error))

  monkeypatch.setattr(fcntl, "flock", no_flock)
  folder = tmp_path / "out"
  with locking.output_dir(str(folder), "generate", "--output_dir"):
    (folder / "grid.png").write_bytes(b"png")
  assert "no flock here" in caplog.text
  assert os.listdir(folder) == ["grid.png"]


# Every tool against itself: a real first run, stopped while it holds its folder.

def _holds(lock_file, pid, tool):
  """Whether `lock_file` names process `pid` of `tool` as its holder (what locking writes)."""
  try:
    return lock_file.read_text() == f"{pid} {tool}\n"
  except FileNotFoundError:
    return False


def _group_states(pgid):
  """{pid: state (R, S, T, Z, ...)} of the processes in process group `pgid` (Linux /proc).

  A parent in vfork (how subprocess starts children) whose child stopped before its exec waits
  uninterruptibly, in state D, until the child goes on: it shows as `V`, as stopped as a T."""
  states, parents = {}, {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
      continue
    if int(fields[2]) == pgid:
      states[int(entry)], parents[int(entry)] = fields[0], int(fields[1])
  for pid, state in states.items():
    children_stopped = [states[c] in "Tt" for c, parent in parents.items() if parent == pid]
    if state == "D" and children_stopped and all(children_stopped) and _in_vfork(pid):
      states[pid] = "V"
  return states


def _in_vfork(pid):
  """Whether process `pid` is in the vfork, clone or clone3 system call (x86-64 and arm64)."""
  try:
    with open(f"/proc/{pid}/syscall") as f:
      number = f.read().split()[0]
  except (OSError, IndexError):
    return False
  return number in {"58", "56", "435", "220"}


@contextlib.contextmanager
def stopped_writer(tool, args, lock_file, log, ready=None):
  """Starts the real tool; yields it stopped (SIGSTOP, its child processes too) once its pid is
  in `lock_file` and `ready()` holds, so that its folder cannot change; then lets it go on."""
  with open(log, "wb") as out:
    process = subprocess.Popen([sys.executable, "-m", f"tools.{tool}", *map(str, args)],
                               cwd=REPO_ROOT, env=TOOL_ENV, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
  try:
    _wait_until(lambda: _holds(lock_file, process.pid, tool) and (ready is None or ready()),
                process, log, f"its pid in {lock_file}")
    # Sent again until all have stopped: a child being forked as the first signal went out
    # may have missed it.
    _wait_until(lambda: (os.killpg(process.pid, signal.SIGSTOP)
                         or set(_group_states(process.pid).values()) <= set("TtZV")),
                process, log, "every process of its group stopped", timeout=10,
                details=lambda: _group_states(process.pid))
    yield process
  except BaseException:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    raise
  os.killpg(process.pid, signal.SIGCONT)


def refused_while_first_writes(tool, args, folder, log, *, flag, subject=None,
                               second_args=None, lock_file=locking.OUTPUT_LOCK_FILE,
                               ready=None):
  """Runs `tool args` for real and, while it holds `folder`, the same tool again (`second_args`,
  default the same) on that folder: the second exits 1 with the one-line refusal and changes
  nothing there; the first then exits 0, its lock file gone."""
  with stopped_writer(tool, args, folder / lock_file, log, ready) as first:
    before = _snapshot(folder)
    # The second runs in this process: another process than the stopped first, either way.
    second = run_main(tool, *(args if second_args is None else second_args))
    assert_clean_error(second, f"{subject or f'{flag} {folder}'} is being written by another "
                       f"{tool} process (pid {first.pid}); wait for it to finish, or choose "
                       f"another {flag}", code=1)
    assert _snapshot(folder) == before
  assert first.wait(timeout=600) == 0, log.read_text()[-5000:]
  if lock_file == locking.OUTPUT_LOCK_FILE:
    assert not (folder / lock_file).exists()


def _json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _train_ae_case(request, root, folder):
  data = request.getfixturevalue("prepared_data_dir")
  args = [f"--data_dir={data}", f"--model_dir={folder}", *TINY, "--epochs=1"]

  def check():
    assert _row_epochs(_history_lines(folder)) == [0]
    assert (folder / "model.keras").is_file()
  # The second would delete the run (--overwrite): refused before it touches anything.
  return args, {"flag": "--model_dir", "second_args": [*args, "--overwrite"]}, check


def _encode_case(request, root, folder):
  runs = request.getfixturevalue("tiny_runs")
  data = request.getfixturevalue("prepared_data_dir")
  output = folder / "Z.npy"
  args = ["--model_dir", runs["ae"], "--data_dir", data, "--output", output]

  def check():
    assert np.load(output).shape == (52, Z_DIM)
  return args, {"flag": "--output", "subject": f"the folder {folder} of --output {output}"}, check


def _analyze_latents_case(request, root, folder):
  z_points = root / "analyze_input.npy"
  np.save(z_points, np.random.default_rng(0).normal(size=(400, Z_DIM)).astype(np.float32))
  args = ["--z_points", z_points, "--output_dir", folder, "--num_random", "100"]

  def check():
    assert _json(folder / "latent_report.json")["num_vectors"] == 400
    assert np.load(folder / "correlation.npy").shape == (Z_DIM, Z_DIM)
  return args, {"flag": "--output_dir"}, check


def _generate_case(request, root, folder):
  runs = request.getfixturevalue("tiny_runs")
  args = ["--model_dir", runs["ae"], "--output_dir", folder, "--samplers", "normal",
          "--num_images", "2", "--num_metric_images", "4", "--sharpen", "1", "--noface_judge"]

  def check():
    assert "normal" in _json(folder / "generation.json")["samplers"]
    assert (folder / "normal.png").is_file()
  return args, {"flag": "--output_dir"}, check


def _compare_reconstructions_case(request, root, folder):
  runs = request.getfixturevalue("tiny_runs")
  data = request.getfixturevalue("prepared_data_dir")
  args = ["--model_dirs", runs["ae"], "--data_dir", data, "--output_dir", folder,
          "--num_images", "2", "--max_images", "4", "--sharpen", "1", "--noface_judge"]

  def check():
    assert list(_json(folder / "reconstruction.json")["models"]) == ["tiny_ae"]
    assert (folder / "reconstructions.png").is_file()
  return args, {"flag": "--output_dir"}, check


def _benchmark_pipeline_case(request, root, folder):
  data = request.getfixturevalue("prepared_data_dir")
  report = folder / "pipeline.json"
  args = [f"--data_dir={data}", f"--output_json={report}", f"--work_dir={folder / 'work'}",
          "--sizes=16", "--methods=classic_tfdata", "--batch_size=8", "--num_batches=1",
          "--warmup_batches=1", "--prepare_images=0", "--train_steps=0", "--train_presets="]

  def check():
    assert len(_json(report)["results"]) == 1
  return args, {"flag": "--output_json",
                "subject": f"the folder {folder} of --output_json {report}"}, check


def _benchmark_latents_case(request, root, folder):
  report = folder / "latents.json"
  args = [f"--output_json={report}", "--num_vectors=200000", "--dim=4", "--nocold_cache",
          f"--work_dir={root / 'work'}"]

  def check():
    assert _json(report)["inputs"]["num_vectors"] == 200_000
    assert not (root / "work2").exists()  # The second's work dir: not made either.
  return args, {"flag": "--output_json", "subject": f"the folder {folder} of --output_json "
                f"{report}", "second_args": [*args[:-1], f"--work_dir={root / 'work2'}"]}, check


def _make_synthetic_faces_case(request, root, folder):
  # Enough faces (some ms each) that the run is still drawing when it is stopped.
  args = ["--output_dir", folder, "--num_images", "300", "--num_workers", "1", "--seed", "5"]

  def check():
    assert _json(folder / "synthetic.json")["complete"]
    assert len(os.listdir(folder / "img_align_celeba")) == 300
    assert "--num_images=300" in (folder / "flags.txt").read_text()
  return args, {"flag": "--output_dir", "second_args": [*args, "--overwrite"]}, check


def _demo_case(request, root, folder):
  # The cheapest real demo: its first step only (a make_synthetic_faces child, stopped too).
  args = ["--workspace", folder, "--stop_after=synthetic_faces", "--num_images=100"]

  def check():
    assert _json(folder / "celeba_synthetic" / "synthetic.json")["complete"]
    assert (folder / "logs" / "synthetic_faces.log").stat().st_size > 0
  return args, {"flag": "--workspace", "second_args": [*args, "--force"]}, check


CASES = {
    "train_ae": _train_ae_case,
    "encode": _encode_case,
    "analyze_latents": _analyze_latents_case,
    "generate": _generate_case,
    "compare_reconstructions": _compare_reconstructions_case,
    "benchmark_pipeline": _benchmark_pipeline_case,
    "benchmark_latents": _benchmark_latents_case,
    "make_synthetic_faces": _make_synthetic_faces_case,
    "demo": _demo_case,
}


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the stopped group in /proc")
@pytest.mark.parametrize("tool", sorted(CASES))
def test_second_process_is_refused_while_the_first_writes(tool, request, tmp_path):
  folder = tmp_path / "out"
  args, expected, check = CASES[tool](request, tmp_path, folder)
  refused_while_first_writes(tool, args, folder, tmp_path / "first.log", **expected)
  check()


@pytest.mark.slow
def test_readers_take_no_lock(prepared_data_dir, tmp_path):
  # Two verify_data at once on one data dir, while a writer holds that dir's lock as
  # prepare_data does (here a complete dir, so that there is something to read): both read it.
  data_dir = tmp_path / "data"
  shutil.copytree(prepared_data_dir, data_dir)
  with locking.exclusive(str(data_dir)):
    readers = [subprocess.Popen([sys.executable, "-m", "tools.verify_data",
                                 f"--data_dir={data_dir}", "--noprogress"], cwd=REPO_ROOT,
                                env=TOOL_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    for reader in readers:
      out, err = reader.communicate(timeout=600)
      assert reader.returncode == 0, err
      assert out.startswith(f"OK {data_dir}: 64 records"), out


def test_a_killed_holder_leaves_no_lock(tmp_path):
  folder = tmp_path / "eval"
  holder = _hold("analyze_latents", folder)
  holder.kill()  # SIGKILL: no clean-up ran, the lock file stays with the dead holder's pid.
  holder.wait()
  assert (folder / locking.OUTPUT_LOCK_FILE).read_text() == f"{holder.pid} analyze_latents\n"
  result = run_tool("analyze_latents", "--z_points", tmp_path / "missing.npy", "--output_dir",
                    folder)
  # The tool's own error, not the lock's; and it took the lock over and removed it after.
  assert_clean_error(result, "missing.npy", code=1)
  assert "being written" not in result.stderr
  assert os.listdir(folder) == []


# Two real trainers.

TINY = ("--encoder_filters=8,16", "--encoder_kernels=3", "--strides=2", "--z_dim=4",
        "--batch_size=4", "--preview_images=0")


def _history_lines(model_dir):
  with open(os.path.join(model_dir, "history.csv"), newline="", encoding="utf-8") as f:
    return f.read().splitlines()


def _row_epochs(lines):
  return [int(line.split(",", 1)[0]) for line in lines[1:]]


@pytest.mark.slow
def test_second_trainer_is_refused_and_the_first_finishes_intact(prepared_data_dir, tmp_path):
  model_dir = tmp_path / "run"
  args = (f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}", *TINY, "--epochs=4")
  # Stopped mid-run: config, flags, a backup and the first epoch's row written, three epochs
  # to go. The same command again, even with --overwrite and another config (which would
  # delete the run), is refused before it touches anything.
  refused_while_first_writes(
      "train_vae", args, model_dir, tmp_path / "first.log", flag="--model_dir",
      second_args=[*args, "--overwrite", "--kl_factor=2"],
      ready=lambda: (model_dir / "history.csv").exists() and len(_history_lines(model_dir)) >= 2)
  lines = _history_lines(model_dir)
  assert lines[0].startswith("epoch,") and _row_epochs(lines) == [0, 1, 2, 3]
  assert (model_dir / "model.keras").is_file() and not (model_dir / ".lock").exists()

  # The damage that two trainers used to leave: two headers, every epoch twice, and (a kill
  # or a full disk) a last line cut short. The same command, one epoch longer, resumes.
  rows = lines[1:]
  damaged = [lines[0], lines[0], *rows, *rows]
  (model_dir / "history.csv").write_text("\r\n".join(damaged) + "\r\n4,123.", newline="")
  resumed = run_main("train_vae", *args[:-1], "--epochs=5")
  assert resumed.returncode == 0, resumed.stderr
  assert "history.csv was damaged" in resumed.stderr
  assert "Epoch 5/5" in resumed.stdout and "Epoch 4/5" not in resumed.stdout
  lines = _history_lines(model_dir)
  assert lines[0].startswith("epoch,") and _row_epochs(lines) == [0, 1, 2, 3, 4]
  assert lines[1:5] == rows
