"""Figures as PNG bytes (matplotlib, Agg backend): the latent report's and the study's trade-off.

Each function takes numbers computed elsewhere (evaluation.latent_analysis, the study's sweep)
and returns one titled figure with labelled axes (and a legend where there is more than one kind
of mark) as PNG bytes; the caller writes them atomically. The PNG metadata carries no date, so
the same numbers give the same bytes.
"""

import io
import math

import matplotlib

matplotlib.use("Agg")  # Files only; must precede pyplot's import on machines without a display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

_DPI = 100
# The report's name of each figure -> its file (latent_report.json "plots").
FILES = {"correlation": "correlation_heatmap.png", "histograms": "component_histograms.png",
         "radius": "radius_histograms.png", "scatter": "scatter_pairs.png"}
_METADATA = {"Software": None}  # No version string: identical numbers -> identical bytes.


def _png(fig):
  """The figure as PNG bytes; the figure is closed (pyplot keeps every open one in memory)."""
  buffer = io.BytesIO()
  try:
    fig.savefig(buffer, format="png", dpi=_DPI, metadata=_METADATA)
  finally:
    plt.close(fig)
  return buffer.getvalue()


def _grid(count, columns):
  columns = max(1, min(columns, count))
  return math.ceil(count / columns), columns


def component_histograms(histograms, title):
  """One histogram per component [(index, centres, counts, mean, half_width)], in a grid."""
  rows, columns = _grid(len(histograms), 4)
  fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
  for ax in axes.flat[len(histograms):]:
    ax.axis("off")
  for ax, (index, centres, counts, mean, half_width) in zip(axes.flat, histograms):
    width = centres[1] - centres[0] if len(centres) > 1 else 1.0
    ax.bar(centres, counts, width=width, color="tab:blue", label="z-points")
    ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.2f}")
    peak = counts.max() if len(counts) else 0
    ax.hlines(peak / 2, mean - half_width / 2, mean + half_width / 2, color="tab:orange",
              label=f"half-width {half_width:.2f}")
    ax.set_title(f"component {index}")
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  return _png(fig)


def scatter_pairs(figures, title):
  """The study's scatter grid: data points, random uniform vectors, one data point, the origin."""
  pairs = figures.scatter_pairs
  rows, columns = _grid(len(pairs), 3)
  fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 4 * rows), squeeze=False)
  for ax in axes.flat[len(pairs):]:
    ax.axis("off")
  data, rand, point = figures.scatter_data, figures.scatter_random, figures.chosen_point
  for ax, (i, j, r) in zip(axes.flat, pairs):
    ax.scatter(data[:, i], data[:, j], s=0.8, color="tab:blue",
               label=f"{len(data)} data z-points")
    ax.scatter(rand[:, i], rand[:, j], s=6, color="tab:red", alpha=0.6,
               label=f"{len(rand)} uniform random, b={figures.scatter_b:g}")
    ax.scatter([point[i]], [point[j]], s=60, color="orange", edgecolors="black",
               label=f"data point {figures.chosen_index}")
    ax.scatter([0], [0], s=70, color="yellow", edgecolors="black", label="origin")
    ax.set_title(f"components {i} and {j} (r = {r:+.3f})")
    ax.set_xlabel(f"z[{i}]")
    ax.set_ylabel(f"z[{j}]")
  axes.flat[0].legend(fontsize=7, loc="best")
  fig.suptitle(title)
  fig.tight_layout()
  return _png(fig)


def radius_histograms(data_radius, random_radius, title):
  """Histograms of the L2 radius of the data and of each kind of random vector."""
  fig, ax = plt.subplots(figsize=(9, 5))
  everything = [data_radius, *random_radius.values()]
  high = max(float(np.max(r)) for r in everything)
  bins = np.linspace(0.0, high * 1.02 if high > 0 else 1.0, 120)
  ax.hist(data_radius, bins=bins, density=True, alpha=0.7, color="tab:blue", label="data")
  for label, radius in random_radius.items():
    ax.hist(radius, bins=bins, density=True, histtype="step", linewidth=1.5, label=label)
  ax.set_xlabel("L2 radius |z|")
  ax.set_ylabel("density")
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _png(fig)


def correlation_heatmap(r, title):
  """The [dim, dim] Pearson correlation matrix, diverging colours from -1 to 1."""
  fig, ax = plt.subplots(figsize=(7.5, 6.5))
  image = ax.imshow(r, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
  fig.colorbar(image, ax=ax, label="Pearson r")
  ax.set_xlabel("component j")
  ax.set_ylabel("component i")
  ax.set_title(title)
  fig.tight_layout()
  return _png(fig)


def render_all(figures, label):
  """Every figure of the latent report: {file name (FILES): PNG bytes}.

  Args:
    figures: the latent_analysis.Figures of a report.
    label: what the z-points are, appended to every title (e.g. "VAE, 52 vectors").
  """
  rendered = {
      "histograms": component_histograms(
          figures.histograms, f"Value histograms of the {len(figures.histograms)} most "
          f"dominant components ({label})"),
      "radius": radius_histograms(figures.data_radius, figures.random_radius,
                                  f"L2 radius of data z-points vs random vectors ({label})"),
      "correlation": correlation_heatmap(figures.correlation,
                                         f"Correlation of latent components ({label})"),
  }
  if figures.scatter_pairs:  # A one-dimensional latent space has no pairs.
    rendered["scatter"] = scatter_pairs(figures, f"Most correlated component pairs ({label})")
  return {FILES[name]: png for name, png in rendered.items()}


def tradeoff(records, ae, study_kl_factor):
  """The study's trade-off: test PSNR and N(0, I) face score against the KL factor.

  Args:
    records: the sweep's records (workflows.study.sweep_records): dicts with `kl_factor`,
      `psnr` (dB or None) and `face_score` ({`mean`, `ci95`} or None), one per VAE.
    ae: the AE's record (its samples from a fitted GMM), drawn as dashed lines.
    study_kl_factor: the study's own factor, marked on both panels.

  Returns:
    PNG bytes of a two-panel figure.
  """
  shown = [r for r in records if r["psnr"] is not None and r["face_score"]]
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  x = [r["kl_factor"] for r in shown]
  left.plot(x, [r["psnr"] for r in shown], "o-", label="VAE, test reconstructions")
  score = [r["face_score"]["mean"] for r in shown]
  low = [s - (r["face_score"]["ci95"][0] or s) for s, r in zip(score, shown)]
  high = [(r["face_score"]["ci95"][1] or s) - s for s, r in zip(score, shown)]
  right.errorbar(x, score, yerr=[low, high], fmt="o-", capsize=3, label="VAE, N(0, I) samples")
  if ae["psnr"] is not None:
    left.axhline(ae["psnr"], color="grey", linestyle="--", label="AE")
  if ae["face_score"]:
    right.axhline(ae["face_score"]["mean"], color="grey", linestyle="--",
                  label="AE, samples of its fitted GMM")
  for axis, ylabel in ((left, "test PSNR (dB)"), (right, "face score [95 %]")):
    axis.axvline(study_kl_factor, color="red", alpha=0.3,
                 label=f"the study's factor {study_kl_factor:g}")
    if x and min(x) > 0:
      axis.set_xscale("log")
      axis.minorticks_off()  # Ticks at the swept factors only, labelled as plain numbers.
      axis.set_xticks(x, [f"{v:g}" for v in x])
    axis.margins(x=0.08)  # Keeps the end points (and the study's line) off the frame.
    axis.set_xlabel("kl_factor")
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
  right.set_ylim(0, 1)
  fig.suptitle("Reproduction against generation over the KL factor")
  fig.tight_layout()
  return _png(fig)
