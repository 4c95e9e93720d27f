"""How z-points fill the latent space: component statistics, exact correlations, geometry.

    python -m tools.analyze_latents --z_points=Z.npy --output_dir=EVAL
    python -m tools.analyze_latents --model_dir=RUN --data_dir=DATA --output_dir=EVAL

The second form encodes --split first (into EVAL/z_points.npy, with the log-variances of a
VAE). Every statistic is streamed over the z-point file in chunks, so memory depends on z_dim,
not on the number of vectors; correlations use ALL vectors unless --num_samples asks for the
study's seeded random subset (it used 5,000).

Writes to --output_dir:
  latent_report.json       num_vectors, dim, counts, pairs, components, dominant, slice,
                           geometry, total_correlation (and vae for VAE z-points), plus the
                           inputs (sha256), seed, versions and flags; the same input and seed
                           give byte-identical JSON. docs/LATENTS.md defines every number.
  correlation.npy          the [dim, dim] float64 Pearson correlation matrix.
  component_histograms.png value histograms of the most dominant components.
  scatter_pairs.png        the most correlated pairs: data points, uniform random vectors at
                           --scatter_b, one data point (--data_point) and the origin.
  radius_histograms.png    L2 radius of the data vs random vectors.
  correlation_heatmap.png  the correlation matrix.
  flags.txt                the resolved flags (--flagfile reruns the analysis).
While it runs, --output_dir is locked (.lock, removed at the end): a second tool writing there is
refused with one line naming this one.
"""

import os

from absl import flags
from absl import logging

from tools import _cli

FLAGS = flags.FLAGS

SPLITS = ("train", "validation", "test")

flags.DEFINE_string("z_points", None, "z-points .npy written by tools.encode ([N, z_dim]).")
flags.DEFINE_string("output_dir", None, "Directory for the report, correlation.npy and plots "
                    "(created if needed; files of an earlier run are replaced).")
flags.DEFINE_string("model_dir", None, "Instead of --z_points: a run dir whose encoder encodes "
                    "--data_dir's --split first.")
flags.DEFINE_string("data_dir", None, "Prepared data dir encoded with --model_dir.")
flags.DEFINE_enum("split", "train", SPLITS, "Split encoded with --model_dir.")
flags.DEFINE_integer("max_images", None, "With --model_dir: encode only the split's first N "
                     "images.", lower_bound=2)
flags.DEFINE_string("log_var", None, "VAE log-variances of the same rows (tools.encode "
                    "--with_log_var), for the KL per dimension; default: Z.log_var.npy beside "
                    "--z_points when it exists.")
flags.DEFINE_enum("kind", "auto", ("auto", "ae", "vae"), "What made the z-points: auto = the "
                  "kind recorded in Z.json beside them (or vae when log-variances exist).")
flags.DEFINE_integer("num_samples", None, "Use a seeded random subset of this many vectors "
                     "(the study: 5000); default: all.", lower_bound=2)
flags.DEFINE_integer("seed", 0, "Seed of the subset, the random vectors and the plotted points.",
                     lower_bound=0)
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


def _floats(values):
  try:
    return tuple(float(v) for v in values)
  except (TypeError, ValueError):
    return None


def _float_list(name, low, high, what):
  def check(values):
    parsed = _floats(values or [])
    return bool(parsed) and all(low < v < high for v in parsed)
  flags.register_validator(name, check, message=f"--{name} needs a comma list of {what}")


_float_list("thresholds", 0.0, 1.0, "numbers in (0, 1), e.g. 0.1,0.5")
_float_list("uniform_b", 0.0, float("inf"), "numbers > 0, e.g. 0.5,1,4")
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


def _encode_first(output_dir):
  """Encodes --data_dir's --split with --model_dir into output_dir; returns (path, kind)."""
  # pylint: disable=g-import-not-at-top
  from data_pipeline.manifest import read_manifest
  from evaluation import encoding
  from modeling import run_dir
  # pylint: enable=g-import-not-at-top
  read_manifest(FLAGS.data_dir)
  run = run_dir.load_run(FLAGS.model_dir)
  path = os.path.join(output_dir, "z_points.npy")
  encoding.encode_split(run, FLAGS.data_dir, FLAGS.split, path, max_images=FLAGS.max_images,
                        with_log_var=run.config.kind == "vae")
  return path, run.config.kind


def _recorded_kind(z_path):
  """The model kind recorded in Z.json by tools.encode, if any."""
  import json  # pylint: disable=g-import-not-at-top
  from evaluation import encoding  # pylint: disable=g-import-not-at-top
  try:
    with open(encoding.provenance_path(z_path), encoding="utf-8") as f:
      return json.load(f)["model"]["kind"]
  except (OSError, ValueError, KeyError, TypeError):
    return None


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  from data_pipeline import locking  # pylint: disable=g-import-not-at-top
  # Created and locked before anything is written into it, until the report is complete.
  with locking.output_dir(FLAGS.output_dir, "analyze_latents", "--output_dir"):
    _analyze()


def _analyze():
  # pylint: disable=g-import-not-at-top
  from data_pipeline import provenance
  from evaluation import latent_analysis
  from evaluation import plots
  from evaluation import zpoints
  # pylint: enable=g-import-not-at-top
  if FLAGS.z_points:
    z_path, kind = FLAGS.z_points, _recorded_kind(FLAGS.z_points)
  else:
    z_path, kind = _encode_first(FLAGS.output_dir)
  z = zpoints.load_z_points(z_path)
  log_var_path = FLAGS.log_var or zpoints.companion_path(z_path, "log_var")
  log_var = None
  if FLAGS.log_var or os.path.isfile(log_var_path):
    log_var = zpoints.load_z_points(log_var_path, what="--log_var")
    if log_var.shape != z.shape:
      raise _cli.FlagError(f"--log_var {log_var_path} has shape {log_var.shape} but the "
                           f"z-points {z.shape}; use the file tools.encode wrote beside them")
  if FLAGS.kind != "auto":
    kind = FLAGS.kind
  elif kind is None and log_var is not None:
    kind = "vae"
  if FLAGS.slice_components and max(map(int, FLAGS.slice_components)) >= z.shape[1]:
    raise _cli.FlagError(f"--slice_components {','.join(FLAGS.slice_components)} must be "
                         f"below z_dim {z.shape[1]}")
  options = latent_analysis.Options(
      num_samples=FLAGS.num_samples, seed=FLAGS.seed, thresholds=_floats(FLAGS.thresholds),
      pair_threshold=FLAGS.pair_threshold, abs_mean_cutoff=FLAGS.abs_mean_cutoff,
      half_width_cutoff=FLAGS.half_width_cutoff, bin_width=FLAGS.bin_width,
      slice_components=(tuple(int(c) for c in FLAGS.slice_components)
                        if FLAGS.slice_components else None),
      slice_threshold=FLAGS.slice_threshold, uniform_b=_floats(FLAGS.uniform_b),
      num_random=FLAGS.num_random, inside_quantile=FLAGS.inside_quantile,
      scatter_b=FLAGS.scatter_b, num_scatter_pairs=FLAGS.num_scatter_pairs,
      num_histograms=FLAGS.num_histograms, data_point=FLAGS.data_point)
  report, figures = latent_analysis.analyze(z, options, log_var=log_var, kind=kind)
  label = f"{kind.upper() if kind else 'z-points'}, {report['rows_used']['count']} vectors"
  report["plots"] = plots.write_all(figures, FLAGS.output_dir, label)
  provenance.atomic_write_bytes(os.path.join(FLAGS.output_dir, "correlation.npy"),
                                _npy_bytes(figures.correlation))
  inputs = {z_path: provenance.sha256_file(z_path)}
  if log_var is not None:
    inputs[log_var_path] = provenance.sha256_file(log_var_path)
  report["inputs"] = {"z_points": os.path.abspath(z_path),
                      "log_var": os.path.abspath(log_var_path) if log_var is not None else None}
  report["flags"] = {name: FLAGS[name].value for name in sorted(
      ("z_points", "model_dir", "data_dir", "split", "max_images", "log_var", "kind",
       "num_samples", "seed", "thresholds", "pair_threshold", "abs_mean_cutoff",
       "half_width_cutoff", "bin_width", "slice_components", "slice_threshold", "uniform_b",
       "num_random", "inside_quantile", "scatter_b", "num_scatter_pairs", "num_histograms",
       "data_point"))}
  report["provenance"] = provenance.describe_run(FLAGS.seed, inputs)
  _cli.write_flagfile(os.path.join(FLAGS.output_dir, "flags.txt"))
  provenance.atomic_write_json(os.path.join(FLAGS.output_dir, "latent_report.json"), report)
  counts = ", ".join(f"|r|>{t}: {n}" for t, n in report["counts"].items())
  logging.info("%d vectors x %d components: %s; %d dominant components; report in %s",
               report["num_vectors"], report["dim"], counts, report["dominant"]["count"],
               FLAGS.output_dir)


def _npy_bytes(array):
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array, np.float64), allow_pickle=False)
  return buffer.getvalue()


def run():
  _cli.run(main, required=["output_dir"])


if __name__ == "__main__":
  run()
