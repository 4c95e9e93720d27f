"""The tf.data service: decode and batch on other machines, train on this one.

TensorFlow's `tf.data.experimental.service` does the work: a dispatcher hands out work,
workers run the input pipeline, and a trainer consumes their batches over gRPC instead of
reading shards itself, so CPU-only machines can feed a GPU box. `tools.data_service` runs a
dispatcher or a worker; the trainers take `--data_service HOST:PORT` (docs/DISTRIBUTED.md).

    dispatcher = start_dispatcher(5050)                       # one process, any machine
    worker = start_worker(5051, "datahost:5050", "datahost:5051")   # on each data machine
    ds = from_service(make_dataset(data_dir, "train", 128), "datahost:5050")  # trainer

The workers run the dataset's graph, so its shard files must exist at the same absolute path
on every worker; `from_service` explains the two sharding modes.
"""

import errno
import re
import socket

from absl import logging

from data_pipeline.errors import DataError

# TensorFlow is imported inside the functions that use it: the trainers' flags use MODES and
# parse_address, and flag errors answer before TensorFlow loads (docs/ARCHITECTURE.md, Imports).

MODES = ("dynamic", "off")
_ADDRESS = re.compile(r"^(?:grpc://)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d+)$")


def parse_address(address, flag="--data_service"):
  """("host", port) from "HOST:PORT" (an optional grpc:// prefix allowed).

  Pure Python, so that flag validators can call it before TensorFlow loads.

  Raises:
    DataError: not HOST:PORT with a port in 1..65535; the message names `flag`.
  """
  match = _ADDRESS.match(str(address or "").strip())
  if not match or not 1 <= int(match["port"]) <= 65535:
    raise DataError(f"{flag} {address!r} is not HOST:PORT with a port in 1..65535 (e.g. "
                    "localhost:5050, the address tools.data_service logs)")
  return match["host"], int(match["port"])


def _free_port():
  """A TCP port that nobody listens on now (the kernel's pick for port 0)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind(("0.0.0.0", 0))
    return probe.getsockname()[1]


def _check_port(port, what):
  """The port to listen on: `port`, or a free one for 0; refuses one out of range or in use.

  Port 0 is resolved here rather than by the server, because only a DispatchServer tells
  which port it got through public API (`target`); a WorkerServer does not.
  gRPC binds with SO_REUSEPORT, so a second server on a busy port starts without error and
  then shares the port with the first (clients reach either): the bind below, without that
  option, is what finds the port taken.
  """
  if not isinstance(port, int) or not 0 <= port <= 65535:
    raise DataError(f"the {what} port {port!r} must be in 0..65535 (0: any free port)")
  if port == 0:
    return _free_port()
  families = [(socket.AF_INET, "0.0.0.0")] + ([(socket.AF_INET6, "::")] if socket.has_ipv6
                                               else [])
  for family, host in families:
    try:
      probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # No IPv6 on this machine.
      continue
    with probe:
      # Like gRPC's own bind: a port whose old connections linger in TIME_WAIT is free.
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        probe.bind((host, port))
      except OSError as error:
        if error.errno == errno.EADDRINUSE:
          raise DataError(f"port {port} is in use, so the tf.data service {what} cannot "
                          "listen on it; pick another --port") from None
        if error.errno == errno.EACCES:
          raise DataError(f"port {port} needs privileges to listen on; pick a --port above "
                          "1023") from None
  return port


def check_reachable(address, timeout=5.0):
  """Raises DataError unless something accepts connections at `address` (HOST:PORT).

  Without it a consumer of an address where no dispatcher runs waits while TensorFlow keeps
  retrying, instead of failing.
  """
  host, port = parse_address(address)
  try:
    with socket.create_connection((host.strip("[]"), port), timeout=timeout):
      pass
  except OSError as error:
    raise DataError(f"no tf.data service dispatcher answers at --data_service {host}:{port} "
                    f"({error.strerror or error}); start one with python -m tools.data_service "
                    "--role=dispatcher, or fix the address") from None


def _started(make_server, what, port):
  """Calls make_server(); TensorFlow's errors become a one-line DataError."""
  import tensorflow as tf
  try:
    return make_server()
  except (tf.errors.OpError, RuntimeError) as error:
    text = " ".join(str(getattr(error, "message", error)).split())
    raise DataError(f"cannot start the tf.data service {what} on port {port}: {text}") from None


def start_dispatcher(port, work_dir=None):
  """Starts a tf.data service dispatcher in this process; returns the DispatchServer.

  Args:
    port: port to listen on; 0 picks a free one (`serve` returns it; so does the server's
      `target`).
    work_dir: dir where the dispatcher journals its state (registered datasets, jobs), so
      that a restarted dispatcher carries on; None keeps the state in memory only.

  Raises:
    DataError: the port cannot be bound.
  """
  port = _check_port(port, "dispatcher")
  import tensorflow as tf
  config = tf.data.experimental.service.DispatcherConfig(
      port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None)
  server = _started(lambda: tf.data.experimental.service.DispatchServer(config),
                    "dispatcher", port)
  logging.info("tf.data service dispatcher at %s", server.target)
  return server


def start_worker(port, dispatcher_address, worker_address=None):
  """Starts a tf.data service worker in this process; returns the WorkerServer.

  Args:
    port: port to listen on; 0 picks a free one (`serve` returns it).
    dispatcher_address: the dispatcher's HOST:PORT.
    worker_address: HOST:PORT under which consumers reach this worker (the dispatcher hands
      it out). TensorFlow's default, localhost, only works for consumers on this machine.

  Raises:
    DataError: a malformed address or a port that cannot be bound.
  """
  port = _check_port(port, "worker")
  host, dispatcher_port = parse_address(dispatcher_address, "--dispatcher_address")
  if worker_address is not None:
    parse_address(worker_address, "--worker_address")
  import tensorflow as tf
  config = tf.data.experimental.service.WorkerConfig(
      dispatcher_address=f"{host}:{dispatcher_port}", worker_address=worker_address, port=port)
  server = _started(lambda: tf.data.experimental.service.WorkerServer(config), "worker", port)
  logging.info("tf.data service worker on port %d, registered with dispatcher %s:%d", port,
               host, dispatcher_port)
  return server


def serve(role, port, dispatcher_address=None, worker_address=None, work_dir=None):
  """Starts a dispatcher or a worker (`role`) as tools.data_service does; (server, its port).

  Raises:
    DataError: as start_dispatcher / start_worker.
  """
  # Resolved here: a WorkerServer does not tell its port through public API.
  port = _check_port(port, role)
  if role == "dispatcher":
    return start_dispatcher(port, work_dir=work_dir), port
  return start_worker(port, dispatcher_address, worker_address), port


def from_service(dataset, address, mode="dynamic", job_name=None, check=True):
  """`dataset`, run by the tf.data service workers and consumed here.

  The dataset graph is serialized and sent to the workers: the shard files it names must be
  readable at the same path on every worker (build it from an absolute data dir path). The
  trainer builds that graph, so it reads manifest.json and checks the shard files too. Python
  code cannot travel: a pipeline with `tf.py_function` (make_dataset's `skip_corrupt` loss
  counting) does not run on a worker in another process.

  Modes (TensorFlow's ShardingPolicy):
  - "dynamic" (DYNAMIC, the default): the shard-file list is split at its source and each
    worker asks the dispatcher for the next shard. Every record is seen at most once per epoch
    across all workers (exactly once unless a worker dies), in no fixed order. Each worker
    shuffles and batches its own stream: with drop_remainder up to workers x (batch - 1)
    images may sit out an epoch; the shuffle buffer mixes within a worker's shards only.
  - "off" (OFF): every worker runs the whole pipeline, so an "epoch" through the service holds
    each image once per worker. Shuffle without a seed (seeded, every worker sends the same
    batches). Useful to scale decoding of an endless stream (train with --steps_per_epoch).
  FILE and DATA (static sharding) are not offered: they need a fixed worker list in the
  dispatcher's config and each consumer reading from its local worker only. Consumers that
  share a `job_name` share one job (in "dynamic" mode each batch goes to one of them).

  Args:
    dataset: the pipeline to distribute (e.g. make_dataset(...)); its graph is sent to the
      workers, so its files must exist at the same paths there.
    address: the dispatcher's HOST:PORT.
    mode: "dynamic" (each shard file to one worker per epoch) or "off" (every worker runs
      the whole pipeline); see below.
    job_name: consumers that share a name share one job; None: a job per iteration.
    check: first make sure that a dispatcher answers at `address` (check_reachable).

  Returns:
    A tf.data.Dataset with the same elements (element_spec) as `dataset`.

  Raises:
    DataError: a malformed address, an unknown mode, or no dispatcher at `address`.
  """
  import tensorflow as tf
  host, port = parse_address(address)
  if mode not in MODES:
    raise DataError(f"--data_service_mode {mode!r} is not one of {', '.join(MODES)}")
  sharding = tf.data.experimental.service.ShardingPolicy
  policy = {"dynamic": sharding.DYNAMIC, "off": sharding.OFF}[mode]
  if check:
    check_reachable(address)
  logging.info("reading batches from the tf.data service at %s:%d (%s mode)", host, port, mode)
  distributed = dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=policy, service=f"grpc://{host}:{port}", job_name=job_name))
  # The service already decided which batches reach this consumer: tf.distribute's own
  # auto-sharding (of multi-worker consumers) must not split them a second time.
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  return distributed.prefetch(tf.data.AUTOTUNE).with_options(options)

