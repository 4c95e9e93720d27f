"""Keras callbacks of the trainers: divergence stop, resumable backup, best model, image grids.

Each one is a small subclass of a Keras callback that fixes what a resumable, crash-safe run
needs; the order in which modeling.training lists them matters (see there).
"""

import json
import math
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from modeling import run_dir

_TMP_PREFIX = ".tmp-"  # Of Backup's files while they are written (run_dir ignores it too).


class TrainingDiverged(RuntimeError):
  """The training loss became NaN or infinite."""

  def __init__(self, epoch, step, loss):
    super().__init__(f"loss={loss} at epoch {epoch} step {step}")
    self.epoch, self.step, self.loss = epoch, step, loss


class StopOnNaN(keras.callbacks.TerminateOnNaN):
  """TerminateOnNaN that raises at once instead of finishing the epoch.

  Keras' TerminateOnNaN sets stop_training, after which fit still ends the epoch and calls
  every on_epoch_end, so BackupAndRestore would save the NaN weights over the last good
  state. Raising from the first callback of the list stops before any later callback runs.
  """

  def __init__(self):
    super().__init__(raise_error=True)
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise TrainingDiverged(self._epoch, batch, float(loss))


class Backup(keras.callbacks.BackupAndRestore):
  """BackupAndRestore that keeps its backup, saves every epoch end, and trims history.csv.

  - The backup is kept after training (delete_checkpoint=False): rerunning a finished run then
    finds it complete, and a larger --epochs continues from the last epoch.
  - Every file is written under a temporary name and renamed into place, so that a kill
    (SIGKILL, the OOM killer) while saving leaves the previous backup whole. Keras writes
    them in place: a kill there left a truncated weights file (Keras falls back to the
    previous pair) or an empty training_metadata.json, which failed every later resume with
    a JSONDecodeError. Two generations are still kept (double_checkpoint).
  - With save_freq=N steps it also saves at every epoch end, so a finished run's backup
    always records its last epoch.
  - history.csv is trimmed to the epochs before the restored one, so that an epoch that ran
    after the last backup and is run again appears once; damage to it (a repeated header,
    duplicate rows, a cut-off last line) is repaired on the way (run_dir.repair_history).
    `repair_history` does the same before fit(), which a history without any header line needs.
  """

  def __init__(self, backup_dir, history_path, save_freq="epoch"):
    super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True,
                     delete_checkpoint=False)
    self.history_path = history_path
    self.restored_epoch = 0

  @staticmethod
  def saved_epoch(backup_dir):
    """The epoch a rerun would start at (epochs completed), or 0 without a backup."""
    # The file name is Keras' own; ask an instance instead of repeating it here.
    probe = keras.callbacks.BackupAndRestore(backup_dir)
    path = probe._training_metadata_path  # pylint: disable=protected-access
    try:
      with open(path, encoding="utf-8") as f:
        return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
      return 0

  @staticmethod
  def repair_history(backup_dir, history_path):
    """Repairs history.csv to the epochs of the backup in `backup_dir`; call before fit().

    Before fit(), because Keras' CSVLogger, which runs before this callback, decides at train
    begin whether the file needs a header: a file that had to be moved aside (no header line)
    must be empty by then, or the new rows would go without one.

    Returns:
      What was wrong (run_dir.repair_history).
    """
    return run_dir.repair_history(history_path, Backup.saved_epoch(backup_dir))

  def on_train_begin(self, logs=None):
    if os.path.isdir(self.backup_dir):  # Temporaries of a save that a kill interrupted.
      for name in os.listdir(self.backup_dir):
        if name.startswith(_TMP_PREFIX):
          os.remove(os.path.join(self.backup_dir, name))
    super().on_train_begin(logs)
    self.restored_epoch = int(self.model._initial_epoch or 0)  # pylint: disable=protected-access
    self._current_epoch = self.restored_epoch
    run_dir.trim_history(self.history_path, self.restored_epoch)

  def on_epoch_begin(self, epoch, logs=None):
    # Keras sets this only at epoch ends; without it, a step backup in the first epoch after
    # a resume would record epoch 0 and send the next resume back to the start.
    self._current_epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch, logs)
    if self.save_freq != "epoch":
      self._save_model()
      self._batches_seen_since_last_saving = 0

  def _save_model(self):
    # Keras' own sequence (copy the current pair to the previous one, then write the current
    # pair), with each file replaced atomically.
    os.makedirs(self.backup_dir, exist_ok=True)
    for current, previous in ((self._weights_path, self._prev_weights_path),
                              (self._training_metadata_path, self._prev_training_metadata_path)):
      if os.path.exists(current):
        _replace(previous, lambda tmp, source=current: shutil.copyfile(source, tmp))
    _replace(self._weights_path, lambda tmp: self.model.save_weights(tmp, overwrite=True))
    metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})

    def write_metadata(tmp):
      with open(tmp, "w", encoding="utf-8") as f:
        f.write(metadata)
    _replace(self._training_metadata_path, write_metadata)


def _replace(path, write):
  """Calls write(tmp) for a temporary name beside `path`, then renames it onto `path`."""
  directory, name = os.path.split(path)
  # The name keeps its suffix: save_weights insists on ".weights.h5".
  tmp = os.path.join(directory, f"{_TMP_PREFIX}{os.getpid()}-{name}")
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
  """Saves the model with the lowest val_loss, through a temporary file and a rename.

  On resume, the best value so far is read back from history.csv, so that a worse epoch after
  the restart does not replace a better best.keras.
  """

  def __init__(self, filepath, history_path, monitor="val_loss"):
    directory, name = os.path.split(os.path.abspath(filepath))
    super().__init__(os.path.join(directory, f".tmp-{name}"), monitor=monitor,
                     save_best_only=True)
    self.final_path = os.path.abspath(filepath)
    self.history_path = history_path

  def on_train_begin(self, logs=None):
    if os.path.exists(self.filepath):
      os.remove(self.filepath)
    values = [row[self.monitor] for row in run_dir.read_history(self.history_path)
              if math.isfinite(row.get(self.monitor, math.nan))]
    if values and os.path.exists(self.final_path):
      self.best = min(values)

  def _save_model(self, epoch, batch, logs):
    super()._save_model(epoch, batch, logs)
    if os.path.exists(self.filepath):
      os.replace(self.filepath, self.final_path)


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
