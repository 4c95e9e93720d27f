"""How z-points fill the latent space: component statistics, exact correlations, geometry.

    python -m tools.analyze_latents --z_points=Z.npy --output_dir=EVAL
    python -m tools.analyze_latents --model_dir=RUN --data_dir=DATA --output_dir=EVAL

The second form encodes --split first. Every statistic is streamed over the z-point file, so
memory depends on z_dim, not on the number of vectors; correlations use all vectors unless
--num_samples asks for the study's seeded random subset. Writes latent_report.json (defined in
docs/LATENTS.md; the same input and seed give byte-identical JSON), correlation.npy, four plots
(component histograms, correlated pairs, radii, correlation heatmap) and flags.txt.
--output_dir is locked while it runs.
"""

from absl import flags
from absl import logging

from data_pipeline import locking
from evaluation import latent_analysis
from tools import _cli
from tools import flags_data
from tools import flags_eval
from tools import outputs

FLAGS = flags.FLAGS

flags.DEFINE_string("z_points", None, "z-points .npy written by tools.encode ([N, z_dim]).")
flags_eval.define_output_dir("the report, correlation.npy and plots")
flags_eval.define_model_dir("Instead of --z_points: a run dir whose encoder encodes "
                            "--data_dir's --split first.")
flags_data.define_data_dir("Prepared data dir encoded with --model_dir.")
flags_data.define_split("Split encoded with --model_dir.")
flags_eval.define_checkpoint("--model_dir")
flags_data.define_max_images("With --model_dir: encode only the split's first N images.",
                             lower_bound=2)
flags.DEFINE_string("log_var", None, "VAE log-variances of the same rows (tools.encode "
                    "--with_log_var), for the KL per dimension; default: Z.log_var.npy beside "
                    "--z_points when it exists.")
flags.DEFINE_enum("kind", "auto", ("auto", "ae", "vae"), "What made the z-points: auto = the "
                  "kind recorded in Z.json beside them (or vae when log-variances exist).")
flags.DEFINE_integer("num_samples", None, "Use a seeded random subset of this many vectors "
                     "(the study: 5000); default: all.", lower_bound=2)
flags_data.define_seed("Seed of the subset, the random vectors and the plotted points.")
flags.DEFINE_list("thresholds", ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"], "|r| thresholds of "
                  "the pair counts.")
flags.DEFINE_float("pair_threshold", 0.5, "List the pairs with |r| above this.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("abs_mean_cutoff", 0.5, "Dominant components: |mean| at least this ...",
                   lower_bound=0.0)
flags.DEFINE_float("half_width_cutoff", 1.5, "... or a half-width (FWHM) at least this.",
                   lower_bound=0.0)
flags.DEFINE_float("bin_width", None, "Fixed histogram bin width (e.g. 0.125, the study's "
                   "resolution); default: Scott's rule per component.")
flags.DEFINE_list("slice_components", None, "The two components the study's slice leaves "
                  "free (it used 177,195); default: the most strongly correlated pair.")
flags.DEFINE_float("slice_threshold", 2.0, "The slice keeps vectors whose other components "
                   "all have |z| below this.")
flags.DEFINE_list("uniform_b", ["0.5", "1", "1.5", "2", "4"], "Half-widths b of the random "
                  "vectors drawn uniform in [-b, b].")
flags.DEFINE_integer("num_random", 10000, "Random vectors per kind.", lower_bound=10)
flags.DEFINE_float("inside_quantile", 0.99, "Chi-square quantile of the inside-the-data-cloud "
                   "test.")
flags.DEFINE_float("scatter_b", 4.0, "b of the random vectors in the scatter plots (the "
                   "study's 4.0).")
flags.DEFINE_integer("num_scatter_pairs", 6, "Component pairs in the scatter grid.",
                     lower_bound=1, upper_bound=24)
flags.DEFINE_integer("num_histograms", 12, "Components in the histogram grid.", lower_bound=1,
                     upper_bound=48)
flags.DEFINE_integer("data_point", 0, "Row of the data point marked in the scatter plots.",
                     lower_bound=0)
flags.adopt_module_key_flags(flags_data)
flags.adopt_module_key_flags(flags_eval)

flags_eval.register_float_list("thresholds", "numbers in (0, 1), e.g. 0.1,0.5",
                               lambda v: 0.0 < v < 1.0)
flags_eval.register_float_list("uniform_b", "numbers > 0, e.g. 0.5,1,4", lambda v: v > 0.0)
flags.register_validator("inside_quantile", lambda q: 0.0 < q < 1.0,
                         message="--inside_quantile must lie in (0, 1), e.g. 0.99")
flags.register_validator("scatter_b", lambda b: b > 0, message="--scatter_b must be > 0")
flags.register_validator("slice_threshold", lambda t: t > 0,
                         message="--slice_threshold must be > 0")
flags.register_validator("bin_width", lambda w: w is None or w > 0,
                         message="--bin_width must be > 0")


def _slice_pair(values):
  if values is None:
    return True
  try:
    parsed = [int(v) for v in values]
  except ValueError:
    return False
  return len(parsed) == 2 and parsed[0] != parsed[1] and min(parsed) >= 0


flags.register_validator("slice_components", _slice_pair, message="--slice_components needs "
                         "two different component indices >= 0, e.g. 177,195")


def _one_source(f):
  if f["z_points"] and (f["model_dir"] or f["data_dir"]):
    raise flags.ValidationError("give either --z_points or --model_dir with --data_dir, not "
                                "both")
  if not f["z_points"] and not (f["model_dir"] and f["data_dir"]):
    raise flags.ValidationError("--z_points is required (or --model_dir and --data_dir to "
                                "encode first)")
  return True


flags.register_multi_flags_validator(["z_points", "model_dir", "data_dir"], _one_source)

_SOURCE_FLAGS = ("z_points", "log_var", "kind", "model_dir", "data_dir", "split", "max_images",
                 "checkpoint")
_OPTION_FLAGS = ("num_samples", "seed", "pair_threshold", "abs_mean_cutoff", "half_width_cutoff",
                 "bin_width", "slice_threshold", "num_random", "inside_quantile", "scatter_b",
                 "num_scatter_pairs", "num_histograms", "data_point")


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  source = latent_analysis.Source(**flags_eval.flag_values(_SOURCE_FLAGS))
  options = latent_analysis.Options(
      **flags_eval.flag_values(_OPTION_FLAGS),
      thresholds=flags_eval.parse_floats(FLAGS.thresholds),
      uniform_b=flags_eval.parse_floats(FLAGS.uniform_b),
      slice_components=(tuple(int(c) for c in FLAGS.slice_components)
                        if FLAGS.slice_components else None))
  # Created and locked before anything is written into it, until the report is complete.
  with (locking.output_dir(FLAGS.output_dir, "analyze_latents", "--output_dir"),
        flags_eval.flag_errors()):
    report, files = latent_analysis.run(
        source, options, FLAGS.output_dir,
        flags=flags_eval.flag_values(_SOURCE_FLAGS + _OPTION_FLAGS + (
            "thresholds", "uniform_b", "slice_components")))
    outputs.write_report(FLAGS.output_dir, "latent_report.json", report, files)
  counts = ", ".join(f"|r|>{t}: {n}" for t, n in report["counts"].items())
  logging.info("%d vectors x %d components: %s; %d dominant components; report in %s",
               report["num_vectors"], report["dim"], counts, report["dominant"]["count"],
               FLAGS.output_dir)


def run():
  _cli.run(main, required=["output_dir"])


if __name__ == "__main__":
  run()
