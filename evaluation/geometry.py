"""Geometry of a latent cloud: radii, and whether points fall inside the cloud.

The study asks where the z-points of real faces sit and whether random vectors land among
them. "Inside" is judged against a Gaussian fitted to the cloud: a point is inside when its
squared Mahalanobis distance to the fitted Gaussian is below the chi-square quantile with
`dim` degrees of freedom (for points drawn from that Gaussian this holds with probability
`quantile`). Shared by tools.analyze_latents and tools.generate.
"""

import dataclasses
import functools

import numpy as np
from scipy import stats

from evaluation import samplers
from evaluation.errors import EvaluationError

RADIUS_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def radius_stats(z):
  """Statistics of the L2 radius |z| of points [N, dim] (JSON-safe floats)."""
  z = samplers.as_points(z)
  return radius_summary(np.linalg.norm(z, axis=1))


def radius_summary(radius):
  """Statistics of precomputed radii [N] (count, mean, std, min, max, percentiles)."""
  radius = np.asarray(radius, np.float64)
  out = {"count": int(len(radius)), "mean": float(radius.mean()), "std": float(radius.std()),
         "min": float(radius.min()), "max": float(radius.max())}
  for q, value in zip(RADIUS_PERCENTILES, np.percentile(radius, RADIUS_PERCENTILES)):
    out[f"p{q}"] = float(value)
  return out


@dataclasses.dataclass(frozen=True)
class GaussianCloud:
  """A Gaussian fitted to a cloud of z-points, with a Mahalanobis "inside" test.

  The covariance is the one tools.generate's `gaussian` sampler fits (Ledoit-Wolf shrinkage
  when the points are few for their dimension), so "inside the cloud" means the same in the
  latent report and in generation.json.
  """

  mean: np.ndarray
  covariance: np.ndarray
  notes: tuple

  @classmethod
  def fit(cls, z, shrinkage="auto"):
    fitted = samplers.fit_gaussian(z, shrinkage=shrinkage)
    return cls(fitted.means[0], fitted.covariances[0], tuple(fitted.notes))

  @property
  def dim(self):
    return len(self.mean)

  @functools.cached_property
  def _whitener(self):
    # Solving against the Cholesky factor is stabler than inverting the covariance; factored
    # once per cloud (O(dim^3): about a second at dim 1600), not once per batch of points.
    return samplers.cholesky(self.covariance)

  def mahalanobis_sq(self, z, batch_size=65536):
    """Squared Mahalanobis distances [N] of points [N, dim] to the fitted Gaussian."""
    z = samplers.as_points(z)
    if z.shape[1] != self.dim:
      raise EvaluationError(f"points have {z.shape[1]} dimensions, the cloud {self.dim}")
    chol = self._whitener
    out = np.empty(len(z))
    for start in range(0, len(z), batch_size):
      diff = z[start:start + batch_size] - self.mean
      white = np.linalg.solve(chol, diff.T)  # L^-1 (z - mu)
      out[start:start + batch_size] = np.einsum("ij,ij->j", white, white)
    return out

  def threshold(self, quantile):
    """The squared-distance cut-off: the chi-square(dim) quantile."""
    if not 0.0 < quantile < 1.0:
      raise EvaluationError(f"the inside quantile must lie in (0, 1), got {quantile}")
    return float(stats.chi2.ppf(quantile, df=self.dim))

  def inside_fraction(self, z, quantile):
    """Fraction of points [N, dim] whose squared Mahalanobis distance is below the cut-off."""
    return float(np.mean(self.mahalanobis_sq(z) <= self.threshold(quantile)))

  def centre_offset(self):
    """Distance of the cloud's centre from the origin in units of its spread.

    |mean| divided by the root mean variance sqrt(trace(cov) / dim), i.e. how many typical
    per-component standard deviations the centre sits away from 0; also the Mahalanobis
    distance of the origin from the cloud.
    """
    spread = float(np.sqrt(np.trace(self.covariance) / self.dim))
    norm = float(np.linalg.norm(self.mean))
    origin = float(np.sqrt(self.mahalanobis_sq(np.zeros((1, self.dim)))[0]))
    return {"centre_norm": norm, "rms_std": spread,
            "centre_norm_in_rms_std": norm / spread if spread > 0 else float("inf"),
            "origin_mahalanobis": origin}
