"""Benchmarks the exact latent statistics over ALL z-points: seconds per stage and peak memory.

    python -m tools.benchmark_latents --output_json=docs/benchmarks/latents.json

Writes a seeded synthetic float32 z-point file of --num_vectors x --dim (default the study's
170,000 x 256) with planted correlations into --work_dir, then measures in a fresh child
process loading, the full correlation, the component statistics and, for comparison, the
study's numpy.corrcoef of 5,000 random vectors. The target: the full correlation within 30 s
and 1 GB (1000 MB) of peak RSS. Writes --output_json (with the Markdown table under "table"),
<stem>.flags.txt, and prints the table.
"""

from absl import flags

from benchmarks import latents
from evaluation import correlation
from tools import _cli
from tools import flags_benchmark
from tools import flags_data
from tools import outputs

FLAGS = flags.FLAGS

flags_benchmark.define_output_json("latents.json")
flags.DEFINE_integer("num_vectors", 170000, "Synthetic z-points N (the study encoded 170,000 "
                     "CelebA faces).", lower_bound=2)
flags.DEFINE_integer("dim", 256, "Components per z-point (the study's z_dim).", lower_bound=2)
flags_data.define_seed("Seed of the synthetic z-points and of the 5,000-row subset.")
flags_benchmark.define_work_dir("the synthetic Z.npy (N * dim * 4 bytes) and the measuring "
                                "process's log, kept afterwards", "a temporary folder, removed "
                                "at the end")
flags.DEFINE_integer("chunk_rows", correlation.DEFAULT_CHUNK_ROWS, "Rows per chunk of the "
                     "streaming passes.", lower_bound=1)
flags.DEFINE_boolean("cold_cache", True, "Drop the synthetic file from the page cache before "
                     "measuring, so that the load reads it from disk as a fresh Z.npy would be "
                     "(--nocold_cache measures with the file still cached).")
flags_benchmark.define_child_timeout(1800.0, "the measuring process")
flags.adopt_module_key_flags(flags_benchmark)
flags.adopt_module_key_flags(flags_data)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  options = latents.Options(
      work_dir=FLAGS.work_dir, num_vectors=FLAGS.num_vectors, dim=FLAGS.dim, seed=FLAGS.seed,
      chunk_rows=FLAGS.chunk_rows, cold_cache=FLAGS.cold_cache,
      child_timeout_s=FLAGS.child_timeout_s)
  with outputs.benchmark_locks("benchmark_latents", FLAGS.output_json, FLAGS.work_dir):
    report = latents.run_benchmark(options)
    outputs.write_benchmark(FLAGS.output_json, report)


def run():
  _cli.run(main, required=["output_json"])


if __name__ == "__main__":
  run()
