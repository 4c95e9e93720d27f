"""Keras callbacks of the trainers: divergence stop, resumable backup, best model, early stop,
time budget, image grids.

Each one is a small subclass of a Keras callback that fixes what a resumable, crash-safe run
needs; the order in which modeling.training lists them matters (see there).
"""

import errno
import json
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from modeling import convergence
from modeling import run_dir
from modeling.errors import ModelError

_TMP_PREFIX = ".tmp-"  # Of Backup's files while they are written (run_dir ignores it too).


class TrainingDiverged(RuntimeError):
  """The training loss became NaN or infinite."""

  def __init__(self, epoch, step, loss):
    super().__init__(f"loss={loss} at epoch {epoch} step {step}")
    self.epoch, self.step, self.loss = epoch, step, loss


class StopOnNaN(keras.callbacks.Callback):
  """Raises TrainingDiverged at the first batch whose loss is NaN or infinite.

  Not Keras' TerminateOnNaN: it sets stop_training, after which fit still ends the epoch and
  calls every on_epoch_end, so the backup would save the NaN weights over the last good state.
  Raising from the first callback of the list stops before any later callback runs.
  """

  def __init__(self):
    super().__init__()
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise TrainingDiverged(self._epoch, batch, float(loss))


class Backup(keras.callbacks.Callback):
  """The run's resumable backup: model and optimizer state plus the epoch, kept after training.

  Public Keras API only (`model.save_weights`, which includes the optimizer's variables, and
  `model.load_weights`), with Keras' BackupAndRestore file layout, so that backups written
  before this class stay readable:
  `latest.weights.h5` + `training_metadata.json` ({"epoch": epochs completed, "batch": last
  batch seen}), and the previous pair as `*.bkp` (two generations: a current pair that cannot
  be read falls back to the previous one).

  - `restore(model)` loads the backup before fit(), and training.train passes the epoch it
    returns as fit(initial_epoch=...); this callback then continues saving from there.
  - The backup is kept after training: rerunning a finished run finds it complete, and a
    larger --epochs continues from the last epoch.
  - Every file is written under a temporary name and renamed into place, so that a kill
    (SIGKILL, the OOM killer) while saving leaves the previous backup whole (a torn weights
    file or an empty training_metadata.json would fail every later resume).
  - It saves at every epoch end, and with save_freq=N also every N batches (the epoch being
    run is recorded, so a resume restarts that epoch with the mid-epoch weights).
  - history.csv is trimmed to the epochs before the restored one, so that an epoch that ran
    after the last backup and is run again appears once; damage to it (a repeated header,
    duplicate rows, a cut-off last line) is repaired on the way (run_dir.repair_history).
    `repair_history` does the same before fit(), which a history without any header line needs.
  """

  WEIGHTS = "latest.weights.h5"
  METADATA = "training_metadata.json"
  PREVIOUS = ".bkp"  # Suffix of the previous generation's files.

  def __init__(self, backup_dir, history_path, save_freq="epoch"):
    super().__init__()
    if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq >= 1):
      raise ValueError(f"save_freq must be 'epoch' or a positive int, got {save_freq!r}")
    self.backup_dir = backup_dir
    self.history_path = history_path
    self.save_freq = save_freq
    self.restored_epoch = 0
    self._epoch = 0
    self._batches_since_save = 0

  @classmethod
  def _paths(cls, backup_dir):
    weights = os.path.join(backup_dir, cls.WEIGHTS)
    metadata = os.path.join(backup_dir, cls.METADATA)
    return weights, metadata

  @classmethod
  def saved_epoch(cls, backup_dir):
    """The epoch a rerun would start at (epochs completed), or 0 without a readable backup."""
    return cls._read_epoch(cls._paths(backup_dir)[1])

  @staticmethod
  def _read_epoch(path):
    try:
      with open(path, encoding="utf-8") as f:
        return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
      return 0

  @staticmethod
  def repair_history(backup_dir, history_path):
    """Repairs damage to history.csv (run_dir.repair_history); call before fit().

    Before fit(), because Keras' CSVLogger, which runs before this callback, decides at train
    begin whether the file needs a header: a file that had to be moved aside (no header line)
    must be empty by then, or the new rows would go without one. Rows of epochs after the
    backup stay until train begin, which trims them to the epoch actually restored: in a
    multi-worker run that is the chief's, which a worker knows only then.

    Args:
      backup_dir: the run's backup dir (kept for the callers; the epoch is decided later).
      history_path: the run's history.csv.

    Returns:
      What was wrong (run_dir.repair_history).
    """
    del backup_dir
    return run_dir.repair_history(history_path, None)

  def restore(self, model):
    """Loads the backup into `model` (weights, optimizer state, sampling state).

    Call before fit(), with the model built and compiled (the optimizer is built here when it
    is not yet, so that its saved state has variables to go to). The current pair is tried
    first, then the previous one.

    Args:
      model: the compiled Keras model the backup was written from.

    Returns:
      The epoch to resume at (epochs completed), 0 when there is no backup.

    Raises:
      OSError or ValueError: neither pair of files can be loaded (Keras' error of the current
        pair).
    """
    self._remove_temporaries()
    weights, metadata = self._paths(self.backup_dir)
    if not os.path.exists(weights):
      return 0
    if model.optimizer is not None and not model.optimizer.built:
      model.optimizer.build(model.trainable_variables)
    try:
      model.load_weights(weights)
      return self._read_epoch(metadata)
    except (OSError, ValueError):
      if not os.path.exists(weights + self.PREVIOUS):
        raise
      logging.warning("backup %s cannot be loaded; falling back to the previous one (%s)",
                      weights, weights + self.PREVIOUS)
      # Keras loads only names ending in ".weights.h5", which the layout's ".bkp" does not:
      # the previous weights are loaded through a link under such a name.
      # A temporary name: a kill leaves it to _remove_temporaries.
      previous = os.path.join(self.backup_dir, f"{_TMP_PREFIX}{os.getpid()}-{self.WEIGHTS}")
      _link_or_copy(weights + self.PREVIOUS, previous)
      try:
        model.load_weights(previous)
      finally:
        os.remove(previous)
      return self._read_epoch(metadata + self.PREVIOUS)

  def _remove_temporaries(self):
    """Temporaries of a save that a kill interrupted."""
    if os.path.isdir(self.backup_dir):
      for name in os.listdir(self.backup_dir):
        if name.startswith(_TMP_PREFIX):
          os.remove(os.path.join(self.backup_dir, name))

  def on_train_begin(self, logs=None):
    self._remove_temporaries()
    self._epoch = self.restored_epoch
    self._batches_since_save = 0
    run_dir.trim_history(self.history_path, self.restored_epoch)

  def on_epoch_begin(self, epoch, logs=None):
    # A step backup in this epoch records it, so that a resume restarts this epoch.
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self.save_freq == "epoch":
      return
    self._batches_since_save += 1
    if self._batches_since_save >= self.save_freq:
      self._batches_since_save = 0
      self.save(self._epoch, batch)

  def on_epoch_end(self, epoch, logs=None):
    self._batches_since_save = 0
    self.save(epoch + 1, 0)

  def save(self, epoch, batch):
    """Writes the backup of the model's current state as `epoch` (epochs completed), atomically.

    The current pair is first copied to the previous one, then replaced; each file goes
    through a temporary name and a rename, so that a kill at any point leaves a whole pair.

    Args:
      epoch: the epoch a resume should start at.
      batch: the last batch seen in that epoch (0 at an epoch end); informational.
    """
    os.makedirs(self.backup_dir, exist_ok=True)
    weights, metadata = self._paths(self.backup_dir)
    for current in (weights, metadata):
      if os.path.exists(current):
        save_atomic(current + self.PREVIOUS,
                    lambda tmp, source=current: _link_or_copy(source, tmp), 0)
    save_atomic(weights, lambda tmp: self.model.save_weights(tmp, overwrite=True),
                saved_bytes(self.model))
    text = json.dumps({"epoch": int(epoch), "batch": int(batch)})

    def write_metadata(tmp):
      with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    save_atomic(metadata, write_metadata, 0)


def _link_or_copy(source, target):
  """A hard link of `source` at `target` (a copy where the file system has none).

  A link suffices: `source` is never written in place, only replaced by a rename (save_atomic),
  which leaves the linked file's contents as they were. For ae_z1600 it saves copying 190 MB
  (weights and optimizer state) at every backup.
  """
  try:
    os.link(source, target)
  except OSError:
    shutil.copyfile(source, target)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# What a saved file holds beyond its variables' bytes (HDF5 and zip headers, the config).
_OVERHEAD_BYTES, _OVERHEAD_SHARE = 1 << 20, 0.02


def saved_bytes(model):
  """About the bytes of `model`'s saved file: its variables and its optimizer's, if any."""
  optimizer = getattr(model, "optimizer", None)
  variables = list(model.weights) + (list(optimizer.variables) if optimizer else [])
  total = 0
  for variable in variables:
    try:
      itemsize = np.dtype(variable.dtype).itemsize
    except TypeError:  # A dtype NumPy does not know (bfloat16 without ml_dtypes).
      itemsize = 4
    total += int(np.prod(variable.shape)) * itemsize
  return int(total * (1 + _OVERHEAD_SHARE)) + _OVERHEAD_BYTES


def _no_space(directory, name, needed, free):
  return ModelError(
      f"no space left on the device of {directory} to save {name}: it needs about "
      f"{needed / 1e6:,.0f} MB, {free / 1e6:,.0f} MB are free; free space there, then rerun "
      "the same command: it resumes from the last complete backup")


def save_atomic(path, write, needed_bytes):
  """Calls write(tmp) for a temporary name beside `path`, then renames it onto `path`.

  A kill at any point leaves the previous file whole. A full disk is checked before the
  write starts (`needed_bytes` against the free space): h5py, which writes the weights, can
  leave its file handle broken and crash the interpreter at exit after a failed write.

  Raises:
    ModelError: not enough free space, before or during the write (one line, naming the
      directory and the space needed); the previous file is kept.
  """
  directory, name = os.path.split(path)
  free = shutil.disk_usage(directory).free
  if free < needed_bytes:
    raise _no_space(directory, name, needed_bytes, free)
  # The name keeps its suffix: save_weights insists on ".weights.h5", save on ".keras".
  tmp = os.path.join(directory, f"{_TMP_PREFIX}{os.getpid()}-{name}")
  try:
    write(tmp)
    os.replace(tmp, path)
  except OSError as error:
    if error.errno not in _NO_SPACE:
      raise
    raise _no_space(directory, name, needed_bytes, shutil.disk_usage(directory).free) from None
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)


class BestModelCheckpoint(keras.callbacks.Callback):
  """Saves the model with the lowest `monitor` (val_loss) as best.keras, atomically.

  On resume, the best value so far is read back from history.csv (the epochs before the
  restored backup's), so that a worse epoch after the restart does not replace a better
  best.keras. An epoch whose value is missing or not finite is never the best. It runs
  before the backup: an epoch whose best.keras could not be written is not backed up either,
  so the rerun repeats it and best.keras is never missing an epoch.
  """

  def __init__(self, filepath, history_path, backup, monitor="val_loss"):
    super().__init__()
    self.filepath = os.path.abspath(filepath)
    self.history_path = history_path
    self.backup = backup  # The run's Backup: the epoch it restored.
    self.monitor = monitor
    self.best = math.inf

  def on_train_begin(self, logs=None):
    self.best = math.inf
    values = [row[self.monitor] for row in run_dir.read_history(self.history_path)
              if row["epoch"] < self.backup.restored_epoch
              and math.isfinite(row.get(self.monitor, math.nan))]
    if values and os.path.exists(self.filepath):
      self.best = min(values)

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None:
      logging.warning("best.keras: the epoch's logs have no %s; not saved", self.monitor)
      return
    value = float(value)
    if math.isfinite(value) and value < self.best:
      self.best = value
      save_atomic(self.filepath, lambda tmp: self.model.save(tmp), saved_bytes(self.model))


class EarlyStoppingFromHistory(keras.callbacks.Callback):
  """Stops training once val_loss has not improved by a relative min_delta for `patience`
  epochs (modeling.convergence.replay over history.csv's rows and this run's epochs).

  Keras' EarlyStopping has the same rule with an absolute min_delta; the study's losses (sums
  over pixels) differ by model and image size, so here it is a fraction of the best loss. And
  its state lives in memory only: replaying the history, a resumed run stops at the epoch an
  uninterrupted one would.
  """

  def __init__(self, history_path, patience, min_delta=0.0, min_epochs=1):
    super().__init__()
    self.history_path = history_path
    self.patience = patience
    self.min_delta = min_delta
    self.min_epochs = min_epochs
    self.val_losses = []

  def on_train_begin(self, logs=None):
    self.val_losses = [row.get("val_loss", math.nan)
                       for row in run_dir.read_history(self.history_path)]

  def on_epoch_end(self, epoch, logs=None):
    del self.val_losses[epoch:]  # Epochs of a history that Backup trimmed on resume.
    self.val_losses.append(float((logs or {}).get("val_loss", math.nan)))
    state = convergence.replay(self.val_losses, self.patience, self.min_delta,
                               self.min_epochs)
    if state.converged:
      logging.info("early stopping after epoch %d: val_loss has not improved by %g of its "
                   "best (%.6g, epoch %d) for %d epochs", epoch + 1, self.min_delta,
                   state.best, state.best_epoch + 1, self.patience)
      self.model.stop_training = True


class StopAtDeadline(keras.callbacks.Callback):
  """Starts no epoch after `deadline` (time.time() seconds): a run's time budget.

  Checked at epoch ends, so the epoch under way finishes and is backed up, and a run trains at
  least one epoch; `stopped_epoch` is the 0-based epoch after which it stopped, or None.
  """

  def __init__(self, deadline):
    super().__init__()
    self.deadline = deadline
    self.stopped_epoch = None

  def on_epoch_end(self, epoch, logs=None):
    last = epoch + 1 >= self.params.get("epochs", math.inf)
    if time.time() >= self.deadline and not (self.model.stop_training or last):
      logging.info("time budget spent after epoch %d: no further epoch starts", epoch + 1)
      self.stopped_epoch = epoch
      self.model.stop_training = True


def image_grid(rows, pad=2):
  """Tiles equal-length lists of float images [S,S,3] in [0,1] into one [H,W,3] float array."""
  rows = [np.clip(np.asarray(r, dtype=np.float32), 0.0, 1.0) for r in rows]
  count, size = rows[0].shape[0], rows[0].shape[1]
  cell = size + pad
  grid = np.ones((len(rows) * cell + pad, count * cell + pad, 3), dtype=np.float32)
  for i, row in enumerate(rows):
    for j in range(count):
      top, left = pad + i * cell, pad + j * cell
      grid[top:top + size, left:left + size] = row[j]
  return grid


class ImageGridCallback(keras.callbacks.Callback):
  """Writes an image grid to TensorBoard after each epoch.

  Rows: the fixed preview images, their reconstructions and, with `num_samples`, decodings
  of N(0, I) draws with a fixed seed (the same z each epoch, so the images show the model's
  progress rather than new noise).
  """

  def __init__(self, log_dir, images, num_samples=0, seed=0):
    super().__init__()
    self.log_dir = log_dir
    self.images = np.asarray(images, dtype=np.uint8)
    self.num_samples = int(num_samples)
    self.seed = int(seed)
    self._writer = None

  def on_train_begin(self, logs=None):
    self._writer = tf.summary.create_file_writer(self.log_dir)

  def on_epoch_end(self, epoch, logs=None):
    reconstructions = keras.ops.convert_to_numpy(self.model(self.images, training=False))
    grids = {"reconstructions": image_grid([self.images / 255.0, reconstructions])}
    if self.num_samples:
      samples = keras.ops.convert_to_numpy(self.model.sample(self.num_samples, seed=self.seed))
      grids["samples"] = image_grid([samples])
    with self._writer.as_default():
      for name, grid in grids.items():
        tf.summary.image(name, grid[None], step=epoch)
    self._writer.flush()

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
