"""One writer per output folder: every tool refuses a folder that another process writes.

- The lock itself (data_pipeline.locking.output_dir): created folder, pid and tool in the lock
  file, refusal in one line, the lock file (and a folder it made, left empty) removed after,
  a stale lock file of a killed holder taken over.
- Each tool against a real holder: a child process (a few lines of Python) holds the lock on
  one folder per tool, as the tool itself would, and each tool is run on its folder: exit 1,
  one `error:` line naming the folder, the holder's tool and pid, and nothing in the folder
  touched. The lock comes before anything else, so these runs fail in well under a second
  (train_ae loads TensorFlow first).
- Two real train_vae processes on one run dir: the second (with --overwrite and another config,
  which would delete the run) is refused while the first is stopped mid-run (SIGSTOP, so that
  the folder cannot change while the second one looks); the first then finishes intact. Its
  history is then damaged as two trainers used to damage it (two headers, every epoch twice, a
  cut-off last line), and the same command with one more epoch resumes and repairs it.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from data_pipeline import locking
from data_pipeline.errors import DataError
from tests.toolrun import REPO_ROOT, assert_clean_error, run_tool

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


def _wait_until(condition, process, log, what, timeout=300):
  deadline = time.monotonic() + timeout
  while not condition():
    assert process.poll() is None, f"exited before {what}:\n{log.read_text()}"
    assert time.monotonic() < deadline, f"no {what} within {timeout} s"
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


def test_a_lock_file_removed_while_waiting_is_not_held_twice(tmp_path):
  # A holder removes its lock file as it finishes. Whoever opened that file before and locks
  # it after must notice that it holds a removed file, and lock the one at the path instead.
  path = str(tmp_path / locking.OUTPUT_LOCK_FILE)
  stale = os.open(path, os.O_RDWR | os.O_CREAT)
  try:
    os.remove(path)
    assert not locking._is_current(stale, path)  # pylint: disable=protected-access
  finally:
    os.close(stale)
  with locking.exclusive(str(tmp_path), "a", lock_file=locking.OUTPUT_LOCK_FILE, remove=True):
    assert os.path.exists(path)
    with pytest.raises(DataError, match="another a process"):
      with locking.exclusive(str(tmp_path), "b", lock_file=locking.OUTPUT_LOCK_FILE):
        pass
  assert not os.path.exists(path)


# Every tool against a real holder process.

# tool -> (the flags that point it at FOLDER, the folder's flag); the other inputs need not
# exist: the lock is taken before any of them is read.
TOOLS = {
    "train_ae": (lambda f, t: ["--data_dir", t / "no_data", "--model_dir", f, "--overwrite",
                               "--epochs=1"], "--model_dir"),
    "encode": (lambda f, t: ["--model_dir", t / "no_run", "--data_dir", t / "no_data",
                             "--output", f / "Z.npy"], "--output"),
    "analyze_latents": (lambda f, t: ["--z_points", t / "Z.npy", "--output_dir", f],
                        "--output_dir"),
    "generate": (lambda f, t: ["--model_dir", t / "no_run", "--output_dir", f,
                               "--samplers=normal"], "--output_dir"),
    "compare_reconstructions": (lambda f, t: ["--model_dirs", t / "no_run", "--data_dir",
                                              t / "no_data", "--output_dir", f],
                                "--output_dir"),
    "benchmark_pipeline": (lambda f, t: ["--data_dir", t / "no_data", "--output_json",
                                         f / "pipeline.json"], "--output_json"),
    "benchmark_latents": (lambda f, t: ["--output_json", f / "latents.json", "--work_dir",
                                        t / "work"], "--output_json"),
    "demo": (lambda f, t: ["--workspace", f, "--force"], "--workspace"),
}


@pytest.fixture(scope="module")
def held_folders(tmp_path_factory):
  """One folder per tool, each with an earlier result in it, locked by a holder process."""
  root = tmp_path_factory.mktemp("held")
  folders = {tool: root / tool for tool in TOOLS}
  for folder in folders.values():
    folder.mkdir()
    (folder / "earlier_result.json").write_text("{}")
  holder = _hold("test_holder", *folders.values())
  try:
    yield holder, folders, root
  finally:
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_refuses_a_folder_being_written(tool, held_folders):
  holder, folders, root = held_folders
  folder = folders[tool]
  args, flag = TOOLS[tool]
  before = _snapshot(folder)
  result = run_tool(tool, *args(folder, root))
  assert_clean_error(result, f"{folder} ", f"is being written by another test_holder process "
                     f"(pid {holder.pid}); wait for it to finish, or choose another {flag}",
                     code=1)
  assert _snapshot(folder) == before
  assert not (root / "work").exists()  # benchmark_latents' --work_dir: not made either.


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
  log = tmp_path / "first.log"
  with open(log, "wb") as out:
    first = subprocess.Popen([sys.executable, "-m", "tools.train_vae", *args], cwd=REPO_ROOT,
                             env=TOOL_ENV, stdout=out, stderr=subprocess.STDOUT)
  try:
    # Mid-run: config, flags, a backup and the first epoch's row written, three epochs to go.
    _wait_until(lambda: (model_dir / "history.csv").exists()
                and len(_history_lines(model_dir)) >= 2, first, log, "first history row")
    first.send_signal(signal.SIGSTOP)  # Holds still (and keeps its lock) while we look.
    before = _snapshot(model_dir)
    assert (model_dir / ".lock").read_text() == f"{first.pid} train_vae\n"
    # The same command again, even with --overwrite and another config (which would delete
    # the run): refused before it touches anything.
    second = run_tool("train_vae", *args, "--overwrite", "--kl_factor=2")
    assert_clean_error(second, f"--model_dir {model_dir} is being written by another "
                       f"train_vae process (pid {first.pid}); wait for it to finish, or choose "
                       "another --model_dir", code=1)
    assert _snapshot(model_dir) == before
  finally:
    first.send_signal(signal.SIGCONT)
  assert first.wait(timeout=600) == 0, log.read_text()
  lines = _history_lines(model_dir)
  assert lines[0].startswith("epoch,") and _row_epochs(lines) == [0, 1, 2, 3]
  assert (model_dir / "model.keras").is_file() and not (model_dir / ".lock").exists()

  # The damage that two trainers used to leave: two headers, every epoch twice, and (a kill
  # or a full disk) a last line cut short. The same command, one epoch longer, resumes.
  rows = lines[1:]
  damaged = [lines[0], lines[0], *rows, *rows]
  (model_dir / "history.csv").write_text("\r\n".join(damaged) + "\r\n4,123.", newline="")
  resumed = run_tool("train_vae", *args[:-1], "--epochs=5")
  assert resumed.returncode == 0, resumed.stderr
  assert "history.csv was damaged" in resumed.stderr
  assert "Epoch 5/5" in resumed.stdout and "Epoch 4/5" not in resumed.stdout
  lines = _history_lines(model_dir)
  assert lines[0].startswith("epoch,") and _row_epochs(lines) == [0, 1, 2, 3, 4]
  assert lines[1:5] == rows
