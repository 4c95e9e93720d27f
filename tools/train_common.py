"""The shared main body of tools.train_ae and tools.train_vae.

Resolves the model config from --preset and the override flags, checks it against the data
dir, builds the datasets, prepares the run dir (refusing a different run unless --overwrite),
records flags.txt and manifest.json and calls modeling.training.train. Imported inside the
trainers' main(), so TensorFlow loads only once the flags are known to be good. The run dir is
locked throughout; training runs inside data_pipeline.reader.reading, so a damaged record stops
it with one line naming the shard and record (or, with --skip_corrupt, is skipped and counted).
"""

import os
import time
import warnings

import tensorflow as tf
from absl import flags
from absl import logging

from data_pipeline import locking
from data_pipeline import make_dataset
from data_pipeline import provenance
from data_pipeline import reader
from data_pipeline import service
from data_pipeline.manifest import MANIFEST, read_manifest
from modeling import callbacks
from modeling import devices
from modeling import run_dir
from modeling import training
from modeling.errors import ModelError
from tools import _cli
from tools import flags_train

FLAGS = flags.FLAGS


def _model_config(kind, manifest):
  """The resolved ModelConfig at the data's image size; FlagError when the flags clash."""
  data_size = int(manifest["image_size"])
  if FLAGS.image_size is not None and FLAGS.image_size != data_size:
    raise _cli.FlagError(f"--image_size {FLAGS.image_size} does not match --data_dir "
                         f"{FLAGS.data_dir}, which holds {data_size}x{data_size} images; drop "
                         "--image_size or prepare data of that size")
  try:
    return flags_train.resolve_model_config(flags_train.model_flag_values(kind), kind,
                                            image_size=data_size)
  except ModelError as error:
    raise _cli.FlagError(f"{error} (--data_dir holds {data_size}x{data_size} images)") from None


def _train_config():
  """The TrainConfig of the flags, with --mixed_precision auto resolved for this machine."""
  return training.TrainConfig(
      epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
      steps_per_epoch=FLAGS.steps_per_epoch, validation_steps=FLAGS.validation_steps,
      seed=FLAGS.seed, deterministic=FLAGS.deterministic, jit_compile=FLAGS.jit_compile,
      mixed_precision=devices.resolve_precision(FLAGS.mixed_precision)[0],
      strategy=FLAGS.strategy, backup_every_steps=FLAGS.backup_every_steps,
      patience=FLAGS.patience, min_delta=FLAGS.min_delta,
      min_epochs=FLAGS.min_epochs).validate()


def _check_sizes(manifest):
  """Enough training images for one batch (training drops the last partial batch)."""
  available = manifest["splits"].get("train", {}).get("num_examples", 0)
  used = min(available, FLAGS.max_images or available)
  if used < FLAGS.batch_size:
    raise _cli.FlagError(f"--batch_size {FLAGS.batch_size} is larger than the {used} training "
                         f"images used from {FLAGS.data_dir}; lower --batch_size")
  return used


def _reading():
  """reader.reading for --data_dir: a damaged record fails with its shard and index named."""
  return reader.reading(FLAGS.data_dir, alternative="add --skip_corrupt to train on the "
                        "records that can be read")


def _preview_images(manifest):
  """The first --preview_images images of the test split (else validation), or None."""
  if not FLAGS.preview_images:
    return None
  split = "test" if manifest["splits"].get("test", {}).get("num_examples") else "validation"
  batch = make_dataset(FLAGS.data_dir, split, FLAGS.preview_images, shuffle=False,
                       skip_corrupt=FLAGS.skip_corrupt).take(1)
  with _reading():
    return next(iter(batch)).numpy()


def _datasets(manifest, used, skip_corrupt):
  """(train, validation) datasets; DataError when a shard file disagrees with the manifest."""
  repeat = FLAGS.steps_per_epoch is not None
  # The service's workers open the shard files by the paths in the dataset graph: absolute
  # ones, so that a worker started in another directory finds them too.
  data_dir = os.path.abspath(FLAGS.data_dir) if FLAGS.data_service else FLAGS.data_dir
  # In "off" mode every service worker runs this same pipeline: seeded, they would all send
  # the same batches in the same order.
  seed = None if FLAGS.data_service and FLAGS.data_service_mode == "off" else FLAGS.seed
  train_ds = make_dataset(data_dir, "train", FLAGS.batch_size, shuffle=True,
                          seed=seed, deterministic=FLAGS.deterministic or None,
                          repeat=repeat, drop_remainder=True, max_images=FLAGS.max_images,
                          shuffle_buffer=FLAGS.shuffle_buffer, skip_corrupt=skip_corrupt)
  val_ds = make_dataset(data_dir, "validation", FLAGS.batch_size, shuffle=False,
                        skip_corrupt=skip_corrupt)
  if FLAGS.data_service:
    # The service's workers read, decode and batch. Epoch lengths stay unknown: each worker
    # drops its own last partial batch, and "off" mode sends one copy per worker. Keras finds
    # the end of the first epoch by running out of data, and its warning about that is moot.
    warnings.filterwarnings("ignore", message="Your input ran out of data",
                            category=UserWarning)
    return tuple(service.from_service(ds, FLAGS.data_service, FLAGS.data_service_mode)
                 for ds in (train_ds, val_ds))
  # Known epoch lengths give Keras a real progress bar and spare it the extra step that
  # discovers the end of the data (with a "ran out of data" warning). Not with skip_corrupt:
  # records lost to damage shorten the epoch, and a stated length would fail on that.
  if skip_corrupt:
    # Keras then finds the end of the first epoch by running out of data, and warns that it
    # did, advising .repeat(): expected here, and the loss is logged by the reader instead.
    warnings.filterwarnings("ignore", message="Your input ran out of data",
                            category=UserWarning)
  else:
    if not repeat:
      train_ds = train_ds.apply(
          tf.data.experimental.assert_cardinality(used // FLAGS.batch_size))
    num_val = manifest["splits"]["validation"]["num_examples"]
    val_ds = val_ds.apply(
        tf.data.experimental.assert_cardinality(-(-num_val // FLAGS.batch_size)))
  return train_ds, val_ds


def run_training(kind):
  """Trains a `kind` ("ae" or "vae") model as the flags say; the trainers' main()."""
  # Locked before anything there is written or deleted (--overwrite deletes a run) and until
  # the end, so that a second trainer on this run dir is refused instead of mixing its epochs
  # into the history. In a multi-worker cluster every worker writes a run dir of its own
  # (docs/DISTRIBUTED.md) and locks that one.
  deadline = (None if FLAGS.time_budget_minutes is None
              else time.time() + 60.0 * FLAGS.time_budget_minutes)
  with locking.output_dir(FLAGS.model_dir, f"train_{kind}", "--model_dir"):
    _run_training_locked(kind, deadline)


def _run_training_locked(kind, deadline):
  """run_training with --model_dir locked; no epoch starts after `deadline` (or None)."""
  # Devices first: TensorFlow fixes its device set-up at the first tensor it creates.
  devices.configure_devices(memory_growth=FLAGS.gpu_memory_growth,
                            gpu_memory_limit_mb=FLAGS.gpu_memory_limit_mb,
                            cpu_replicas=FLAGS.cpu_replicas)
  if FLAGS.strategy == "multi_worker_mirrored":
    # Joins the cluster now: TensorFlow configures collective ops only before its first
    # tensor, and the datasets below make tensors. training.train gets this same strategy.
    devices.make_strategy(FLAGS.strategy)
  manifest = read_manifest(FLAGS.data_dir)
  model_config = _model_config(kind, manifest)
  train_config = _train_config()
  used = _check_sizes(manifest)
  # Before the run dir is touched: a data dir that disagrees with its manifest is refused
  # without leaving a new run dir behind.
  skip_corrupt = FLAGS.skip_corrupt
  train_ds, val_ds = _datasets(manifest, used, skip_corrupt)
  preview_images = _preview_images(manifest)

  manifest_path = os.path.join(os.path.abspath(FLAGS.data_dir), MANIFEST)
  manifest_sha256 = provenance.sha256_file(manifest_path)
  data_section = {"manifest_sha256": manifest_sha256, "max_images": FLAGS.max_images,
                  "shuffle_buffer": FLAGS.shuffle_buffer}
  extra_config = {"data": data_section}
  run = run_dir.paths(FLAGS.model_dir)
  resuming = run_dir.prepare_run_dir(
      run.root, training.make_run_config(model_config, train_config, extra_config),
      overwrite=FLAGS.overwrite, ignored=training.ignored_config_keys())
  _cli.write_flagfile(run.flags)
  record = provenance.describe_run(FLAGS.seed, {manifest_path: manifest_sha256})
  resolved, reason = devices.resolve_precision(FLAGS.mixed_precision)
  record.update(mixed_precision={"requested": FLAGS.mixed_precision, "resolved": resolved,
                                 "reason": reason})
  record.update(data_dir=os.path.abspath(FLAGS.data_dir), kind=kind, resumed=resuming,
                training_images=used, skip_corrupt=skip_corrupt,
                data_service=FLAGS.data_service,
                data_service_mode=FLAGS.data_service_mode if FLAGS.data_service else None)
  provenance.atomic_write_json(run.manifest, record)
  if resuming:
    # Which epoch the run resumes after is known only once its backup is loaded (in a
    # multi-worker run, the chief's): modeling.training logs it then.
    logging.info("%s holds this run already", run.root)
    # A history damaged some other way (a second trainer before the lock, a full disk) is
    # repaired to the backup's epochs rather than stopping the run.
    callbacks.Backup.repair_history(run.backup, run.history)

  with _reading():
    result = training.train(model_config, train_config, train_ds, val_ds, run.root,
                            preview_images=preview_images, extra_config=extra_config,
                            deadline=deadline)
  if result.stopped_by_deadline:
    logging.info("stopped by --time_budget_minutes after %d of %d epochs; rerun to train on",
                 len(result.history), train_config.epochs)
  if result.history:
    last = result.history[-1]
    summary = ", ".join(f"{k} {v:.4g}" for k, v in sorted(last.items()) if k != "epoch")
    logging.info("epoch %d of %d: %s", last["epoch"] + 1, train_config.epochs, summary)
  if result.convergence is not None:
    logging.info("%s: %s", "converged" if result.convergence.converged else "not converged",
                 f"stopped early after epoch {result.convergence.stopped_epoch + 1}"
                 if result.convergence.converged else
                 f"still improving after {len(result.history)} epochs (raise --epochs)")
  logging.info("run dir: %s", run.root)
