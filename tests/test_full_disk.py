"""A full disk under the trainers' checkpoints and the tools' other outputs.

Where this process may mount (root, as in CI here) the disk is a real, small tmpfs filled with
a filler file; elsewhere those tests skip, saying why, and the injected-ENOSPC tests below
still cover each path (the free-space check, a write that fails, the tools' one line).
"""

import errno
import collections
import os
import subprocess

import numpy as np
import pytest

from modeling import callbacks
from modeling import run_dir
from modeling.errors import ModelError
from tests.toolrun import assert_clean_error, run_main

Usage = collections.namedtuple("Usage", "total used free")  # As shutil.disk_usage answers.
TINY = ("--encoder_filters=8,16", "--encoder_kernels=3", "--strides=2", "--z_dim=4",
        "--batch_size=4", "--preview_images=0", "--max_images=16")


@pytest.fixture
def small_disk(tmp_path):
  """A 16 MB tmpfs at tmp_path/disk, and fill(leave_bytes) that leaves that much free."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                           capture_output=True, check=False)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the "
                "injected-ENOSPC tests cover the same paths")
  filler = disk / "filler"

  def fill(leave_bytes):
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "ab") as f:
      f.write(b"\0" * max(0, free - leave_bytes))

  try:
    yield disk, fill, lambda: os.remove(filler)
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_full_at_an_epoch_end_is_one_line_and_the_rerun_completes(prepared_data_dir,
                                                                         small_disk):
  disk, fill, free_again = small_disk
  model_dir = disk / "run"
  args = (f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}", *TINY)
  assert run_main("train_ae", *args, "--epochs=1").returncode == 0
  fill(leave_bytes=64 * 1024)  # Room for the logs, not for a checkpoint.
  full = run_main("train_ae", *args, "--epochs=2")
  assert_clean_error(full, f"no space left on the device of {model_dir}", "MB are free",
                     "free space there, then rerun the same command", code=1)
  backup = str(model_dir / run_dir.BACKUP)
  assert callbacks.Backup.saved_epoch(backup) == 1  # The last good backup, whole.
  assert not [n for n in os.listdir(backup) + os.listdir(model_dir) if n.startswith(".tmp-")]

  free_again()
  resumed = run_main("train_ae", *args, "--epochs=2")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resuming from its last backup, after epoch 1" in resumed.stderr
  assert callbacks.Backup.saved_epoch(backup) == 2
  for name in (run_dir.MODEL, run_dir.ENCODER, run_dir.DECODER, run_dir.BEST):
    assert (model_dir / name).is_file(), name
  assert [row["epoch"] for row in run_dir.read_history(str(model_dir / run_dir.HISTORY))] \
      == [0, 1]

  # A finished run dir that lost a promised file says so when it is run again.
  os.remove(model_dir / run_dir.BEST)
  again = run_main("train_ae", *args, "--epochs=2")
  assert again.returncode == 0 and "is missing best.keras" in again.stderr


def test_a_full_disk_under_a_tools_output_is_one_line(small_disk, tmp_path):
  disk, fill, _ = small_disk
  z = tmp_path / "z.npy"
  np.save(z, np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32))
  fill(leave_bytes=0)
  result = run_main("analyze_latents", f"--z_points={z}", f"--output_dir={disk / 'latents'}")
  assert_clean_error(result, f"no space left on the device of {disk / 'latents'}",
                     "No space left on device", "rerun the same command", code=1)


def test_a_checkpoint_that_cannot_fit_is_refused_before_it_is_written(tmp_path, monkeypatch):
  target = tmp_path / "best.keras"
  target.write_bytes(b"previous")
  monkeypatch.setattr(callbacks.shutil, "disk_usage",
                      lambda path: Usage(100 * 10**6, 90 * 10**6, 10 * 10**6))
  written = []
  with pytest.raises(ModelError) as refused:
    callbacks.save_atomic(str(target), written.append, 50 * 10**6)
  assert str(refused.value) == (
      f"no space left on the device of {tmp_path} to save best.keras: it needs about 50 MB, "
      "10 MB are free; free space there, then rerun the same command: it resumes from the "
      "last complete backup")
  assert not written and target.read_bytes() == b"previous"


def test_a_write_that_runs_out_of_space_keeps_the_previous_file(tmp_path):
  target = tmp_path / "latest.weights.h5"
  target.write_bytes(b"previous")

  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(b"half")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with pytest.raises(ModelError, match=f"no space left on the device of {tmp_path} to save "
                     "latest.weights.h5"):
    callbacks.save_atomic(str(target), write, 0)
  assert os.listdir(tmp_path) == ["latest.weights.h5"] and target.read_bytes() == b"previous"


def test_any_tool_words_an_injected_full_disk_in_one_line(tmp_path, monkeypatch):
  from data_pipeline import provenance  # pylint: disable=g-import-not-at-top
  real_write = provenance.atomic_write_bytes

  def full(path, data):
    if path.endswith("latent_report.json"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return real_write(path, data)

  monkeypatch.setattr(provenance, "atomic_write_bytes", full)
  z = tmp_path / "z.npy"
  np.save(z, np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32))
  result = run_main("analyze_latents", f"--z_points={z}", f"--output_dir={tmp_path / 'out'}")
  assert_clean_error(result, f"no space left on the device of {tmp_path / 'out'} (writing "
                     "latent_report.json: No space left on device)", code=1)
