"""Benchmarks the exact latent statistics over ALL z-points: seconds per stage and peak memory.

    python -m tools.benchmark_latents --output_json=docs/benchmarks/latents.json

Writes a seeded synthetic float32 z-point file of --num_vectors x --dim (default the study's
170,000 x 256) with planted correlations into --work_dir, chunk by chunk, then measures in a
fresh child process: zpoints.load_z_points, correlation.accumulate + correlation() +
counts_above over every vector, statistics.component_statistics over every vector, and, for
comparison, the study's numpy.corrcoef of 5,000 random vectors. The target (the latent-space
issue): the full correlation in at most 30 s with a peak RSS under 1 GB (1000 MB).

Writes --output_json (machine, inputs, seconds per stage, peak RSS, the targets with pass/fail,
the measured vs planted correlations, and the Markdown table under "table"),
<output_json stem>.flags.txt beside it, and prints the table.
"""

import os
import shutil
import tempfile

from absl import flags
from absl import logging

from evaluation import correlation
from tools import _cli

FLAGS = flags.FLAGS

flags.DEFINE_string("output_json", None, "Report file (JSON) to write; its folder is created "
                    "if needed.")
flags.DEFINE_integer("num_vectors", 170000, "Synthetic z-points N (the study encoded 170,000 "
                     "CelebA faces).", lower_bound=2)
flags.DEFINE_integer("dim", 256, "Components per z-point (the study's z_dim).", lower_bound=2)
flags.DEFINE_integer("seed", 0, "Seed of the synthetic z-points and of the 5,000-row subset.",
                     lower_bound=0)
flags.DEFINE_string("work_dir", None, "Folder for the synthetic Z.npy (N * dim * 4 bytes) and "
                    "the measuring process's log, kept afterwards; default: a temporary folder, "
                    "removed at the end.")
flags.DEFINE_integer("chunk_rows", correlation.DEFAULT_CHUNK_ROWS, "Rows per chunk of the "
                     "streaming passes.", lower_bound=1)
flags.DEFINE_boolean("cold_cache", True, "Drop the synthetic file from the page cache before "
                     "measuring, so that the load reads it from disk as a fresh Z.npy would be "
                     "(--nocold_cache measures with the file still cached).")
flags.DEFINE_float("child_timeout_s", 1800.0, "Seconds after which the measuring process is "
                   "stopped as failed.")

flags.register_validator("child_timeout_s", lambda value: value > 0,
                         message="--child_timeout_s must be > 0 seconds")


def _remove(path):
  try:
    os.remove(path)
  except OSError:
    pass


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  # Imported here so that --help and flag errors answer at once.
  from data_pipeline import locking  # pylint: disable=g-import-not-at-top

  if os.path.isdir(FLAGS.output_json):
    raise _cli.FlagError(f"--output_json {FLAGS.output_json} is a directory; give a file path "
                         f"such as {os.path.join(FLAGS.output_json, 'latents.json')}")
  # The report's folder and a given --work_dir are locked from here to the end: a second
  # benchmark writing into either is refused at once, not after a long run.
  folders = [locking.file_folder(FLAGS.output_json, "--output_json")]
  if FLAGS.work_dir:
    folders.append((FLAGS.work_dir, "--work_dir", None))
  with locking.output_dirs("benchmark_latents", folders):
    _benchmark()


def _benchmark():
  # pylint: disable=g-import-not-at-top
  from data_pipeline import provenance
  from benchmarks import latents as latent_benchmark
  # pylint: enable=g-import-not-at-top
  temporary = None if FLAGS.work_dir else tempfile.mkdtemp(prefix="benchmark_latents_")
  try:
    options = latent_benchmark.Options(
        work_dir=FLAGS.work_dir or temporary, num_vectors=FLAGS.num_vectors, dim=FLAGS.dim,
        seed=FLAGS.seed, chunk_rows=FLAGS.chunk_rows, cold_cache=FLAGS.cold_cache,
        child_timeout_s=FLAGS.child_timeout_s)
    report = latent_benchmark.run_benchmark(options)
  except BaseException:
    if temporary:  # Keep the measuring process's log that the error names; drop the big file.
      _remove(os.path.join(temporary, "Z.npy"))
    raise
  if temporary:
    shutil.rmtree(temporary, ignore_errors=True)
    # Gone; paths that no longer exist would mislead.
    report["inputs"]["work_dir"] = report["synthetic"]["path"] = None

  output_dir = os.path.dirname(os.path.abspath(FLAGS.output_json))
  os.makedirs(output_dir, exist_ok=True)
  stem = os.path.splitext(os.path.basename(FLAGS.output_json))[0]
  _cli.write_flagfile(os.path.join(output_dir, f"{stem}.flags.txt"))
  provenance.atomic_write_json(FLAGS.output_json, report)
  print(report["table"], end="")
  failed = [t["name"] for t in report["targets"] if not t["passed"]]
  logging.info("wrote %s in %.0f s; %d of %d targets failed%s", FLAGS.output_json,
               report["elapsed_seconds"], len(failed), len(report["targets"]),
               f" ({', '.join(failed)})" if failed else "")


def run():
  _cli.run(main, required=["output_json"])


if __name__ == "__main__":
  run()
