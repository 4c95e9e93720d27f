"""The shared training routine of the AE and the VAE: strategy, callbacks, resume, saving.

`train` is what both trainers call. It takes ready tf.data datasets of uint8 images (the
model does not know where images come from), writes the run dir and returns the history.
"""

import dataclasses
import math
import os
import sys

from absl import logging
import keras
import tensorflow as tf

from modeling import callbacks as callbacks_lib
from modeling import convergence
from modeling import devices
from modeling import flag_choices
from modeling import networks
from modeling import run_dir
from modeling.autoencoder import Autoencoder
from modeling.errors import ModelError
from modeling.vae import VAE

# Train-config fields that may change between runs in the same run dir: training for more
# epochs, or resuming on other hardware, continues the same run.
RESUMABLE_FIELDS = ("epochs", "strategy", "jit_compile", "backup_every_steps", "patience",
                    "min_delta", "min_epochs")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train (the model itself is a config_lib.ModelConfig).

  Attributes:
    epochs: total epochs of the run (a resumed run trains the remaining ones).
    batch_size: global batch size (split across replicas by the strategy).
    learning_rate: Adam's learning rate (the study used 0.0005).
    steps_per_epoch: batches per epoch; None for one pass over the training split.
    validation_steps: validation batches per epoch; None for the whole validation split.
    seed: seeds weight initialization, the VAE's sampling noise and the data order.
    deterministic: enable TensorFlow's deterministic ops (slower; bitwise-repeatable runs).
    jit_compile: compile the train step with XLA.
    mixed_precision: "off" (float32, the default: the same numbers on every CPU, as Flax's
      `half_precision=False`), "auto" (bf16 where the hardware runs it natively, else
      float32; devices.resolve_precision; the tools' default), "bf16" or "fp16" (with
      dynamic loss scaling). `train` records the resolved mode in config.json.
    strategy: "default", "one_device", "mirrored" or "multi_worker_mirrored".
    backup_every_steps: also back up every N batches (None: at epoch ends only).
    patience: stop early once the validation loss has not improved by `min_delta` for this
      many epochs (modeling.convergence), keeping the best epoch's weights; `epochs` is then
      the most epochs to run. None: train all `epochs`.
    min_delta: the relative improvement of the validation loss that counts (0.001: 0.1 %).
    min_epochs: with patience, no early stop before this many epochs.
  """

  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 0.0005
  steps_per_epoch: int | None = None
  validation_steps: int | None = None
  seed: int = 0
  deterministic: bool = False
  jit_compile: bool = False
  mixed_precision: str = "off"
  strategy: str = "default"
  backup_every_steps: int | None = None
  patience: int | None = None
  min_delta: float = 0.0
  min_epochs: int = 1

  def validate(self):
    """Raises ModelError with a one-line message for impossible values."""
    positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                "steps_per_epoch": self.steps_per_epoch,
                "validation_steps": self.validation_steps,
                "backup_every_steps": self.backup_every_steps, "patience": self.patience,
                "min_epochs": self.min_epochs}
    for name, value in positive.items():
      if value is not None and value < 1:
        raise ModelError(f"{name} must be >= 1, got {value}")
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      raise ModelError(f"learning_rate must be a positive number, got {self.learning_rate}")
    if not (math.isfinite(self.min_delta) and 0 <= self.min_delta < 1):
      raise ModelError(f"min_delta must be in [0, 1), got {self.min_delta}")
    if self.mixed_precision not in flag_choices.PRECISIONS:
      raise ModelError(f"mixed_precision must be one of {flag_choices.PRECISIONS}, got "
                       f"{self.mixed_precision!r}")
    if self.strategy not in flag_choices.STRATEGIES:
      raise ModelError(f"strategy must be one of {flag_choices.STRATEGIES}, got {self.strategy!r}")
    return self

  def to_dict(self):
    return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
  """What `train` did: the full history (all epochs of the run), and where it started.

  `convergence` is the early-stopping state after the run (None without patience): whether it
  stopped early, and its best epoch, whose weights the .keras files hold.
  `stopped_by_deadline`: the time budget ended it before its epochs or its early stop.
  """
  history: list
  initial_epoch: int
  epochs: int
  already_complete: bool
  convergence: object = None
  stopped_by_deadline: bool = False


def convergence_of(history, train_config):
  """modeling.convergence.State of history.csv's rows under the config's rule, or None."""
  if train_config.patience is None:
    return None
  return convergence.replay([row.get("val_loss", math.nan) for row in history],
                            train_config.patience, train_config.min_delta,
                            train_config.min_epochs)


def make_run_config(model_config, train_config, extra=None):
  """The dict stored as config.json: {"model": ..., "train": ..., **extra}."""
  run_config = {"model": model_config.to_dict(), "train": train_config.to_dict()}
  run_config.update(extra or {})
  return run_config


def ignored_config_keys():
  """(section, key) pairs of config.json that may differ when a run is resumed."""
  return tuple(("train", name) for name in RESUMABLE_FIELDS)


def build_model(model_config, sampling_seed=None):
  """An uncompiled Autoencoder or VAE for `model_config` (build under strategy.scope())."""
  model_config.validate()
  encoder = networks.build_encoder(model_config)
  decoder = networks.build_decoder(model_config)
  if model_config.kind == "ae":
    return Autoencoder(encoder, decoder, reconstruction=model_config.loss, name="autoencoder")
  return VAE(encoder, decoder, reconstruction=model_config.loss,
             kl_factor=model_config.kl_factor, sampling_seed=sampling_seed, name="vae")


def compiled_model(model_config, train_config):
  """build_model, compiled with Adam as train_config says and built (weights and optimizer).

  Call under the strategy's scope, after devices.set_precision(train_config.mixed_precision)
  (the layers take the global policy when they are made).
  """
  model = build_model(model_config, sampling_seed=train_config.seed)
  optimizer = keras.optimizers.Adam(learning_rate=train_config.learning_rate)
  if train_config.mixed_precision == "fp16":
    # float16 gradients underflow without loss scaling; the optimizer scales dynamically.
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer, jit_compile=train_config.jit_compile)
  model.build((None, model_config.image_size, model_config.image_size, 3))
  # Built now, so that a backup's optimizer state has variables to load into.
  model.optimizer.build(model.trainable_variables)
  return model


def without_autotuning(dataset):
  """`dataset` with tf.data's autotuning off (None stays None), for Keras' fit.

  fit makes new dataset iterators while it trains: a training iterator at every epoch's start
  (and one more after the last batch) and a validation iterator at every epoch's end. With
  autotuning on, tearing an old iterator down waited for the autotuning thread, whose sleep
  grows with the iterator's age: many seconds at the start of some epochs and before some
  validations. With autotuning off there is no wait, and the steps and the stream are as fast
  (the parallel stages use every core; prefetch adapts its buffer on its own). The
  measurements are in docs/benchmarks/README.md; benchmarks/training.py checks every epoch's
  first-step time.
  """
  if dataset is None:
    return None
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.with_options(options)


def _warn_if_incomplete(run, validated):
  """Names every file a finished run dir should hold (WORKSPACE.md) but does not."""
  promised = [run.config, run.history, run.model, run.encoder, run.decoder,
              *([run.best] if validated else [])]
  missing = [os.path.basename(path) for path in promised if not os.path.exists(path)]
  if missing:
    logging.warning("%s is missing %s (deleted, or written by an older version); rerun with "
                    "--overwrite to train it anew if they are needed", run.root,
                    ", ".join(missing))


def _prepare_run(model_config, train_config, model_dir, extra_config):
  """Validates, resolves the precision, claims the run dir, sets precision and seeds.

  Returns:
    (the train config as config.json records it, the run dir's run_dir.paths).
  """
  model_config.validate()
  train_config.validate()
  # config.json records what ran: "auto" resolved for this machine (a resume elsewhere that
  # resolves differently is refused like any other change of precision).
  train_config = dataclasses.replace(
      train_config, mixed_precision=devices.resolve_precision(train_config.mixed_precision)[0])
  run = run_dir.paths(model_dir)
  run_dir.prepare_run_dir(run.root, make_run_config(model_config, train_config, extra_config),
                          ignored=ignored_config_keys())
  devices.set_precision(train_config.mixed_precision)
  devices.set_seed(train_config.seed, train_config.deterministic)
  return train_config, run


def _log_nothing_to_train(run, done, converged, validated):
  _warn_if_incomplete(run, validated)
  logging.info("%s already holds %s; nothing to train%s", run.root,
               f"a run stopped early after epoch {done}" if converged else
               f"all {done} epochs", "" if converged else " (raise --epochs to train further)")


def _agree_on_progress(run, strategy, train_config, multi_worker):
  """(epochs done per the backup, whether the .keras files exist), the chief's on every worker."""
  finished = all(os.path.exists(p) for p in (run.model, run.encoder, run.decoder))
  done = callbacks_lib.Backup.saved_epoch(run.backup)
  if multi_worker:
    # Every worker follows the chief's backup (docs/DISTRIBUTED.md): all of them train, or
    # none; a worker that decided alone would wait forever for the others.
    own = done
    done, chief_finished = (int(v) for v in devices.from_chief(strategy, [done, finished]))
    if done != own:
      logging.warning("this worker's backup is at epoch %d, the chief's at epoch %d: every "
                      "worker resumes from the chief's", own, done)
    if chief_finished and not finished and done >= train_config.epochs:
      logging.warning("the chief's run is complete but %s is not; copy the chief's .keras "
                      "files there if this worker's copy is needed", run.root)
    finished = bool(chief_finished)
  return done, finished


def _restore(model, backup, strategy, multi_worker, run):
  """Loads the last backup into `model` (the chief's, on every worker); its epoch (0: none)."""
  # Outside the scope: Keras' loading makes throwaway variables, which under the multi-worker
  # scope would be collective broadcasts that only the chief runs.
  follower = multi_worker and not devices.cluster_task().is_chief
  if follower:
    initial_epoch = 0  # This worker's own backup is not read: the chief's state arrives below.
  else:
    initial_epoch = backup.restore(model)
  if multi_worker:
    # The epoch the chief actually restored (its previous pair, if the current one was torn),
    # then its weights, optimizer and sampling state, to every worker.
    initial_epoch = int(devices.from_chief(strategy, [initial_epoch])[0])
    if initial_epoch:
      devices.copy_variables_from_chief(strategy, model.variables + model.optimizer.variables)
  backup.restored_epoch = initial_epoch
  if initial_epoch:
    logging.info("%s: resuming from %s last backup, after epoch %d", run.root,
                 "the chief's" if follower else "its", initial_epoch)
  return initial_epoch


def _make_callbacks(run, model_config, train_config, backup, validated, preview_images,
                    deadline, callbacks):
  """The run's Keras callbacks in their order, and the StopAtDeadline among them (or None)."""
  # Order matters: StopOnNaN first, so a diverged step raises before any callback saves its
  # weights; CSVLogger before Backup, so a crash between the two leaves a row that the next
  # resume trims (a duplicate) rather than a missing row;
  # BestModelCheckpoint before Backup, so that an epoch whose best.keras failed (a full disk)
  # is not backed up and runs again.
  all_callbacks = [
      callbacks_lib.StopOnNaN(),
      keras.callbacks.CSVLogger(run.history, append=True),
      *([callbacks_lib.BestModelCheckpoint(run.best, run.history, backup)]
        if validated else []),
      backup,
  ]
  if train_config.patience is not None:
    all_callbacks.append(callbacks_lib.EarlyStoppingFromHistory(
        run.history, train_config.patience, train_config.min_delta, train_config.min_epochs))
  budget = None if deadline is None else callbacks_lib.StopAtDeadline(deadline)
  if budget is not None:
    all_callbacks.append(budget)
  all_callbacks.append(keras.callbacks.TensorBoard(run.tensorboard, write_graph=False,
                                                   profile_batch=0))
  if preview_images is not None and len(preview_images):
    all_callbacks.append(callbacks_lib.ImageGridCallback(
        os.path.join(run.tensorboard, "images"), preview_images,
        num_samples=len(preview_images) if model_config.kind == "vae" else 0,
        seed=train_config.seed))
  all_callbacks.extend(callbacks)
  return all_callbacks, budget


def _fit(model, train_ds, val_ds, train_config, run, epochs, initial_epoch, all_callbacks,
         verbose):
  """model.fit; a diverged run becomes a one-line ModelError naming its backup."""
  try:
    model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=train_config.steps_per_epoch, validation_data=val_ds,
              validation_steps=train_config.validation_steps,
              callbacks=all_callbacks, shuffle=False, verbose=verbose)
  except BaseException as error:
    if verbose:
      # Keras' progress bar leaves its line open: end it, or the tool's one-line error (or
      # the traceback) would be glued to the end of the bar in a terminal.
      sys.stdout.write("\n")
      sys.stdout.flush()
    if not isinstance(error, callbacks_lib.TrainingDiverged):
      raise
    # 1-based epoch and step, as Keras' progress bar shows them.
    raise ModelError(
        f"training diverged at epoch {error.epoch + 1} step {error.step + 1} "
        f"(loss={error.loss}); the last good state is in {run.backup}; lower --learning_rate "
        f"(now {train_config.learning_rate}) and rerun with --overwrite") from None


def _save_models(model, run, train_config):
  """Writes model.keras, encoder.keras and decoder.keras (the best epoch's, with patience)."""
  if train_config.patience is not None and os.path.exists(run.best):
    # Early stopping keeps the best epoch: the .keras files get best.keras' weights.
    model.load_weights(run.best)
  for part, path in ((model, run.model), (model.encoder, run.encoder),
                     (model.decoder, run.decoder)):
    callbacks_lib.save_atomic(path, part.save, callbacks_lib.saved_bytes(part))
  logging.info("saved %s, %s and %s", run.model, run.encoder, run.decoder)


def train(model_config, train_config, train_ds, val_ds, model_dir, preview_images=None, *,
          extra_config=None, callbacks=(), verbose="auto", deadline=None):
  """Trains (or resumes) a run and saves model.keras, encoder.keras and decoder.keras.

  Args:
    model_config: config_lib.ModelConfig.
    train_config: TrainConfig.
    train_ds: tf.data.Dataset of uint8 [B,S,S,3] batches (global batch size); it must repeat
      when train_config.steps_per_epoch is set.
    val_ds: validation dataset of the same kind, or None to skip validation.
    model_dir: the run dir. A dir holding the same config resumes from its backup/; a
      different config raises ModelError (see run_dir.prepare_run_dir).
    preview_images: optional uint8 [N,S,S,3] images whose reconstructions (and, for the VAE,
      N samples from N(0, I)) go to TensorBoard each epoch.
    extra_config: more sections for config.json (e.g. the data settings); part of the run's
      identity.
    callbacks: more Keras callbacks, run after the built-in ones.
    verbose: Keras' fit verbosity.
    deadline: time.time() after which no epoch starts (the run's time budget), or None. A run
      it stops is saved like a finished one; rerunning it trains on.

  Returns:
    TrainResult.

  Raises:
    ModelError: a config problem, a foreign run dir, or divergence (NaN/Inf loss; the last
      good state stays in backup/ and the .keras files are not written).
  """
  train_config, run = _prepare_run(model_config, train_config, model_dir, extra_config)
  strategy = devices.make_strategy(train_config.strategy)
  multi_worker = devices.is_multi_worker(strategy)
  done, finished = _agree_on_progress(run, strategy, train_config, multi_worker)
  if train_config.patience is not None and val_ds is None:
    raise ModelError("early stopping (patience) needs a validation split")
  history = run_dir.read_history(run.history)
  state = convergence_of([row for row in history if row["epoch"] < done], train_config)
  converged = state is not None and state.converged
  if finished and (done >= train_config.epochs or converged):
    _log_nothing_to_train(run, done, converged, val_ds is not None)
    return TrainResult(history, done, train_config.epochs, True, state)

  train_ds, val_ds = without_autotuning(train_ds), without_autotuning(val_ds)
  if multi_worker:
    # Equal epochs on every worker, and a one-file validation split works (see there).
    train_ds, val_ds = devices.shard_by_data(train_ds), devices.shard_by_data(val_ds)
  backup = callbacks_lib.Backup(run.backup, run.history,
                                save_freq=train_config.backup_every_steps or "epoch")
  with strategy.scope():
    model = compiled_model(model_config, train_config)
  initial_epoch = _restore(model, backup, strategy, multi_worker, run)
  all_callbacks, budget = _make_callbacks(run, model_config, train_config, backup,
                                          val_ds is not None, preview_images, deadline, callbacks)
  logging.info("training %s: %d parameters, epochs %d, global batch %d, run dir %s",
               model_config.kind.upper(), model.count_params(), train_config.epochs,
               train_config.batch_size, run.root)
  # A run that stopped early but was killed before its .keras files runs no more epochs.
  _fit(model, train_ds, val_ds, train_config, run,
       initial_epoch if converged else train_config.epochs, initial_epoch, all_callbacks, verbose)
  history = run_dir.read_history(run.history)
  _save_models(model, run, train_config)
  _warn_if_incomplete(run, val_ds is not None)
  state = convergence_of(history, train_config)
  return TrainResult(history, backup.restored_epoch, train_config.epochs, False, state,
                     stopped_by_deadline=bool(budget and budget.stopped_epoch is not None
                                              and not (state and state.converged)))
