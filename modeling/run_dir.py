"""The run dir: its file names, the config identity check, history.csv, and `load_run`.

A run dir holds one training run; rerunning the same command resumes it, and a different
config is refused so that no earlier run is silently overwritten.
"""

import csv
import dataclasses
import functools
import os
import shutil

from absl import logging

from modeling import config as config_lib
from modeling.errors import ModelError

CONFIG = "config.json"
FLAGS = "flags.txt"
MANIFEST = "manifest.json"
MODEL = "model.keras"
ENCODER = "encoder.keras"
DECODER = "decoder.keras"
BEST = "best.keras"
HISTORY = "history.csv"
TENSORBOARD = "tensorboard"
BACKUP = "backup"

# Everything a trainer writes; --overwrite removes exactly these and nothing else.
RUN_FILES = (CONFIG, FLAGS, MANIFEST, MODEL, ENCODER, DECODER, BEST, HISTORY)
RUN_DIRS = (TENSORBOARD, BACKUP)
# The trainer's lock on the run dir (data_pipeline.locking.OUTPUT_LOCK_FILE, which modeling may
# not import): present while a trainer runs, or left by a killed one; never part of the run.
LOCK = ".lock"
# Where a history.csv that cannot be repaired is moved, so that the run can go on.
DAMAGED_SUFFIX = ".damaged"


@dataclasses.dataclass(frozen=True)
class RunPaths:
  """Absolute paths of a run dir's files."""
  root: str
  config: str
  flags: str
  manifest: str
  model: str
  encoder: str
  decoder: str
  best: str
  history: str
  tensorboard: str
  backup: str


def paths(model_dir):
  root = os.path.abspath(model_dir)
  join = functools.partial(os.path.join, root)
  return RunPaths(root=root, config=join(CONFIG), flags=join(FLAGS), manifest=join(MANIFEST),
                  model=join(MODEL), encoder=join(ENCODER), decoder=join(DECODER),
                  best=join(BEST), history=join(HISTORY), tensorboard=join(TENSORBOARD),
                  backup=join(BACKUP))


def _without(run_config, ignored):
  """A deep copy of run_config without the (section, key) pairs in `ignored`."""
  out = {k: dict(v) if isinstance(v, dict) else v for k, v in run_config.items()}
  for section, key in ignored:
    if isinstance(out.get(section), dict):
      out[section].pop(key, None)
  return out


def _differences(old, new):
  """'section.key: old -> new' for every differing leaf (sections are one level deep)."""
  lines = []
  for section in sorted(set(old) | set(new)):
    a, b = old.get(section), new.get(section)
    if isinstance(a, dict) and isinstance(b, dict):
      for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
          lines.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    elif a != b:
      lines.append(f"{section}: {a!r} -> {b!r}")
  return lines


def prepare_run_dir(model_dir, run_config, overwrite=False, ignored=()):
  """Creates or reuses a run dir for `run_config` and writes config.json.

  Args:
    model_dir: the run dir; created when missing.
    run_config: JSON-able dict with at least a "model" section.
    overwrite: replace a run with a different config (its run files are deleted).
    ignored: (section, key) pairs that may differ from the stored run, e.g. ("train",
      "epochs"), so that a finished run can be trained for more epochs.

  Returns:
    True when the dir already held this run (training resumes), False for a new run.

  Raises:
    ModelError: the dir holds a run with a different config (and not `overwrite`), or it
      is a non-empty dir that is not a run dir.
  """
  run = paths(model_dir)
  if os.path.exists(run.root) and not os.path.isdir(run.root):
    raise ModelError(f"{run.root} exists and is not a directory; choose another --model_dir")
  resuming = False
  if os.path.exists(run.config):
    stored = config_lib.load_config(run.config)
    differences = _differences(_without(stored, ignored), _without(run_config, ignored))
    if not differences:
      resuming = True
    elif not overwrite:
      shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
      raise ModelError(f"{run.root} holds a run with a different config ({shown}); use a new "
                       "--model_dir, or --overwrite to replace that run")
    else:
      _remove_run_files(run)
  elif os.path.isdir(run.root) and set(os.listdir(run.root)) - {LOCK}:
    # A run killed before writing config.json leaves run files (and .tmp- files of
    # interrupted atomic writes); anything else means the user pointed at a foreign dir.
    known = set(RUN_FILES) | set(RUN_DIRS) | {LOCK}
    ours = all(n in known or n.startswith(".tmp-") for n in os.listdir(run.root))
    if not overwrite or not ours:
      raise ModelError(f"{run.root} is not empty and has no {CONFIG}, so it is not a run dir; "
                       "choose a new or empty --model_dir")
    _remove_run_files(run)
  os.makedirs(run.root, exist_ok=True)
  config_lib.save_config(run.config, run_config)
  return resuming


def _remove_run_files(run):
  for name in os.listdir(run.root):
    if name in RUN_FILES or name.startswith(".tmp-"):
      os.remove(os.path.join(run.root, name))
  for name in RUN_DIRS:
    shutil.rmtree(os.path.join(run.root, name), ignore_errors=True)


# Keras' CSVLogger writes "NA" for a metric an epoch did not log (e.g. val_* without a
# validation set).
_MISSING = ("NA", "")


def _history_value(key, value):
  if key == "epoch":
    return int(value)
  return float("nan") if value in _MISSING else float(value)


@dataclasses.dataclass
class _History:
  """history.csv as parsed leniently: what can be kept, and what could not."""
  header: bytes | None = None  # The first header line, as written (line ending included).
  names: list | None = None
  rows: dict = dataclasses.field(default_factory=dict)  # epoch -> (line, values); last wins.
  problems: list = dataclasses.field(default_factory=list)


def _parse_history(data):
  """Parses history.csv's bytes; damage becomes `problems`, never an exception.

  Damage seen in practice: a second header line and every epoch twice (two trainers appending
  to one run dir), a truncated last line (a kill or a full disk mid-write), rows of more or
  fewer fields or non-numbers (an edited or otherwise damaged file). The last row of an epoch
  wins: it is the latest one written, the one the latest backup goes with.
  """
  history = _History()
  lines = data.splitlines(keepends=True)
  if lines and not lines[-1].endswith((b"\n", b"\r")):
    lines.pop()  # CSVLogger ends every row with a newline: this one was cut short.
    history.problems.append("a truncated last line")
  for number, line in enumerate(lines, 1):
    try:
      (fields,) = csv.reader([line.decode("utf-8")])
    except (UnicodeDecodeError, ValueError, csv.Error):
      history.problems.append(f"line {number} is not text")
      continue
    if not fields:
      continue  # A blank line, as csv.DictReader skips it.
    if fields[0] == "epoch":
      if history.header is None:
        history.header, history.names = line, fields
      else:
        history.problems.append(f"line {number} repeats the header")
      continue
    if history.names is None or len(fields) != len(history.names):
      history.problems.append(f"line {number} does not match the header")
      continue
    try:
      values = {k: _history_value(k, v) for k, v in zip(history.names, fields)}
    except ValueError:
      history.problems.append(f"line {number} holds a non-number")
      continue
    if values["epoch"] < 0:
      history.problems.append(f"line {number} has a negative epoch")
      continue
    if values["epoch"] in history.rows:
      history.problems.append(f"epoch {values['epoch']} appears twice")
    history.rows[values["epoch"]] = (line, values)
  return history


def _read_bytes(path):
  with open(path, "rb") as f:
    return f.read()


def read_history(path):
  """Rows of history.csv as dicts of floats ("epoch" an int, 0-based; NA is NaN); [] if none.

  A damaged file is read leniently (one row per epoch, in epoch order; repeated headers and
  malformed or cut-off lines are skipped, with a warning); `repair_history` fixes the file.

  Raises:
    ModelError: the file has no header line at all, so its rows cannot be read.
  """
  if not os.path.exists(path):
    return []
  data = _read_bytes(path)
  history = _parse_history(data)
  if history.header is None and data.strip():
    raise ModelError(f"{path} is not a training history (no 'epoch,...' header line); rerun "
                     f"the training command: it moves the file aside as {HISTORY}"
                     f"{DAMAGED_SUFFIX} and starts the history afresh")
  if history.problems:
    logging.warning("%s is damaged (%s); read one row per epoch", path,
                    "; ".join(history.problems[:3]))
  return [history.rows[epoch][1] for epoch in sorted(history.rows)]


def repair_history(path, epoch=None):
  """Makes history.csv whole in place: one header, one row per epoch below `epoch`, in order.

  Rows of epochs >= `epoch` (0-based; None keeps every epoch) go: a resumed run trains those
  epochs again. Repeated headers, duplicate rows and malformed or cut-off lines go too (see
  `_parse_history`), with a warning. A file without any header line cannot be rebuilt: it is
  moved aside (copied to history.csv.damaged, or .damaged.N when taken, and emptied), with a
  warning, and the history starts afresh.

  In place (rewrite and truncate) rather than rewrite-and-rename: Keras' CSVLogger may
  already hold the file open in append mode, and must keep appending to this same file.

  Returns:
    What was wrong, as short phrases ([] for a whole file).
  """
  if not os.path.exists(path):
    return []
  data = _read_bytes(path)
  history = _parse_history(data)
  if history.header is None:
    if not data.strip():
      return []
    aside = _free_name(path + DAMAGED_SUFFIX)
    with open(aside, "xb") as f:
      f.write(data)
    os.truncate(path, 0)
    logging.warning("%s has no header line and cannot be repaired: moved it to %s and started "
                    "the history afresh", path, aside)
    return history.problems + ["no header line"]
  kept = [history.rows[e][0] for e in sorted(history.rows) if epoch is None or e < epoch]
  repaired = history.header + b"".join(kept)
  if repaired != data:
    # Same bytes first, then a shorter end: a kill in between leaves a file this repairs.
    with open(path, "r+b") as f:
      f.write(repaired)
      f.truncate()
  if history.problems:
    logging.warning("%s was damaged (%s); repaired it to one row per epoch, kept %d row(s)", path,
                    "; ".join(history.problems[:3]), len(kept))
  return history.problems


def trim_history(path, epoch):
  """Drops the rows of history.csv for epochs >= `epoch` (0-based), in place, repairing it."""
  return repair_history(path, epoch)


def _free_name(path):
  candidate, n = path, 0
  while os.path.exists(candidate):
    n += 1
    candidate = f"{path}.{n}"
  return candidate


@dataclasses.dataclass(frozen=True)
class LoadedRun:
  """A trained run: its model config, the full model, and its encoder and decoder parts."""
  config: config_lib.ModelConfig
  model: object
  encoder: object
  decoder: object
  run_config: dict
  model_dir: str


def load_run(model_dir, checkpoint="final"):
  """Loads a finished run (safe mode) for evaluation.

  Args:
    model_dir: a run dir written by tools.train_ae / tools.train_vae.
    checkpoint: "final" (model.keras, after the last epoch; with early stopping, the best
      epoch's weights) or "best" (best.keras, the lowest validation loss).

  Returns:
    LoadedRun with the ModelConfig and the models; `encoder` maps uint8 images to z (AE) or
    [z_mean, z_log_var] (VAE); prefer `model.encode(images)` for z-points of either kind.

  Raises:
    ModelError: the dir, its config.json or the model file is missing or unreadable.
  """
  # Local: the z-points report and the report builders read run dirs without TensorFlow.
  import keras  # pylint: disable=g-import-not-at-top
  # Registers Autoencoder, VAE and Sampling so that safe-mode loading finds them.
  from modeling import autoencoder, vae  # pylint: disable=g-import-not-at-top,unused-import

  run = paths(model_dir)
  if not os.path.isdir(run.root):
    raise ModelError(f"--model_dir {run.root} does not exist; train a model there first")
  run_config = config_lib.load_config(run.config)
  model_config = config_lib.model_config_from_run(run_config, run.config)
  path = checkpoint_path(run.root, checkpoint)
  if not os.path.exists(path):
    raise ModelError(f"{path} does not exist; the training run has not finished (rerun the "
                     "same training command to complete it)")
  try:
    model = keras.saving.load_model(path, safe_mode=True)
  except Exception as error:  # pylint: disable=broad-except
    # Keras raises many types for damaged zips and configs; one line is what the user needs.
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
    raise ModelError(f"{path} cannot be loaded ({first_line}); the file is damaged, retrain "
                     "or restore it") from None
  return LoadedRun(config=model_config, model=model, encoder=model.encoder,
                   decoder=model.decoder, run_config=run_config, model_dir=run.root)


def checkpoint_path(model_dir, checkpoint="final"):
  """The absolute path of the model file that `load_run(model_dir, checkpoint)` loads.

  Args:
    model_dir: a run dir.
    checkpoint: "final" (model.keras) or "best" (best.keras); modeling.flag_choices.CHECKPOINTS.

  Raises:
    ModelError: another checkpoint name.
  """
  run = paths(model_dir)
  files = {"final": run.model, "best": run.best}
  if checkpoint not in files:
    raise ModelError(f"checkpoint must be 'final' or 'best', got {checkpoint!r}")
  return files[checkpoint]
