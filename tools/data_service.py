r"""Runs a tf.data service dispatcher or worker, until Ctrl-C.

    python -m tools.data_service --role=dispatcher --port=5050
    python -m tools.data_service --role=worker --port=5051 --dispatcher_address=datahost:5050 \
        --worker_address=datahost:5051

One dispatcher per cluster, one worker per CPU machine that should decode and batch; then a
trainer reads from them with --data_service=datahost:5050. Workers open the shard files the
trainer's pipeline names, so the data dir must sit at the same path on every worker.
docs/DISTRIBUTED.md walks through a set-up; data_pipeline/service.py explains the modes.
"""

import signal
import socket
import time

from absl import flags
from absl import logging

from data_pipeline import service
from data_pipeline.errors import DataError
from tools import _cli

FLAGS = flags.FLAGS

flags.DEFINE_enum("role", None, ["dispatcher", "worker"], "What to run: the dispatcher (one per "
                  "cluster; trainers and workers connect to it) or a worker (runs the input "
                  "pipelines).")
flags.DEFINE_integer("port", None, "Port to listen on (0: any free port, logged).",
                     lower_bound=0, upper_bound=65535)
flags.DEFINE_string("dispatcher_address", None, "Workers: the dispatcher's HOST:PORT.")
flags.DEFINE_string("worker_address", None, "Workers: HOST:PORT under which trainers reach "
                    "this worker (default localhost:PORT, which only trainers on this machine "
                    "can reach).")
flags.DEFINE_string("work_dir", None, "Dispatcher: dir for its journal, so that a restarted "
                    "dispatcher keeps its jobs (default: state in memory only).")


def _address_ok(name):
  def check(value):
    if value is None:
      return True
    try:
      service.parse_address(value, f"--{name}")
    except DataError as error:
      raise flags.ValidationError(str(error)) from None
    return True
  return check


for _name in ("dispatcher_address", "worker_address"):
  flags.register_validator(_name, _address_ok(_name))


def _roles_match(values):
  if values["role"] == "worker" and not values["dispatcher_address"]:
    raise flags.ValidationError("--role=worker needs --dispatcher_address=HOST:PORT (the "
                                "address the dispatcher logged)")
  if values["role"] == "dispatcher":
    extra = [name for name in ("dispatcher_address", "worker_address") if values[name]]
    if extra:
      raise flags.ValidationError(f"--{extra[0]} is only used by --role=worker")
  if values["role"] == "worker" and values["work_dir"]:
    raise flags.ValidationError("--work_dir is only used by --role=dispatcher")
  return True


flags.register_multi_flags_validator(
    ["role", "dispatcher_address", "worker_address", "work_dir"], _roles_match)


def _stop_on_sigterm(signum, frame):
  del signum, frame  # Unused.
  raise KeyboardInterrupt


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  server, port = service.serve(FLAGS.role, FLAGS.port, FLAGS.dispatcher_address,
                               FLAGS.worker_address, FLAGS.work_dir)
  here = f"{socket.getfqdn()}:{port}"
  if FLAGS.role == "dispatcher":
    logging.info("dispatcher listening on port %d: start workers with "
                 "--dispatcher_address=%s and trainers with --data_service=%s (localhost:%d "
                 "on this machine)", port, here, here, port)
  else:
    logging.info("worker listening on port %d, registered with %s as %s", port,
                 FLAGS.dispatcher_address, FLAGS.worker_address or f"localhost:{port}")
  # server.join() blocks inside TensorFlow where Python never sees Ctrl-C; sleeping in
  # Python keeps the process interruptible (SIGTERM too, e.g. from a process manager).
  signal.signal(signal.SIGTERM, _stop_on_sigterm)
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    server.stop()
    logging.info("%s on port %d stopped", FLAGS.role, port)


def run():
  _cli.run(main, required=["role", "port"])


if __name__ == "__main__":
  run()
