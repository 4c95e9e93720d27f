"""The training routine: run dir, resume, divergence, history, saving and loading.

In-process with tiny in-memory datasets (16x16 images, a few dozen of them); two checks need a
fresh process (loading in a new process, two logical CPU replicas) and use one subprocess each.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling import callbacks as callbacks_lib
from modeling import config as config_lib
from modeling import convergence
from modeling import flag_choices
from modeling import losses
from modeling import run_dir
from modeling import training
from modeling.errors import ModelError
from tests.toolrun import REPO_ROOT

TINY = dict(image_size=16, z_dim=4, encoder_filters=[4, 8], encoder_kernels=[3], strides=[2])
BATCH = 8


def _colour_images(n=32, size=16, seed=0):
  """Two-colour images (left/right halves): structured, so a tiny model can learn them."""
  rng = np.random.default_rng(seed)
  images = np.empty((n, size, size, 3), np.uint8)
  images[:, :, : size // 2] = rng.integers(0, 256, (n, 1, 1, 3))
  images[:, :, size // 2:] = rng.integers(0, 256, (n, 1, 1, 3))
  return images


def _dataset(images, batch=BATCH):
  return tf.data.Dataset.from_tensor_slices(images).batch(batch, drop_remainder=True)


def _train(model_dir, kind="vae", epochs=2, callbacks=(), loss="bce", **train_kwargs):
  model_config = config_lib.resolve_config("vae_fact5" if kind == "vae" else "ae_z256",
                                           dict(TINY, encoder_kernels=[3, 3], strides=[2, 2],
                                                loss=loss))
  train_config = training.TrainConfig(**{"epochs": epochs, "batch_size": BATCH, "seed": 1,
                                         **train_kwargs})
  images = _colour_images()
  return training.train(model_config, train_config, _dataset(images), _dataset(images[:16]),
                        str(model_dir), preview_images=images[:4], callbacks=callbacks,
                        verbose=0)


class _Interrupt(keras.callbacks.Callback):
  """Simulates a kill: raises after `step` (0-based) of epoch `epoch`."""

  def __init__(self, epoch, step):
    super().__init__()
    self.epoch, self.step, self._current = epoch, step, None

  def on_epoch_begin(self, epoch, logs=None):
    self._current = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self._current == self.epoch and batch == self.step:
      raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def _float32_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


def test_vae_run_writes_the_run_dir_and_logs_the_kl_share(tmp_path):
  result = _train(tmp_path / "run", epochs=2)
  run = run_dir.paths(tmp_path / "run")
  for path in (run.config, run.model, run.encoder, run.decoder, run.best, run.history):
    assert os.path.isfile(path), path
  assert os.listdir(os.path.join(run.tensorboard, "images"))
  assert [row["epoch"] for row in result.history] == [0, 1]
  for row in result.history:
    for prefix in ("", "val_"):
      assert 0 < row[f"{prefix}kl_share"] < 1
  # The last validation, against NumPy on the saved model (the weights that validation used).
  # Its KL needs no sampling noise: the closed form on the encoder's outputs.
  images = _colour_images()[:16]
  z_mean, z_log_var = run_dir.load_run(str(tmp_path / "run")).model.encode_with_log_var(images)
  mu, log_var = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
  kl = np.mean(0.5 * np.sum(np.exp(log_var) + mu ** 2 - 1 - log_var, axis=-1))
  last = result.history[-1]
  assert last["val_kl_loss"] == pytest.approx(kl, rel=1e-4)
  assert last["val_reconstruction_loss"] == pytest.approx(last["val_loss"] - 5.0 * kl, rel=1e-4)
  assert last["val_kl_share"] == pytest.approx(5.0 * kl / last["val_loss"], rel=1e-4)
  # A BCE never goes below the images' own entropy.
  assert last["val_reconstruction_loss"] > np.mean(losses.bce_floor(images))
  stored = json.load(open(run.config, encoding="utf-8"))
  assert stored["model"]["kind"] == "vae" and stored["train"]["epochs"] == 2


def test_loss_falls_over_a_few_epochs(tmp_path):
  # MSE, whose minimum is 0: BCE's floor (the images' own entropy) hides the progress.
  result = _train(tmp_path / "run", kind="ae", epochs=6, learning_rate=0.01, loss="mse")
  losses = [row["loss"] for row in result.history]
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 0.9 * losses[0], losses
  assert set(result.history[0]) == {"epoch", "loss", "reconstruction_loss", "val_loss",
                                    "val_reconstruction_loss"}


@pytest.mark.slow
def test_resume_continues_at_the_interrupted_epoch_with_the_same_result(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path / "resumed", epochs=3, callbacks=[_Interrupt(epoch=1, step=2)])
  assert callbacks_lib.Backup.saved_epoch(str(tmp_path / "resumed" / "backup")) == 1
  resumed = _train(tmp_path / "resumed", epochs=3)
  assert resumed.initial_epoch == 1
  assert [row["epoch"] for row in resumed.history] == [0, 1, 2]
  # Weights, Adam's state and the sampling noise all come back: the same numbers as a run
  # that was never interrupted.
  straight = _train(tmp_path / "straight", epochs=3)
  for got, want in zip(resumed.history, straight.history):
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_step_backups_resume_at_the_right_epoch_twice(tmp_path):
  # backup every 2 steps; 4 steps per epoch. The first interruption leaves a mid-epoch backup
  # of epoch 1; the second happens in the resumed epoch 1 after another step backup, which
  # must still say epoch 1 (stock Keras would write 0 there).
  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path / "run", epochs=3, backup_every_steps=2, callbacks=[_Interrupt(1, 2)])
  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path / "run", epochs=3, backup_every_steps=2, callbacks=[_Interrupt(1, 2)])
  assert callbacks_lib.Backup.saved_epoch(str(tmp_path / "run" / "backup")) == 1
  result = _train(tmp_path / "run", epochs=3, backup_every_steps=2)
  assert result.initial_epoch == 1
  assert [row["epoch"] for row in result.history] == [0, 1, 2]


@pytest.mark.slow
def test_finished_run_is_kept_and_more_epochs_continue_it(tmp_path):
  _train(tmp_path / "run", kind="ae", epochs=1)
  run = run_dir.paths(tmp_path / "run")
  mtime = os.path.getmtime(run.model)
  again = _train(tmp_path / "run", kind="ae", epochs=1)
  assert again.already_complete and os.path.getmtime(run.model) == mtime
  more = _train(tmp_path / "run", kind="ae", epochs=2)
  assert not more.already_complete and more.initial_epoch == 1
  assert [row["epoch"] for row in more.history] == [0, 1]


def test_convergence_replays_keras_early_stopping_with_a_relative_min_delta():
  replay = convergence.replay
  assert replay([], 2) == convergence.State(None, -1, 0, None)
  # 1 % of the best: 99.5 is no improvement on 100, 98 is; two epochs without one stop.
  assert replay([100, 99.5, 98, 97.5, 97.9], 2, 0.01) == convergence.State(98, 2, 2, 4)
  assert replay([100, 99.5, 98, 97.5], 2, 0.01).stopped_epoch is None
  assert replay([100, 99.5, 98, 97.5], 2).stopped_epoch is None  # min_delta 0: 97.5 improves.
  assert replay([100, float("nan"), 101, 90], 2).stopped_epoch == 2  # NaN never improves.
  assert replay([5, 6, 4, 7], 1) == convergence.State(5, 0, 1, 1)  # Epochs after a stop: ignored.
  assert replay([5, 6, 7, 4, 8], 1, min_epochs=4) == convergence.State(4, 3, 1, 4)


class _Scramble(keras.callbacks.Callback):
  """From epoch `epoch` on, multiplies every weight by 5 as the epoch begins: its validation
  loss is then worse than epoch 0's, whatever the data."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch >= self.epoch:
      for weight in self.model.trainable_weights:
        weight.assign(weight * 5.0)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch_and_a_resume_stops_where_a_run_would(tmp_path):
  early = dict(kind="ae", epochs=20, patience=2, min_delta=0.01, loss="mse")
  # Killed in epoch 2, after two epochs without improvement: the resumed run must count them
  # (replayed from history.csv) and stop after epoch 2, as the uninterrupted run does.
  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path / "run", callbacks=[_Scramble(1), _Interrupt(epoch=2, step=1)], **early)
  result = _train(tmp_path / "run", callbacks=[_Scramble(1)], **early)
  straight = _train(tmp_path / "straight", callbacks=[_Scramble(1)], **early)
  for run in (result, straight):
    assert [row["epoch"] for row in run.history] == [0, 1, 2]
    assert run.convergence == convergence.State(run.history[0]["val_loss"], 0, 2, 2)
  assert result.initial_epoch == 2
  # The .keras files hold epoch 0 (best.keras), not the scrambled last epoch (the backup).
  images = _colour_images()[:8]
  run = run_dir.paths(tmp_path / "run")
  final = run_dir.load_run(run.root).model
  best = run_dir.load_run(run.root, "best").model
  np.testing.assert_array_equal(final.encode(images), best.encode(images))
  best.load_weights(os.path.join(run.backup, callbacks_lib.Backup.WEIGHTS))
  assert not np.allclose(final.encode(images), best.encode(images))
  # A converged run is complete although fewer than --epochs ran; killed after stopping but
  # before its .keras files, it writes them without another epoch.
  assert _train(tmp_path / "run", **early).already_complete
  os.remove(run.model)
  again = _train(tmp_path / "run", **early)
  assert not again.already_complete and len(again.history) == 3 and os.path.isfile(run.model)
  np.testing.assert_array_equal(run_dir.load_run(run.root).model.encode(images),
                                final.encode(images))


@pytest.mark.slow
def test_a_spent_time_budget_stops_after_one_epoch_and_a_rerun_trains_on(tmp_path):
  model_config = config_lib.resolve_config("ae_z256", dict(TINY, loss="mse"))
  train_config = training.TrainConfig(epochs=3, batch_size=BATCH, seed=1)
  images = _dataset(_colour_images())
  spent = training.train(model_config, train_config, images, images, str(tmp_path / "run"),
                         verbose=0, deadline=time.time())
  assert spent.stopped_by_deadline and len(spent.history) == 1
  assert os.path.isfile(run_dir.paths(tmp_path / "run").model)  # Saved as a finished run.
  more = training.train(model_config, train_config, images, images, str(tmp_path / "run"),
                        verbose=0, deadline=time.time() + 3600)
  assert not more.stopped_by_deadline and more.initial_epoch == 1 and len(more.history) == 3


def test_a_different_config_is_refused_unless_overwrite(tmp_path):
  _train(tmp_path / "run", kind="ae", epochs=1)
  with pytest.raises(ModelError, match=r"different config \(train.learning_rate: 0.0005 -> 0.001"):
    _train(tmp_path / "run", kind="ae", epochs=1, learning_rate=0.001)
  run = run_dir.paths(tmp_path / "run")
  stored = config_lib.load_config(run.config)
  stored["train"]["learning_rate"] = 0.001
  assert run_dir.prepare_run_dir(run.root, stored, overwrite=True) is False
  assert not os.path.exists(run.model) and not os.path.exists(run.backup)
  (tmp_path / "foreign").mkdir()
  (tmp_path / "foreign" / "notes.txt").write_text("mine")
  with pytest.raises(ModelError, match="has no config.json, so it is not a run dir"):
    run_dir.prepare_run_dir(str(tmp_path / "foreign"), stored, overwrite=True)
  assert (tmp_path / "foreign" / "notes.txt").exists()


def test_divergence_stops_with_one_line_and_keeps_the_last_good_state(tmp_path):
  with pytest.raises(ModelError) as error:
    _train(tmp_path / "run", epochs=3, learning_rate=1e8, backup_every_steps=1)
  message = str(error.value)
  assert "training diverged at epoch 1 step" in message and "\n" not in message
  assert "backup" in message and "--learning_rate" in message
  run = run_dir.paths(tmp_path / "run")
  assert not os.path.exists(run.model)
  config = config_lib.model_config_from_run(config_lib.load_config(run.config))
  model = training.build_model(config)
  model.build((None, 16, 16, 3))
  model.compile(optimizer=keras.optimizers.Adam())
  model.optimizer.build(model.trainable_variables)
  model.load_weights(os.path.join(run.backup, "latest.weights.h5"))
  assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_runs(tmp_path, precision):
  # fp16: loss scaling (LossScaleOptimizer) and float32 sampling, KL and loss.
  result = _train(tmp_path / "run", epochs=1, mixed_precision=precision, steps_per_epoch=2)
  row = result.history[0]
  assert all(np.isfinite(row[key]) for key in ("loss", "kl_loss", "val_loss")), row


# bf16 keeps 8 bits of mantissa (2-3 significant digits) in the layers' convolutions and matmuls,
# while the losses are summed in float32 (modeling/losses.py): from the same weights and data,
# each epoch's losses stay within these relative tolerances of float32's (seen: 2e-5 for the
# losses, 1.1 % for the KL term, which is small here and so carries the encoder's rounding).
BF16_LOSS_RTOL = 1e-3
BF16_KL_RTOL = 5e-2


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_bf16_training_follows_float32_within_its_tolerance(tmp_path, kind):
  from modeling import devices  # pylint: disable=g-import-not-at-top
  resolved, reason = devices.resolve_precision("auto")
  if resolved != "bf16":
    pytest.skip(f"needs native bfloat16 ({reason}); the float32 tests cover this machine")
  float32 = _train(tmp_path / "float32", kind=kind, epochs=2, mixed_precision="off")
  bf16 = _train(tmp_path / "bf16", kind=kind, epochs=2, mixed_precision="bf16")
  with open(tmp_path / "bf16" / "config.json", encoding="utf-8") as f:
    assert json.load(f)["train"]["mixed_precision"] == "bf16"
  for exact, half in zip(float32.history, bf16.history, strict=True):
    for key in ("loss", "reconstruction_loss", "val_loss"):
      assert half[key] == pytest.approx(exact[key], rel=BF16_LOSS_RTOL), (key, exact, half)
    for key in ("kl_loss", "val_kl_loss") if kind == "vae" else ():
      assert half[key] == pytest.approx(exact[key], rel=BF16_KL_RTOL), (key, exact, half)
    assert half["val_loss"] != exact["val_loss"]  # bf16 did run: its rounding shows.


def test_history_trim_and_image_grid(tmp_path):
  path = tmp_path / "history.csv"
  path.write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.0\n")
  run_dir.trim_history(str(path), 2)
  assert [row["epoch"] for row in run_dir.read_history(str(path))] == [0, 1]
  run_dir.trim_history(str(path), 0)
  assert path.read_text() == "epoch,loss\n"
  path.write_text("epoch,loss,val_loss\n0,3.0,NA\n")  # CSVLogger without validation data.
  (row,) = run_dir.read_history(str(path))
  assert row["loss"] == 3.0 and np.isnan(row["val_loss"])
  grid = callbacks_lib.image_grid([np.zeros((3, 4, 4, 3)), np.ones((3, 4, 4, 3))], pad=1)
  assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)


def test_load_run_errors_are_one_line(tmp_path):
  with pytest.raises(ModelError, match="does not exist; train a model there first"):
    run_dir.load_run(str(tmp_path / "missing"))
  _train(tmp_path / "run", kind="ae", epochs=1)
  run = run_dir.paths(tmp_path / "run")
  loaded = run_dir.load_run(run.root, checkpoint="best")
  assert loaded.config.kind == "ae" and loaded.encoder.name == "encoder"
  with open(run.model, "wb") as f:
    f.write(b"not a zip")
  with pytest.raises(ModelError, match="model.keras cannot be loaded"):
    run_dir.load_run(run.root)
  os.remove(run.model)
  with pytest.raises(ModelError, match="has not finished"):
    run_dir.load_run(run.root)


_LOAD_SCRIPT = """
import sys, numpy as np, keras
from modeling import run_dir
images = np.load(sys.argv[2])
loaded = run_dir.load_run(sys.argv[1])
separate = [keras.saving.load_model(f"{sys.argv[1]}/{name}.keras", safe_mode=True)
            for name in ("encoder", "decoder")]
z = keras.ops.convert_to_numpy(loaded.model.encode(images))
np.savez(sys.argv[3], z=z, recon=keras.ops.convert_to_numpy(loaded.model(images)),
         sample=keras.ops.convert_to_numpy(loaded.model.sample(2, seed=3)),
         enc=keras.ops.convert_to_numpy(separate[0](images)[0]),
         dec=keras.ops.convert_to_numpy(separate[1](z)))
"""


def _run_python(script, *args):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr
  return result


@pytest.mark.slow
def test_saved_models_load_in_a_new_process_with_identical_outputs(tmp_path):
  _train(tmp_path / "run", epochs=1)
  images = _colour_images(4, seed=9)
  np.save(tmp_path / "images.npy", images)
  _run_python(_LOAD_SCRIPT, tmp_path / "run", tmp_path / "images.npy", tmp_path / "out.npz")
  out = np.load(tmp_path / "out.npz")
  model = run_dir.load_run(str(tmp_path / "run")).model
  z = keras.ops.convert_to_numpy(model.encode(images))
  np.testing.assert_array_equal(out["z"], z)
  np.testing.assert_array_equal(out["enc"], z)  # encoder.keras: z_mean first
  np.testing.assert_array_equal(out["recon"], keras.ops.convert_to_numpy(model(images)))
  np.testing.assert_array_equal(out["dec"], keras.ops.convert_to_numpy(model.decode(z)))
  np.testing.assert_array_equal(out["sample"], keras.ops.convert_to_numpy(model.sample(2, 3)))


_REPLICA_SCRIPT = """
import numpy as np, keras, tensorflow as tf
from modeling import config as config_lib, devices, training
devices.configure_devices(cpu_replicas=2)
config = config_lib.resolve_config("ae_z256", dict(image_size=16, z_dim=4, encoder_filters=[4, 8],
                                                   encoder_kernels=[3, 3], strides=[2, 2]))
images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
results = []
for name in ("default", "mirrored"):
  strategy = devices.make_strategy(name)
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = training.build_model(config)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
  history = model.fit(tf.data.Dataset.from_tensors(images), epochs=2, verbose=0)
  results.append((strategy.num_replicas_in_sync, history.history["loss"],
                  [w.numpy() for w in model.trainable_weights]))
(n1, loss1, w1), (n2, loss2, w2) = results
assert (n1, n2) == (1, 2), (n1, n2)
np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
for a, b in zip(w1, w2):
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
print("same", loss1, loss2)
"""


@pytest.mark.slow
def test_one_and_two_replicas_give_the_same_loss_and_update():
  assert "same" in _run_python(_REPLICA_SCRIPT).stdout


@pytest.mark.parametrize("gpus, cpu_flags, expected", [
    ([], {"avx2", "avx512f"}, "off"),                            # This project's AVX2 CPUs.
    ([], {"avx512f", "avx512_bf16"}, "bf16"),                    # Zen 4, Cooper Lake.
    ([], {"amx_bf16", "amx_tile"}, "bf16"),                      # Sapphire Rapids.
    ([("GPU:0", (8, 6))], set(), "bf16"),                        # Ampere.
    ([("GPU:0", (9, 0)), ("GPU:1", (7, 5))], {"amx_bf16"}, "off"),  # One Turing GPU: float32.
])
def test_auto_precision_picks_bf16_only_where_it_is_native(gpus, cpu_flags, expected):
  from modeling import devices  # pylint: disable=g-import-not-at-top
  resolved, reason = devices.resolve_precision("auto", gpus=gpus, cpu_flags=cpu_flags)
  assert resolved == expected and reason.startswith("auto: ")
  assert devices.resolve_precision("fp16", gpus=gpus, cpu_flags=cpu_flags)[0] == "fp16"


def test_auto_precision_is_recorded_resolved_in_config_json(tmp_path):
  from modeling import devices  # pylint: disable=g-import-not-at-top
  _train(tmp_path / "run", epochs=1, steps_per_epoch=1, mixed_precision="auto")
  with open(tmp_path / "run" / "config.json", encoding="utf-8") as f:
    recorded = json.load(f)["train"]["mixed_precision"]
  assert recorded == devices.resolve_precision("auto")[0] and recorded != "auto"
  assert keras.mixed_precision.global_policy().name == flag_choices.PRECISION_POLICIES[recorded]
