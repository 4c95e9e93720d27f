"""Per-component statistics of z-points: what the study read off its value histograms.

The study listed, for its "dominant" components, the centre `mu` and half-width `hw` of each
component's value histogram, read off plots in steps of 0.125. Here they are computed over all
points: exact mean and std, the half-width as the full width at half maximum (FWHM) of the
histogram (bins by Scott's rule, 3.49 std N^(-1/3), or a fixed `bin_width`), and the peak.
Dominant components: |mean| >= `abs_mean_cutoff` or half_width >= `half_width_cutoff`. For a
VAE: active units (Burda, Grosse & Salakhutdinov 2016: variance of the mean over the data
> 0.01) and the KL per dimension; for any cloud, the Gaussian total correlation
-0.5 log det R. docs/LATENTS.md defines every number exactly.
"""

import math

import numpy as np

from evaluation import zpoints
from evaluation.errors import EvaluationError

GAUSSIAN_FWHM_PER_STD = 2.0 * math.sqrt(2.0 * math.log(2.0))
MAX_BINS = 4096  # Per component; a wider range (far outliers) gets wider bins.
DEFAULT_ABS_MEAN_CUTOFF = 0.5
DEFAULT_HALF_WIDTH_CUTOFF = 1.5
ACTIVE_UNIT_VARIANCE = 0.01


def bin_layout(minimum, maximum, std, count, bin_width=None):
  """Per-component histogram bins: (low edges [dim], widths [dim], bin counts [dim]).

  Args:
    minimum, maximum, std: per-component [dim] arrays.
    count: number of points N.
    bin_width: a fixed width for every component, or None for Scott's rule per component.
  """
  minimum, maximum, std = (np.asarray(a, np.float64) for a in (minimum, maximum, std))
  if bin_width is None:
    width = 3.49 * std * float(count) ** (-1.0 / 3.0)
  else:
    if bin_width <= 0:
      raise EvaluationError(f"the histogram bin width must be > 0, got {bin_width}")
    width = np.full(len(std), float(bin_width))
  span = maximum - minimum
  # Constant components: one bin; components with a huge range: widen to at most MAX_BINS.
  width = np.where(width > 0, width, np.where(span > 0, span, 1.0))
  width = np.maximum(width, span / (MAX_BINS - 1))
  low = np.floor(minimum / width) * width
  if bin_width is None:
    # A constant component's one bin is centred on its value, so that its peak is that value
    # (not the centre of an arbitrary unit bin: 0.5 for a dead unit that is always 0).
    low = np.where(span > 0, low, minimum - width / 2)
  bins = np.floor((maximum - low) / width).astype(np.int64) + 1
  return low, width, np.clip(bins, 1, MAX_BINS)


class StreamingHistograms:
  """One histogram per component with its own bins, filled chunk by chunk (one bincount)."""

  def __init__(self, low, width, bins):
    self.low, self.width = np.asarray(low, np.float64), np.asarray(width, np.float64)
    self.bins = np.asarray(bins, np.int64)
    self.offsets = np.concatenate([[0], np.cumsum(self.bins)[:-1]])
    self.counts = np.zeros(int(self.bins.sum()), np.int64)

  def update(self, chunk):
    index = np.floor((chunk - self.low) / self.width).astype(np.int64)
    np.clip(index, 0, self.bins - 1, out=index)
    index += self.offsets
    self.counts += np.bincount(index.ravel(), minlength=len(self.counts))
    return self

  def component(self, j):
    """(bin centres, counts) of component j."""
    start, size = self.offsets[j], self.bins[j]
    centres = self.low[j] + (np.arange(size) + 0.5) * self.width[j]
    return centres, self.counts[start:start + size]


def full_width_at_half_maximum(centres, counts):
  """FWHM of a histogram and the centre of its highest bin (docs/LATENTS.md, `half_width`).

  Returns:
    (half_width, peak); half_width 0 for a histogram with a single occupied bin and no
    neighbours to interpolate towards, which only a constant component has.
  """
  counts = np.asarray(counts, np.float64)
  width = centres[1] - centres[0] if len(centres) > 1 else 0.0
  peak = int(np.argmax(counts))
  half = counts[peak] / 2.0
  if counts[peak] == 0 or len(counts) == 1:
    return 0.0, float(centres[peak])
  padded = np.concatenate([[0.0], counts, [0.0]])  # An empty bin beyond each end.
  x = np.concatenate([[centres[0] - width], centres, [centres[-1] + width]])
  k = peak + 1
  left = k
  while padded[left - 1] >= half:
    left -= 1
  right = k
  while padded[right + 1] >= half:
    right += 1

  def crossing(inside, outside):
    frac = (padded[inside] - half) / (padded[inside] - padded[outside])
    return x[inside] + frac * (x[outside] - x[inside])

  return float(crossing(right, right + 1) - crossing(left, left - 1)), float(centres[peak])


def component_statistics(z, moments, rows=None, bin_width=None, chunk_rows=16384):
  """Per-component mean, std, half_width (FWHM), peak, min, max of z-points.

  Args:
    z: [N, dim] z-points (array or memmap).
    moments: a correlation.StreamingCorrelation over the same rows (mean and variance).
    rows: optional sorted indices of the rows used (default all).
    bin_width: fixed histogram bin width, or None for Scott's rule per component.
    chunk_rows: rows per chunk of the streaming pass.

  Returns:
    (list of per-component dicts in index order, the StreamingHistograms (for plots),
    settings dict).
  """
  dim = z.shape[1]
  minimum, maximum = np.full(dim, np.inf), np.full(dim, -np.inf)
  for chunk in zpoints.iter_chunks(z, chunk_rows, rows):
    np.minimum(minimum, chunk.min(axis=0), out=minimum)
    np.maximum(maximum, chunk.max(axis=0), out=maximum)
  std = np.sqrt(moments.variance(ddof=0))
  # Rounding leaves constant components a std of ~1e-14 that depends on the chunking; it is 0.
  std[moments.constant_components()] = 0.0
  low, width, bins = bin_layout(minimum, maximum, std, moments.count, bin_width)
  histograms = StreamingHistograms(low, width, bins)
  for chunk in zpoints.iter_chunks(z, chunk_rows, rows):
    histograms.update(chunk)
  components = []
  for j in range(dim):
    centres, counts = histograms.component(j)
    half_width, peak = full_width_at_half_maximum(centres, counts)
    components.append({
        "index": j, "mean": float(moments.mean[j]), "std": float(std[j]),
        "half_width": half_width, "half_width_gaussian": float(GAUSSIAN_FWHM_PER_STD * std[j]),
        "peak": peak, "min": float(minimum[j]), "max": float(maximum[j]),
        "bin_width": float(width[j])})
  settings = {"bins": "scott" if bin_width is None else "fixed",
              "bin_width": None if bin_width is None else float(bin_width)}
  return components, histograms, settings


def dominant_components(components, abs_mean_cutoff=DEFAULT_ABS_MEAN_CUTOFF,
                        half_width_cutoff=DEFAULT_HALF_WIDTH_CUTOFF):
  """The components with |mean| >= abs_mean_cutoff or half_width >= half_width_cutoff.

  Returns:
    {"abs_mean_cutoff", "half_width_cutoff", "count", "components": [{"index", "mean",
    "half_width", "large_mean", "large_width", "score"}]} in index order; `score` is
    max(|mean| / abs_mean_cutoff, half_width / half_width_cutoff), >= 1 for every entry.
  """
  entries = []
  for c in components:
    large_mean = abs(c["mean"]) >= abs_mean_cutoff
    large_width = c["half_width"] >= half_width_cutoff
    if large_mean or large_width:
      entries.append({"index": c["index"], "mean": c["mean"], "half_width": c["half_width"],
                       "large_mean": bool(large_mean), "large_width": bool(large_width),
                       "score": float(max(abs(c["mean"]) / abs_mean_cutoff,
                                          c["half_width"] / half_width_cutoff))})
  return {"abs_mean_cutoff": float(abs_mean_cutoff),
          "half_width_cutoff": float(half_width_cutoff),
          "count": len(entries), "components": entries}


def most_dominant(components, num, abs_mean_cutoff=DEFAULT_ABS_MEAN_CUTOFF,
                  half_width_cutoff=DEFAULT_HALF_WIDTH_CUTOFF):
  """Indices of the `num` components with the largest dominance score (ties by index)."""
  scores = np.array([max(abs(c["mean"]) / abs_mean_cutoff, c["half_width"] / half_width_cutoff)
                     for c in components])
  order = np.lexsort((np.arange(len(scores)), -scores))
  return [int(j) for j in order[:int(num)]]


def active_units(variance_of_mean, threshold=ACTIVE_UNIT_VARIANCE):
  """{"threshold", "count", "indices"}: components whose mean varies with variance > threshold."""
  active = np.flatnonzero(np.asarray(variance_of_mean) > threshold)
  return {"threshold": float(threshold), "count": int(len(active)),
          "indices": [int(j) for j in active]}


def kl_per_dimension(z_mean, log_var, chunk_rows=16384):
  """Data average of KL(q(z_j|x) || N(0, 1)) per dimension [dim], in nats, streamed.

  KL_j = 0.5 (mu_j^2 + exp(log_var_j) - 1 - log_var_j), averaged over the points.
  """
  if z_mean.shape != log_var.shape:
    raise EvaluationError(f"the log-variances have shape {log_var.shape} but the z-points "
                          f"{z_mean.shape}; re-encode both with tools.encode --with_log_var")
  total = np.zeros(z_mean.shape[1])
  for mu, lv in zip(zpoints.iter_chunks(z_mean, chunk_rows),
                    zpoints.iter_chunks(log_var, chunk_rows)):
    total += (0.5 * (mu * mu + np.exp(lv) - 1.0 - lv)).sum(axis=0)
  return total / len(z_mean)


def gaussian_total_correlation(r, constant=()):
  """-0.5 log det R (nats) over the non-constant components; None if R is singular."""
  keep = np.setdiff1d(np.arange(len(r)), np.asarray(constant, np.int64))
  if len(keep) == 0:
    return None
  sign, logdet = np.linalg.slogdet(r[np.ix_(keep, keep)])
  if sign <= 0 or not np.isfinite(logdet):
    return None
  return float(-0.5 * logdet)
