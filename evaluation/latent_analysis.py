"""The latent report: how a model's z-points fill its latent space (tools.analyze_latents).

`analyze(z, options)` reads z-points [N, dim] (a memory map is fine: every pass is streamed in
chunks, so memory depends on dim, not N) and returns the JSON-safe report plus the arrays the
plots need (`Figures`): correlations (evaluation.correlation), component statistics and the
dominant components (evaluation.z_components), the study's slice (evaluation.slicing), the
geometry of the cloud against random vectors (evaluation.geometry), VAE active units and KL,
and the total correlation. The data cloud is the Gaussian that tools.generate's `gaussian`
sampler fits too: the sample covariance, or Ledoit-Wolf shrinkage with fewer than 10 points
per dimension. docs/LATENTS.md defines every number.
"""

import dataclasses
import io
import json
import os

import numpy as np

from data_pipeline import provenance
from data_pipeline.manifest import read_manifest
from evaluation import correlation
from evaluation import encoding
from evaluation import geometry
from evaluation import plots
from evaluation import samplers
from evaluation import slicing
from evaluation import z_components
from evaluation import zpoints
from evaluation.errors import EvaluationError
from evaluation.errors import FlagValueError
from modeling import run_dir

RANDOM_NORMAL = "normal"


@dataclasses.dataclass(frozen=True)
class Options:
  """The analysis settings (tools.analyze_latents' flags)."""

  num_samples: int | None = None
  seed: int = 0
  thresholds: tuple = correlation.DEFAULT_THRESHOLDS
  pair_threshold: float = 0.5
  abs_mean_cutoff: float = z_components.DEFAULT_ABS_MEAN_CUTOFF
  half_width_cutoff: float = z_components.DEFAULT_HALF_WIDTH_CUTOFF
  bin_width: float | None = None
  slice_components: tuple | None = None
  slice_threshold: float = 2.0
  uniform_b: tuple = (0.5, 1.0, 1.5, 2.0, 4.0)
  num_random: int = 10000
  inside_quantile: float = 0.99
  active_unit_threshold: float = z_components.ACTIVE_UNIT_VARIANCE
  scatter_b: float = 4.0
  num_scatter_pairs: int = 6
  num_scatter_points: int = 5000
  num_histograms: int = 12
  data_point: int = 0
  chunk_rows: int = correlation.DEFAULT_CHUNK_ROWS


@dataclasses.dataclass
class Figures:
  """What the plots show (evaluation.plots), computed once by `analyze`."""

  histograms: list          # [(component index, bin centres, counts, mean, half_width)]
  scatter_pairs: list       # [[i, j, r]] strongest first
  scatter_data: np.ndarray  # [M, dim] a seeded subset of the data points
  scatter_random: np.ndarray  # [K, dim] uniform random vectors in [-scatter_b, scatter_b]
  scatter_b: float
  chosen_point: np.ndarray  # [dim] the data point --data_point
  chosen_index: int
  data_radius: np.ndarray   # [N'] radii of the analysed data points
  random_radius: dict       # label -> radii [num_random]
  correlation: np.ndarray   # [dim, dim]


# One independent random stream per purpose, so that changing one setting (say --num_random)
# never changes the numbers of another stage. The subset of rows is correlation.sample_rows'.
_PURPOSES = ("uniform", "normal", "scatter_points", "scatter_random")


def _rng(seed, purpose):
  return np.random.default_rng([int(seed), _PURPOSES.index(purpose)])


def random_vectors(options, dim):
  """Yields (label, expected RMS radius, [num_random, dim] vectors), one kind at a time.

  Uniform in [-b, b] per component for each b of uniform_b ("uniform_b=1": E|z|^2 = dim b^2/3),
  then N(0, I) ("normal": E|z|^2 = dim). One kind is held at a time (dim 1600 x 10,000 float64
  is 128 MB).
  """
  uniform_rng = _rng(options.seed, "uniform")
  for b in options.uniform_b:
    yield (f"uniform_b={correlation.threshold_label(b)}", float(np.sqrt(dim * b * b / 3.0)),
           uniform_rng.uniform(-b, b, size=(options.num_random, dim)))
  yield (RANDOM_NORMAL, float(np.sqrt(dim)),
         _rng(options.seed, "normal").standard_normal((options.num_random, dim)))


def fit_cloud(z, rows, moments):
  """The Gaussian of the data cloud (see the module docstring) and notes on how it was fitted."""
  dim = z.shape[1]
  if moments.count < samplers.POINTS_PER_DIM_FOR_EMPIRICAL * dim:
    points = np.asarray(z if rows is None else z[rows], np.float64)
    return geometry.GaussianCloud.fit(points)
  return geometry.GaussianCloud(moments.mean.copy(), moments.covariance(ddof=1), ())


def _streamed(z, rows, chunk_rows, fn):
  return np.concatenate([fn(chunk) for chunk in zpoints.iter_chunks(z, chunk_rows, rows)])


def geometry_section(z, rows, moments, options):
  """Radii and inside-the-cloud fractions of the data and of random vectors."""
  cloud = fit_cloud(z, rows, moments)
  cutoff = cloud.threshold(options.inside_quantile)
  data_radius = _streamed(z, rows, options.chunk_rows, lambda c: np.linalg.norm(c, axis=1))
  data_inside = _streamed(z, rows, options.chunk_rows,
                          lambda c: cloud.mahalanobis_sq(c) <= cutoff)
  dim = z.shape[1]
  kinds, radii = {}, {}
  for label, expected, vectors in random_vectors(options, dim):
    radii[label] = np.linalg.norm(vectors, axis=1)
    kinds[label] = {"radius": geometry.radius_summary(radii[label]),
                    "expected_rms_radius": expected,
                    "inside_fraction": float(cloud.inside_fraction(vectors,
                                                                   options.inside_quantile))}
  section = {
      "data": {"radius": geometry.radius_summary(data_radius),
               "inside_fraction": float(np.mean(data_inside))},
      "random": kinds,
      "num_random": int(options.num_random),
      "inside_test": {"quantile": float(options.inside_quantile),
                      "chi2_cutoff": cutoff, "degrees_of_freedom": dim,
                      "covariance": ("ledoit_wolf" if cloud.notes else "empirical"),
                      "notes": list(cloud.notes)},
      "centre": cloud.centre_offset(),
  }
  return section, data_radius, radii


def _vae_section(z, moments, log_var, options):
  variance = moments.variance(ddof=0)
  section = {"active_units": z_components.active_units(variance, options.active_unit_threshold)}
  if log_var is not None:
    kl = z_components.kl_per_dimension(z, log_var, options.chunk_rows)
    order = np.argsort(-kl, kind="stable")
    section["kl_per_dimension"] = {
        "unit": "nats per image", "total": float(kl.sum()),
        "values": [float(v) for v in kl],
        "largest": [{"index": int(j), "kl": float(kl[j])} for j in order[:10]]}
  return section


def _slice_components(options, r, dim):
  if options.slice_components is not None:
    return tuple(int(c) for c in options.slice_components), "given"
  if dim < 2:
    return None, "needs two components"
  strongest = correlation.strongest_pairs(r, 1)[0]
  return (strongest[0], strongest[1]), "the most strongly correlated pair"


def analyze(z, options, *, log_var=None, kind=None):
  """Computes the latent report of z-points [N, dim].

  Args:
    z: [N, dim] z-points (array or memory-mapped file; checked by zpoints.load_z_points).
    options: Options.
    log_var: optional [N, dim] VAE log-variances of the same rows (KL per dimension).
    kind: "ae", "vae" or None (unknown); the vae section is written for "vae".

  Returns:
    (report dict, Figures).

  Raises:
    EvaluationError: settings that do not fit the data (e.g. a slice component >= dim).
  """
  n, dim = z.shape
  if n < 2:
    raise EvaluationError(f"the latent analysis needs at least 2 z-points, got {n}")
  if not 0 <= options.data_point < n:
    raise EvaluationError(f"--data_point {options.data_point} is not a row of the {n} z-points")
  rows = correlation.sample_rows(n, options.num_samples, options.seed)
  moments = correlation.accumulate(z, rows, options.chunk_rows)
  r = moments.correlation()
  constant = moments.constant_components()
  components, histograms, hist_settings = z_components.component_statistics(
      z, moments, rows, options.bin_width, options.chunk_rows)
  dominant = z_components.dominant_components(components, options.abs_mean_cutoff,
                                            options.half_width_cutoff)
  slice_components, slice_why = _slice_components(options, r, dim)
  slice_report = None
  if slice_components is not None:
    slice_report, _ = slicing.study_slice(z, slice_components, options.slice_threshold, rows,
                                          options.chunk_rows)
    slice_report["chosen"] = slice_why
  geometry_report, data_radius, random_radius = geometry_section(z, rows, moments, options)
  report = {
      "num_vectors": int(n), "dim": int(dim), "kind": kind,
      "rows_used": {"mode": "all" if rows is None else "seeded subset",
                    "count": int(moments.count)},
      "counts": correlation.counts_above(r, options.thresholds),
      "pairs": correlation.pairs_above(r, options.pair_threshold),
      "pair_threshold": float(options.pair_threshold),
      "strongest_pairs": correlation.strongest_pairs(r, 20),
      "constant_components": [int(c) for c in constant],
      "components": components,
      "histograms": hist_settings,
      "dominant": dominant,
      "slice": slice_report,
      "geometry": geometry_report,
      "total_correlation": {"unit": "nats",
                            "gaussian": z_components.gaussian_total_correlation(r, constant)},
  }
  if kind == "vae":
    report["vae"] = _vae_section(z, moments, log_var, options)
  figures = _figures(z, rows, options, components, histograms, r, data_radius, random_radius)
  return report, figures


def _figures(z, rows, options, components, histograms, r, data_radius, random_radius):
  """The arrays of the plots: dominant histograms, scatter points, radii, correlation."""
  top = z_components.most_dominant(components, options.num_histograms, options.abs_mean_cutoff,
                                 options.half_width_cutoff)
  shown = []
  for j in top:
    centres, counts = histograms.component(j)
    shown.append((j, centres, counts, components[j]["mean"], components[j]["half_width"]))
  pool = np.arange(len(z)) if rows is None else rows
  take = min(len(pool), options.num_scatter_points)
  picked = np.sort(_rng(options.seed, "scatter_points").choice(pool, size=take, replace=False))
  # The scatter plots get their own few hundred random vectors (as the study shows), at b
  # = scatter_b, which need not be one of uniform_b.
  scatter_random = _rng(options.seed, "scatter_random").uniform(
      -options.scatter_b, options.scatter_b, size=(min(options.num_random, 500), z.shape[1]))
  return Figures(
      histograms=shown,
      scatter_pairs=correlation.strongest_pairs(r, options.num_scatter_pairs),
      scatter_data=np.asarray(z[picked], np.float64), scatter_random=scatter_random,
      scatter_b=float(options.scatter_b),
      chosen_point=np.asarray(z[options.data_point], np.float64),
      chosen_index=int(options.data_point), data_radius=data_radius,
      random_radius=random_radius, correlation=r)


@dataclasses.dataclass(frozen=True)
class Source:
  """Where tools.analyze_latents takes the z-points from (its input flags, parsed).

  Attributes:
    z_points: a z-point file [N, dim] (tools.encode), or None to encode a split first.
    log_var: the VAE log-variances of the same rows; None: Z.log_var.npy beside the z-points
      when it exists.
    kind: "ae", "vae" or "auto": the kind recorded in Z.json beside the z-points, else "vae"
      when log-variances exist.
    model_dir: without z_points, the run whose encoder encodes data_dir's split into
      OUTPUT_DIR/z_points.npy (with its log-variances for a VAE).
    data_dir: the prepared data dir encoded with model_dir.
    split: the split encoded.
    max_images: encode only the split's first N images.
    checkpoint: the model file of model_dir ("final" or "best").
  """

  z_points: str | None = None
  log_var: str | None = None
  kind: str = "auto"
  model_dir: str | None = None
  data_dir: str | None = None
  split: str = "train"
  max_images: int | None = None
  checkpoint: str = "final"


ENCODED_FILE = "z_points.npy"  # In the output dir, when the tool encodes the z-points itself.


def recorded_kind(z_path):
  """The model kind ("ae"/"vae") that tools.encode recorded in Z.json beside Z.npy, or None."""
  try:
    with open(encoding.provenance_path(z_path), encoding="utf-8") as f:
      return json.load(f)["model"]["kind"]
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _encode_first(source, output_dir):
  """Encodes source.data_dir's split with source.model_dir; returns (z path, model kind)."""
  read_manifest(source.data_dir)  # A wrong --data_dir is named before the model loads.
  run = run_dir.load_run(source.model_dir, source.checkpoint)
  path = os.path.join(output_dir, ENCODED_FILE)
  encoding.encode_split(run, source.data_dir, source.split, path, max_images=source.max_images,
                        with_log_var=run.config.kind == "vae", checkpoint=source.checkpoint)
  return path, run.config.kind


def _npy_bytes(array):
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array, np.float64), allow_pickle=False)
  return buffer.getvalue()


def run(source, options, output_dir, flags=None):
  """The latent report of tools.analyze_latents: z-points in, report and files out.

  Args:
    source: a Source (a z-point file, or a run dir and data dir to encode first).
    options: the analysis Options.
    output_dir: receives z_points.npy (+ its companions) when the z-points are encoded here.
    flags: the resolved flag values, recorded in the report.

  Returns:
    (report, files): latent_report.json's dict (analyze's sections plus plots, inputs, flags
    and provenance with the inputs' sha256) and {file name: bytes} of the four figures
    (evaluation.plots) and correlation.npy ([dim, dim] float64).

  Raises:
    FlagValueError: --log_var of another shape than the z-points, or --slice_components not
      below z_dim.
    EvaluationError, DataError, ModelError: unusable z-points, data or run dir.
  """
  if source.z_points:
    z_path, kind = source.z_points, recorded_kind(source.z_points)
  else:
    z_path, kind = _encode_first(source, output_dir)
  z = zpoints.load_z_points(z_path)
  log_var_path = source.log_var or zpoints.companion_path(z_path, "log_var")
  log_var = None
  if source.log_var or os.path.isfile(log_var_path):
    log_var = zpoints.load_z_points(log_var_path, what="--log_var")
    if log_var.shape != z.shape:
      raise FlagValueError(f"--log_var {log_var_path} has shape {log_var.shape} but the "
                           f"z-points {z.shape}; use the file tools.encode wrote beside them")
  if source.kind != "auto":
    kind = source.kind
  elif kind is None and log_var is not None:
    kind = "vae"
  if options.slice_components and max(options.slice_components) >= z.shape[1]:
    raise FlagValueError(f"--slice_components {','.join(map(str, options.slice_components))} "
                         f"must be below z_dim {z.shape[1]}")
  report, figures = analyze(z, options, log_var=log_var, kind=kind)
  label = f"{kind.upper() if kind else 'z-points'}, {report['rows_used']['count']} vectors"
  files = plots.render_all(figures, label)
  report["plots"] = {name: file for name, file in sorted(plots.FILES.items()) if file in files}
  files["correlation.npy"] = _npy_bytes(figures.correlation)
  inputs = {z_path: provenance.sha256_file(z_path)}
  if log_var is not None:
    inputs[log_var_path] = provenance.sha256_file(log_var_path)
  report["inputs"] = {"z_points": os.path.abspath(z_path),
                      "log_var": os.path.abspath(log_var_path) if log_var is not None else None}
  report["flags"] = dict(sorted((flags or {}).items()))
  report["provenance"] = provenance.describe_run(options.seed, inputs)
  return report, files
