"""The trainers under faults: SIGKILL and rerun, divergence, a corrupt shard, a torn backup.

Trainer runs are real subprocesses on the 32x32 fixture with a tiny architecture (one epoch is
13 steps of 4 images). A kill is a real SIGKILL, sent while the backup of a later epoch than
the first is in the middle of its epoch.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from modeling import callbacks as callbacks_lib
from modeling import run_dir
from tests.damage import SHARD
from tests.damage import copy_data_dir
from tests.damage import flip_byte_of_record
from tests.toolrun import REPO_ROOT, assert_clean_error, run_tool

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

  resumed = run_tool("train_ae", *args)
  assert resumed.returncode == 0, resumed.stderr
  assert "holds this run already: resuming from its last backup" in resumed.stderr
  # Keras counts epochs from 1: the rerun starts at the interrupted epoch.
  assert re.findall(r"Epoch (\d+)/6", resumed.stdout) == [str(e + 1) for e in
                                                          range(killed_at, 6)]
  assert _history_epochs(model_dir) == list(range(6))
  run = run_dir.paths(model_dir)
  for path in (run.model, run.encoder, run.decoder, run.best):
    assert os.path.isfile(path), path
  assert json.load(open(run.manifest, encoding="utf-8"))["resumed"] is True
  assert not [n for n in os.listdir(backup_dir) if n.startswith(".tmp-")]


def test_divergence_stops_keeps_the_backup_and_refuses_a_new_config(prepared_data_dir, tmp_path):
  model_dir = tmp_path / "run"
  common = (f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}", *TINY,
            "--max_images=16")
  diverged = run_tool("train_vae", *common, "--epochs=3", "--backup_every_steps=1",
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
  refused = run_tool("train_vae", *common, "--epochs=1", "--learning_rate=0.001")
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

  failed = run_tool("train_ae", *args)
  assert_clean_error(failed, f"shard {shard}: record 1: unreadable (corrupted record at",
                     "tools.prepare_data", code=1)
  assert not os.path.exists(model_dir / "model.keras")

  skipped = run_tool("train_ae", *args, "--skip_corrupt")
  assert skipped.returncode == 0, skipped.stderr
  # The same run (--skip_corrupt is not part of its identity), now on 52 - 12 records, and
  # every epoch says so.
  assert "resuming from its last backup" in skipped.stderr
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
  backup._current_epoch, backup._last_batch_seen = 2, 5  # pylint: disable=protected-access
  backup._save_model()  # pylint: disable=protected-access
  weights = os.path.join(backup_dir, "latest.weights.h5")
  before = open(weights, "rb").read()

  def dies_halfway(filepath, overwrite=True):
    del overwrite
    with open(filepath, "wb") as f:
      f.write(b"half a weights file")
    raise KeyboardInterrupt

  model.set_weights([w + 1 for w in model.get_weights()])
  backup._current_epoch = 3  # pylint: disable=protected-access
  model.save_weights = dies_halfway
  with pytest.raises(KeyboardInterrupt):
    backup._save_model()  # pylint: disable=protected-access
  assert open(weights, "rb").read() == before
  assert callbacks_lib.Backup.saved_epoch(backup_dir) == 2
  assert sorted(os.listdir(backup_dir)) == ["latest.weights.h5", "latest.weights.h5.bkp",
                                            "training_metadata.json",
                                            "training_metadata.json.bkp"]
  restored = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  restored.load_weights(weights)
  assert all(np.isfinite(w).all() for w in restored.get_weights())
