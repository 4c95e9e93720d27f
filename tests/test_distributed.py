"""Beyond one process: the tf.data service and the multi-replica / multi-worker strategies.

Everything runs on this machine: tf.data service servers on localhost ports (in this process,
or as tools.data_service), logical CPU devices for the mirrored strategy, and two trainer
processes joined by TF_CONFIG over loopback for multi_worker_mirrored. Real GPUs, NCCL and
several hosts are not covered (docs/DISTRIBUTED.md).

Few processes, on purpose: one trainer run through the service and its resume without it
(mirrored over two logical CPUs), two multi-worker trainers run twice (train, then resume), one
dispatcher tool, and one cheap flag check; the rest runs in this process.
"""

import collections
import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from data_pipeline.errors import DataError
from modeling.errors import ModelError
from tests.toolrun import REPO_ROOT, assert_clean_error, ctrl_c_reaches_children, run_main
from tests.toolrun import run_tool

pytestmark = pytest.mark.slow

TINY = ("--encoder_filters=8,16", "--encoder_kernels=3", "--strides=2", "--z_dim=4",
        "--batch_size=8", "--preview_images=0")
TIMEOUT_S = 240


def _free_ports(count):
  """`count` distinct ports that nothing listens on right now."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _history(model_dir):
  with open(os.path.join(model_dir, "history.csv"), newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _env(**extra):
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT, **extra)


def _start_tool(name, *args, env=None, log=None):
  return subprocess.Popen([sys.executable, "-m", f"tools.{name}", *map(str, args)],
                          cwd=REPO_ROOT, env=env or _env(), stdout=log or subprocess.DEVNULL,
                          stderr=subprocess.STDOUT if log else subprocess.DEVNULL)


def _kill(processes):
  for process in processes:
    if process.poll() is None:
      process.kill()
      process.wait()


@pytest.fixture(scope="module")
def service_cluster():
  """An in-process dispatcher with two workers on localhost: (address, dispatcher, workers)."""
  from data_pipeline import service  # pylint: disable=g-import-not-at-top
  dispatcher = service.start_dispatcher(0)
  address = dispatcher.target.split("://")[1]
  workers = [service.start_worker(0, address) for _ in range(2)]
  yield address, dispatcher, workers
  for server in workers + [dispatcher]:
    server.stop()


def test_address_checks_fail_with_one_line_naming_the_flag():
  from data_pipeline import service  # pylint: disable=g-import-not-at-top
  assert service.parse_address("localhost:5050") == ("localhost", 5050)
  assert service.parse_address("grpc://10.0.0.2:80") == ("10.0.0.2", 80)
  for bad in ("localhost", "host:0", "host:70000", ":5050", "a b:1", None):
    with pytest.raises(DataError, match="--data_service .* is not HOST:PORT"):
      service.parse_address(bad)
  with pytest.raises(DataError, match="--dispatcher_address"):
    service.start_worker(0, "nohost")


def test_cluster_task_follows_tf_config(monkeypatch):
  from modeling import devices  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert devices.cluster_task() == devices.ClusterTask("worker", 0, 1, True)
  cluster = {"worker": ["a:1", "b:2"]}
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": 1}}))
  assert devices.cluster_task() == devices.ClusterTask("worker", 1, 2, False)
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:0"], **cluster},
                                              "task": {"type": "worker", "index": 0}}))
  assert devices.cluster_task() == devices.ClusterTask("worker", 0, 3, False)
  for bad in ("{", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}})):
    monkeypatch.setenv("TF_CONFIG", bad)
    with pytest.raises(ModelError, match="TF_CONFIG"):
      devices.cluster_task()


def test_multi_worker_strategy_after_tensorflow_started_is_a_clear_error(monkeypatch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modeling import devices  # pylint: disable=g-import-not-at-top
  tf.constant(0)  # TensorFlow has started in this process (as in any test before this one).
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                              "task": {"type": "worker", "index": 0}}))
  with pytest.raises(ModelError, match="before TensorFlow makes its first tensor"):
    devices.make_strategy("multi_worker_mirrored")


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_service_splits_each_epoch_between_workers_and_trains(service_cluster,
                                                              prepared_data_dir, tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipeline import make_dataset  # pylint: disable=g-import-not-at-top
  from data_pipeline import service  # pylint: disable=g-import-not-at-top
  from modeling import config as config_lib  # pylint: disable=g-import-not-at-top
  from modeling import training  # pylint: disable=g-import-not-at-top
  address, dispatcher, _ = service_cluster
  ids = make_dataset(prepared_data_dir, "train", 8, shuffle=True, seed=0, with_ids=True)

  def counts(dataset):
    return collections.Counter(i for batch in dataset for i in batch["id"].numpy().tolist())

  # dynamic: the shard files are split between the two workers, every epoch anew.
  dynamic = service.from_service(ids, address, mode="dynamic")
  for _ in range(2):
    seen = counts(dynamic)
    assert len(seen) == 52 and set(seen.values()) == {1}, seen
  # off: both workers run the whole pipeline; the consumer gets each image from each.
  seen = counts(service.from_service(ids, address, mode="off"))
  assert len(seen) == 52 and set(seen.values()) == {2}, seen

  # Mistakes: one line each, before anything runs.
  with pytest.raises(DataError, match="--data_service_mode 'file' is not one of dynamic, off"):
    service.from_service(ids, address, mode="file")
  with pytest.raises(DataError, match="no tf.data service dispatcher answers at --data_service"):
    service.from_service(ids, f"localhost:{_free_ports(1)[0]}")
  with pytest.raises(DataError, match="in use"):
    service.start_dispatcher(int(dispatcher.target.rsplit(":", 1)[1]))

  # One epoch of a tiny AE on images that only the service read.
  images = make_dataset(prepared_data_dir, "train", 8, shuffle=True, seed=0,
                        drop_remainder=True)
  model_config = config_lib.resolve_config(
      "ae_z256", dict(image_size=32, z_dim=4, encoder_filters=[8, 16], encoder_kernels=[3, 3],
                      strides=[2, 2]))
  validation = make_dataset(prepared_data_dir, "validation", 8, shuffle=False)
  result = training.train(model_config, training.TrainConfig(epochs=1, batch_size=8),
                          service.from_service(images, address), validation,
                          str(tmp_path / "run"), verbose=0)
  assert len(result.history) == 1
  assert np.isfinite(result.history[0]["loss"]) and np.isfinite(result.history[0]["val_loss"])


def test_one_device_strategy_trains_and_resumes(tmp_path):
  """In this process (mirrored needs logical CPUs before TensorFlow starts: see below)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modeling import config as config_lib  # pylint: disable=g-import-not-at-top
  from modeling import training  # pylint: disable=g-import-not-at-top
  model_config = config_lib.resolve_config(
      "ae_z256", dict(image_size=16, z_dim=4, encoder_filters=[4, 8], encoder_kernels=[3, 3],
                      strides=[2, 2]))
  images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
  dataset = tf.data.Dataset.from_tensor_slices(images).batch(8, drop_remainder=True)
  for epochs in (1, 2):
    result = training.train(model_config, training.TrainConfig(epochs=epochs, batch_size=8,
                                                               strategy="one_device"),
                            dataset, dataset, str(tmp_path / "run"), verbose=0)
  assert result.initial_epoch == 1 and [row["epoch"] for row in result.history] == [0, 1]


def test_data_service_tool_flag_errors():
  result = run_tool("data_service", "--role=worker", "--port=5051")
  assert_clean_error(result, "--role=worker needs --dispatcher_address", code=2)


def test_mirrored_trainer_fed_by_the_service_tool_then_resumed_locally(prepared_data_dir,
                                                                       tmp_path):
  """tools.data_service as the dispatcher, trainer run 1 through it, run 2 resumes locally."""
  from data_pipeline import service  # pylint: disable=g-import-not-at-top
  port = _free_ports(1)[0]
  log_path = tmp_path / "dispatcher.log"
  # The dispatcher below turns Ctrl-C into its stop.
  with ctrl_c_reaches_children(), open(log_path, "wb") as log:
    dispatcher = _start_tool("data_service", "--role=dispatcher", f"--port={port}", log=log)
  workers = []
  try:
    deadline = time.monotonic() + 60
    while "dispatcher listening" not in log_path.read_text(errors="replace"):
      assert dispatcher.poll() is None, log_path.read_text(errors="replace")
      assert time.monotonic() < deadline, "the dispatcher did not start"
      time.sleep(0.2)
    # Workers in this process (they decode for the trainer process below).
    workers = [service.start_worker(0, f"localhost:{port}") for _ in range(2)]
    model_dir = str(tmp_path / "run")
    common = (f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}", *TINY,
              "--strategy=mirrored", "--cpu_replicas=2")
    first = run_tool("train_ae", *common, "--epochs=1", f"--data_service=localhost:{port}",
                     timeout=TIMEOUT_S)
    assert first.returncode == 0, first.stderr
    assert "reading batches from the tf.data service" in first.stderr
    record = json.load(open(os.path.join(model_dir, "manifest.json"), encoding="utf-8"))
    assert record["data_service"] == f"localhost:{port}"
    assert record["data_service_mode"] == "dynamic"

    # Workers first, as a cluster is taken down; then the dispatcher, with Ctrl-C.
    for worker in workers:
      worker.stop()
    workers = []
    dispatcher.send_signal(signal.SIGINT)  # A clean stop, exit 0.
    try:
      returncode = dispatcher.wait(timeout=60)
    except subprocess.TimeoutExpired:
      returncode = "still running after 60 s"
    assert returncode == 0, log_path.read_text(errors="replace")
    assert "stopped" in log_path.read_text(errors="replace")
  finally:
    for worker in workers:
      worker.stop()
    _kill([dispatcher])

  # Same run, more epochs, shards read here by the default strategy (the strategy may change
  # between runs of one run dir): resumes after the backed-up epoch.
  local = (f"--data_dir={prepared_data_dir}", f"--model_dir={model_dir}", *TINY)
  second = run_main("train_ae", *local, "--epochs=2")
  assert second.returncode == 0, second.stderr
  assert "resuming from its last backup, after epoch 1" in second.stderr
  rows = _history(model_dir)
  assert [row["epoch"] for row in rows] == ["0", "1"]
  assert all(math.isfinite(float(row["loss"])) for row in rows)
  assert os.path.isfile(os.path.join(model_dir, "model.keras"))


def _run_cluster(data_dir, tmp_path, epochs):
  """Trains one run on two multi-worker trainer processes; returns their logs."""
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{port}" for port in ports]}
  processes, logs = [], []
  try:
    for index in range(2):
      tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
      logs.append(tmp_path / f"worker{index}-{epochs}.log")
      with open(logs[-1], "wb") as log:
        processes.append(_start_tool(
            "train_ae", f"--data_dir={data_dir}", f"--model_dir={tmp_path / f'worker{index}'}",
            *TINY, f"--epochs={epochs}", "--strategy=multi_worker_mirrored",
            env=_env(TF_CONFIG=tf_config), log=log))
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
      # A worker that fails leaves the other waiting in a collective: stop at once.
      if any(p.poll() not in (None, 0) for p in processes):
        break
      time.sleep(0.5)
    texts = [log.read_text(errors="replace") for log in logs]
    assert [p.poll() for p in processes] == [0, 0], [text[-3000:] for text in texts]
    return texts
  finally:
    _kill(processes)


def test_two_workers_train_and_resume_with_multi_worker_mirrored(prepared_data_dir, tmp_path):
  """Two trainer processes, one TF_CONFIG cluster on loopback, one run dir each."""
  _run_cluster(prepared_data_dir, tmp_path, epochs=1)
  chief, other = str(tmp_path / "worker0"), str(tmp_path / "worker1")
  for name in ("config.json", "manifest.json", "model.keras", "encoder.keras",
               "decoder.keras", "best.keras"):
    assert os.path.isfile(os.path.join(chief, name)), name
  rows = _history(chief)
  assert [row["epoch"] for row in rows] == ["0"]
  assert math.isfinite(float(rows[0]["loss"])) and math.isfinite(float(rows[0]["val_loss"]))
  # Synchronous training: both workers end with the same model, so the same numbers.
  assert _history(other) == rows

  # Worker 1 lost its backup (as if it had died while writing it): every worker resumes from
  # the chief's backup, at the chief's epoch, with the chief's weights and optimizer state.
  shutil.rmtree(os.path.join(other, "backup"))
  texts = _run_cluster(prepared_data_dir, tmp_path, epochs=2)
  assert "resuming from its last backup, after epoch 1" in texts[0]
  assert "resuming from the chief's last backup, after epoch 1" in texts[1]
  assert all("Epoch 2/2" in text and "Epoch 1/2" not in text for text in texts), texts
  assert ("this worker's backup is at epoch 0, the chief's at epoch 1: every worker resumes "
          "from the chief's") in texts[1]
  rows = _history(chief)
  assert [row["epoch"] for row in rows] == ["0", "1"] and _history(other) == rows
  # Synchronous from the same state: the same weights, optimizer and sampling state (equal
  # metrics alone would not show it: they are averaged over the workers).
  assert _backup_arrays(other) == _backup_arrays(chief)


def _backup_arrays(model_dir):
  """Every array of a run's backup (weights and optimizer state), as {path: bytes}."""
  import h5py  # pylint: disable=g-import-not-at-top
  arrays = {}
  with h5py.File(os.path.join(model_dir, "backup", "latest.weights.h5"), "r") as f:
    f.visititems(lambda name, item: arrays.__setitem__(name, item[()].tobytes())
                 if isinstance(item, h5py.Dataset) else None)
  assert arrays
  return arrays
