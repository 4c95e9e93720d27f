"""The trainers under faults: SIGKILL and rerun, divergence, a corrupt shard, a torn backup.

Trainer runs are real subprocesses on the 32x32 fixture with a tiny architecture (one epoch is
13 steps of 4 images). A kill is a real SIGKILL, sent while the backup of a later epoch than
the first is in the middle of its epoch; the killed trainer's lock on the run dir does not
block the rerun. Damaged histories (a repeated header, duplicate rows, a cut-off last line, no
header at all) are resumed in this process, on a tiny AE fed from memory.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling import callbacks as callbacks_lib
from modeling import config as config_lib
from modeling import run_dir
from modeling import training
from tests.damage import SHARD
from tests.damage import copy_data_dir
from tests.damage import flip_byte_of_record
from tests.toolrun import REPO_ROOT, assert_clean_error, ctrl_c_reaches_children, run_main
from tests.toolrun import run_tool

pytestmark = pytest.mark.slow

TINY = ("--encoder_filters=8,16", "--encoder_kernels=3", "--strides=2", "--z_dim=4",
        "--batch_size=4", "--preview_images=0")


def _history_epochs(model_dir):
  with open(os.path.join(model_dir, "history.csv"), newline="", encoding="utf-8") as f:
    return [int(row["epoch"]) for row in csv.DictReader(f)]


def _backup_state(backup_dir):
  """(epoch, batch) of the backup's training_metadata.json, or None (absent, being written)."""
  try:
    with open(os.path.join(backup_dir, "training_metadata.json"), encoding="utf-8") as f:
      state = json.load(f)
    return state["epoch"], state["batch"]
  except (OSError, ValueError, KeyError):
    return None


def test_sigkill_mid_epoch_then_the_same_command_resumes(prepared_data_dir, tmp_path):
  model_dir = tmp_path / "run"
  backup_dir = model_dir / "backup"
  args = (f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}", *TINY, "--epochs=6",
          "--backup_every_steps=1")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
  with open(tmp_path / "killed.log", "wb") as log:
    process = subprocess.Popen([sys.executable, "-m", "tools.train_ae", *args], cwd=REPO_ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + 300
      while True:  # Until a step backup inside epoch 1 or later (0-based) exists.
        state = _backup_state(backup_dir)
        if state and state[0] >= 1 and state[1] >= 1:
          break
        assert process.poll() is None, (tmp_path / "killed.log").read_text()
        assert time.monotonic() < deadline, "no mid-epoch backup within 300 s"
        time.sleep(0.02)
      os.kill(process.pid, signal.SIGKILL)
    finally:
      process.wait()
  assert process.returncode == -signal.SIGKILL
  killed_at, _ = _backup_state(backup_dir)
  assert 1 <= killed_at < 6 and not os.path.exists(model_dir / "model.keras")
  rows = _history_epochs(model_dir)
  # The CSV row of an epoch precedes its end-of-epoch backup, so one more row may be there.
  assert rows == list(range(len(rows))) and len(rows) in (killed_at, killed_at + 1)
  # The killed trainer's lock file stays behind (no clean-up ran), but the kernel dropped its
  # lock: the rerun takes it over.
  assert (model_dir / run_dir.LOCK).read_text() == f"{process.pid} train_ae\n"

  resumed = run_main("train_ae", *args)
  assert resumed.returncode == 0, resumed.stderr
  assert "holds this run already" in resumed.stderr
  assert f"resuming from its last backup, after epoch {killed_at}" in resumed.stderr
  # Keras counts epochs from 1: the rerun starts at the interrupted epoch.
  assert re.findall(r"Epoch (\d+)/6", resumed.stdout) == [str(e + 1) for e in
                                                          range(killed_at, 6)]
  assert _history_epochs(model_dir) == list(range(6))
  run = run_dir.paths(model_dir)
  for path in (run.model, run.encoder, run.decoder, run.best):
    assert os.path.isfile(path), path
  assert json.load(open(run.manifest, encoding="utf-8"))["resumed"] is True
  assert not [n for n in os.listdir(backup_dir) if n.startswith(".tmp-")]
  assert not (model_dir / run_dir.LOCK).exists()


def test_ctrl_c_pressed_again_and_again_ends_the_trainer_within_seconds(prepared_data_dir,
                                                                       tmp_path):
  """A terminal's Ctrl-C, pressed four times, reaches the trainer and its tf.data threads."""
  model_dir = tmp_path / "run"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
  with open(tmp_path / "out.log", "wb") as out, open(tmp_path / "err.log", "wb") as err:
    with ctrl_c_reaches_children():
      process = subprocess.Popen(
          [sys.executable, "-m", "tools.train_ae", f"--data_dir={prepared_data_dir}",
           f"--model_dir={model_dir}", *TINY, "--epochs=500"], cwd=REPO_ROOT, env=env,
          stdout=out, stderr=err, start_new_session=True)
    try:
      deadline = time.monotonic() + 300
      while not _backup_state(model_dir / "backup"):  # Training, one epoch backed up.
        assert process.poll() is None, (tmp_path / "err.log").read_text()
        assert time.monotonic() < deadline, "no backup within 300 s"
        time.sleep(0.05)
      for _ in range(4):
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.1)
      code = process.wait(timeout=30)
    finally:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
  stderr = (tmp_path / "err.log").read_text()
  assert code == 130, stderr[-3000:]
  errors = [line for line in stderr.splitlines() if ": error: " in line]
  assert len(errors) == 1 and "interrupted; rerun the same command" in errors[0], stderr
  assert "Traceback" not in stderr
  assert _backup_state(model_dir / "backup")[0] >= 1  # A resumable state.


def test_divergence_stops_keeps_the_backup_and_refuses_a_new_config(prepared_data_dir, tmp_path):
  model_dir = tmp_path / "run"
  common = (f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}", *TINY,
            "--max_images=16")
  diverged = run_main("train_vae", *common, "--epochs=3", "--backup_every_steps=1",
                      "--learning_rate=1e8")
  assert_clean_error(diverged, "training diverged at epoch 1 step", "(loss=nan)",
                     f"the last good state is in {model_dir / 'backup'}", "--learning_rate",
                     "--overwrite", code=1)
  assert not os.path.exists(model_dir / "model.keras")
  assert _backup_state(model_dir / "backup") is not None
  # The progress bar's line is ended before the error line (which goes to stderr).
  assert diverged.stdout.endswith("\n")

  # Its fix, a lower --learning_rate, is a different config: refused without --overwrite
  # (which prepare_run_dir's own tests cover), leaving the diverged run as it was.
  before = {n: (model_dir / n).read_bytes()
            for n in ("config.json", "flags.txt", "manifest.json", "backup/latest.weights.h5")}
  refused = run_main("train_vae", *common, "--epochs=1", "--learning_rate=0.001")
  assert_clean_error(refused, "different config", "train.learning_rate: 100000000.0 -> 0.001",
                     "--overwrite", code=1)
  assert {n: (model_dir / n).read_bytes() for n in before} == before


def test_corrupt_shard_fails_with_its_name_then_skip_corrupt_resumes(prepared_data_dir,
                                                                      tmp_path):
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  shard = data_dir / SHARD
  flip_byte_of_record(shard, 1)
  model_dir = tmp_path / "run"
  args = (f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY, "--epochs=2")

  failed = run_main("train_ae", *args)
  assert_clean_error(failed, f"shard {shard}: record 1: unreadable (corrupted record at",
                     "tools.prepare_data", code=1)
  assert not os.path.exists(model_dir / "model.keras")

  skipped = run_main("train_ae", *args, "--skip_corrupt")
  assert skipped.returncode == 0, skipped.stderr
  # The same run (--skip_corrupt is not part of its identity), now on 52 - 12 records, and
  # every epoch says so.
  # The failed run completed no epoch, so this one starts at epoch 1.
  assert "holds this run already" in skipped.stderr
  assert "resuming from its last backup" not in skipped.stderr
  assert re.findall(r"Epoch (\d+)/2", skipped.stdout) == ["1", "2"]
  lost = f"skip_corrupt: shard {shard}: read 1 of 13 records, 12 lost to damaged data"
  assert skipped.stderr.count(lost) == 2, skipped.stderr
  assert skipped.stderr.count("read 40 of 52 records, 12 lost") == 2
  assert _history_epochs(model_dir) == [0, 1]
  manifest = json.load(open(model_dir / "manifest.json", encoding="utf-8"))
  assert manifest["skip_corrupt"] is True


def test_backup_never_leaves_a_torn_file(tmp_path):
  # A kill while Keras wrote the backup in place left a truncated weights file or an empty
  # training_metadata.json, and the empty JSON failed every later resume. A failing write
  # must leave the previous backup whole.
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  backup_dir = str(tmp_path / "backup")
  backup = callbacks_lib.Backup(backup_dir, str(tmp_path / "history.csv"), save_freq=1)
  backup.set_model(model)
  backup.save(epoch=2, batch=5)
  weights = os.path.join(backup_dir, "latest.weights.h5")
  before = open(weights, "rb").read()

  def dies_halfway(filepath, overwrite=True):
    del overwrite
    with open(filepath, "wb") as f:
      f.write(b"half a weights file")
    raise KeyboardInterrupt

  model.set_weights([w + 1 for w in model.get_weights()])
  model.save_weights = dies_halfway
  with pytest.raises(KeyboardInterrupt):
    backup.save(epoch=3, batch=0)
  assert open(weights, "rb").read() == before
  assert callbacks_lib.Backup.saved_epoch(backup_dir) == 2
  assert sorted(os.listdir(backup_dir)) == ["latest.weights.h5", "latest.weights.h5.bkp",
                                            "training_metadata.json",
                                            "training_metadata.json.bkp"]
  restored = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  restored.load_weights(weights)
  assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_the_previous_backup_keeps_the_older_state(tmp_path):
  # The previous generation is a hard link of the current files (no 190 MB copy for
  # ae_z1600): the next save must replace the current files, never write into them.
  def compiled():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)  # As the trainers do: its state is saved.
    return model

  model = compiled()
  backup_dir = str(tmp_path / "backup")
  backup = callbacks_lib.Backup(backup_dir, str(tmp_path / "history.csv"))
  backup.set_model(model)
  older = model.get_weights()
  backup.save(epoch=1, batch=0)
  model.set_weights([w + 1 for w in older])
  backup.save(epoch=2, batch=0)
  weights = os.path.join(backup_dir, "latest.weights.h5")
  assert not os.path.samefile(weights, weights + callbacks_lib.Backup.PREVIOUS)

  def restored_weights():
    restored = compiled()
    epoch = callbacks_lib.Backup(backup_dir, str(tmp_path / "history.csv")).restore(restored)
    return epoch, restored.get_weights()

  epoch, current = restored_weights()
  assert epoch == 2 and all(np.array_equal(a, b + 1) for a, b in zip(current, older))
  # A current pair that cannot be read: the previous generation, epoch 1's state, is loaded.
  with open(weights, "wb") as f:
    f.write(b"not an h5 file")
  epoch, previous = restored_weights()
  assert epoch == 1 and all(np.array_equal(a, b) for a, b in zip(previous, older))
  assert sorted(os.listdir(backup_dir)) == ["latest.weights.h5", "latest.weights.h5.bkp",
                                            "training_metadata.json",
                                            "training_metadata.json.bkp"]


# Damaged histories, in this process: a tiny AE on in-memory images, resumed the way
# tools.train_common resumes a run (Backup.repair_history, then training.train).

_SMALL = dict(image_size=16, z_dim=4, encoder_filters=[4, 8], encoder_kernels=[3, 3],
              strides=[2, 2])


def _train_small(model_dir, epochs):
  model_config = config_lib.resolve_config("ae_z256", _SMALL)
  images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), np.uint8)
  dataset = tf.data.Dataset.from_tensor_slices(images).batch(8, drop_remainder=True)
  run = run_dir.paths(model_dir)
  callbacks_lib.Backup.repair_history(run.backup, run.history)
  return training.train(model_config, training.TrainConfig(epochs=epochs, batch_size=8, seed=1),
                        dataset, dataset.take(1), str(model_dir), verbose=0)


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
  path = tmp_path_factory.mktemp("two_epochs") / "run"
  _train_small(path, 2)
  return path


def _lines(path):
  return path.read_bytes().decode("utf-8").splitlines()


@pytest.mark.parametrize("damage", ["repeated_header", "duplicate_rows", "truncated_last_line",
                                    "no_header"])
def test_a_damaged_history_is_repaired_on_resume(two_epoch_run, tmp_path, damage):
  model_dir = tmp_path / "run"
  shutil.copytree(two_epoch_run, model_dir)
  history = model_dir / "history.csv"
  header, *rows = _lines(history)
  assert [row.split(",")[0] for row in rows] == ["0", "1"]
  # Duplicates: the last row of an epoch wins (the latest written, the one the backup follows).
  older = [row.split(",", 1)[0] + ",999" + "".join("," + v for v in row.split(",")[2:])
           for row in rows]
  damaged = {
      "repeated_header": "\r\n".join([header, header, *rows]) + "\r\n",
      "duplicate_rows": "\r\n".join([header, *older, *rows]) + "\r\n",
      "truncated_last_line": "\r\n".join([header, *rows]) + "\r\n2,12",
      "no_header": "\x00\x07 not a history\r\n1;2;3\r\n",
  }[damage]
  history.write_bytes(damaged.encode("utf-8"))

  result = _train_small(model_dir, 3)
  assert result.initial_epoch == 2 and [r["epoch"] for r in result.history][-1] == 2
  lines = _lines(history)
  assert lines[0] == header and lines.count(header) == 1
  if damage == "no_header":
    # Nothing to rebuild from: moved aside, and the history starts afresh at the resumed epoch.
    assert (model_dir / "history.csv.damaged").read_bytes() == damaged.encode("utf-8")
    assert [line.split(",")[0] for line in lines[1:]] == ["2"]
  else:
    assert lines[1:3] == rows and [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]
