"""Exact Pearson correlations of all latent components, in one streaming pass.

The study computed numpy.corrcoef on a random 5,000 of its 170,000 z-points because the full
array did not fit in RAM. `StreamingCorrelation` gives the same matrix for all points with
memory that depends on z_dim only: it keeps, in float64, the count, the mean and the centred
co-moment matrix M2, merging chunks with the pairwise update of Chan, Golub and LeVeque (1979):

    delta = mean_b - mean_a,  n = n_a + n_b
    mean  = mean_a + delta * n_b / n
    M2    = M2_a + M2_b + outer(delta, delta) * n_a * n_b / n

r_ij = M2_ij / sqrt(M2_ii M2_jj). A constant component (M2_ii = 0) gets row and column 0
(diagonal 1) and is named in `constant_components`.
"""

import numpy as np

from evaluation import zpoints
from evaluation.errors import EvaluationError

DEFAULT_CHUNK_ROWS = 16384  # 16384 x 256 float64 = 32 MiB per chunk.
DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


class StreamingCorrelation:
  """Running count, mean and co-moment of [N, dim] points, fed chunk by chunk."""

  def __init__(self, dim):
    self.dim = int(dim)
    self.count = 0
    self.mean = np.zeros(self.dim)
    self.m2 = np.zeros((self.dim, self.dim))

  def update(self, chunk):
    """Adds the rows of chunk [n, dim] (any float dtype; used as float64)."""
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 2 or chunk.shape[1] != self.dim:
      raise EvaluationError(f"expected rows of {self.dim} components, got shape {chunk.shape}")
    n_b = len(chunk)
    if n_b == 0:
      return self
    mean_b = chunk.mean(axis=0)
    centred = chunk - mean_b
    m2_b = centred.T @ centred
    n_a, n = self.count, self.count + n_b
    delta = mean_b - self.mean
    self.mean += delta * (n_b / n)
    self.m2 += m2_b
    if n_a:
      self.m2 += np.outer(delta, delta) * (n_a * n_b / n)
    self.count = n
    return self

  def _need(self, minimum):
    if self.count < minimum:
      raise EvaluationError(f"correlations need at least {minimum} z-points, got {self.count}")

  def variance(self, ddof=0):
    """Per-component variance [dim] (ddof 0: divided by N)."""
    self._need(ddof + 1)
    return np.clip(np.diag(self.m2), 0.0, None) / (self.count - ddof)

  def covariance(self, ddof=1):
    """[dim, dim] covariance (ddof 1 like numpy.cov)."""
    self._need(ddof + 1)
    return self.m2 / (self.count - ddof)

  def constant_components(self):
    """Indices of components whose values never change (no defined correlation)."""
    self._need(1)
    diag = np.diag(self.m2)
    # Rounding leaves tiny positive M2 for constant columns; compare with the values' scale.
    scale = np.maximum(np.abs(self.mean), 1.0) ** 2 * self.count
    return np.flatnonzero(diag <= 1e-24 * scale)

  def correlation(self):
    """[dim, dim] Pearson r (diagonal 1; rows of constant components 0)."""
    self._need(2)
    std = np.sqrt(np.clip(np.diag(self.m2), 0.0, None))
    constant = self.constant_components()
    std[constant] = 1.0
    r = self.m2 / np.outer(std, std)
    r[constant, :] = 0.0
    r[:, constant] = 0.0
    np.clip(r, -1.0, 1.0, out=r)
    np.fill_diagonal(r, 1.0)
    return r


def accumulate(z, rows=None, chunk_rows=DEFAULT_CHUNK_ROWS):
  """A StreamingCorrelation over z [N, dim] (or over z[rows]), read in chunks."""
  acc = StreamingCorrelation(z.shape[1])
  for chunk in zpoints.iter_chunks(z, chunk_rows, rows):
    acc.update(chunk)
  return acc


def sample_rows(num_rows, num_samples, seed):
  """Sorted indices of a seeded random subset (the study's 5,000), or None for all rows.

  numpy.random.default_rng(seed).choice(num_rows, num_samples, replace=False), sorted so that
  a memory-mapped file is read front to back. None when num_samples is None or >= num_rows.
  """
  if num_samples is None or num_samples >= num_rows:
    return None
  if num_samples < 2:
    raise EvaluationError(f"--num_samples must be at least 2, got {num_samples}")
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_rows, size=int(num_samples), replace=False))


def threshold_label(value):
  """0.5 -> "0.5", 1.0 -> "1": the string keys of `counts` in latent_report.json."""
  return f"{float(value):g}"


def counts_above(r, thresholds):
  """{label: number of index pairs i<j with |r_ij| > threshold} (strictly above, as the study)."""
  upper = np.abs(r[np.triu_indices(len(r), k=1)])
  return {threshold_label(t): int(np.count_nonzero(upper > t)) for t in thresholds}


def pairs_above(r, threshold):
  """[[i, j, r_ij], ...] for i<j with |r_ij| > threshold, ordered by i then j."""
  i, j = np.triu_indices(len(r), k=1)
  keep = np.abs(r[i, j]) > threshold
  return [[int(a), int(b), float(r[a, b])] for a, b in zip(i[keep], j[keep])]


def strongest_pairs(r, num):
  """The `num` pairs i<j with the largest |r_ij|, strongest first (ties by i, then j)."""
  i, j = np.triu_indices(len(r), k=1)
  values = np.abs(r[i, j])
  order = np.lexsort((j, i, -values))[:int(num)]
  return [[int(i[k]), int(j[k]), float(r[i[k], j[k]])] for k in order]
