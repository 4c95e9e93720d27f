"""Samplers of latent points: which z does a decoder turn into a face?

Pure NumPy (plus scikit-learn for the covariance estimate and the mixture); all randomness
comes from `numpy.random.default_rng(seed)`, so the same arguments give the same points on
every machine. `normal` (the study's naive generator), `uniform` in [-r, r] (one set of
directions scaled by r, so grids for different r show the same points moving outwards),
`fit_gaussian` (Ledoit-Wolf shrinkage when points are few) and `fit_gmm` (ex-post density
estimates: how a plain AE can generate faces), `interpolate`, and `attribute_vector` /
`shift_along`. Fits return a `FittedSampler` whose `notes` say what was regularised and why.
"""

import dataclasses

import numpy as np
from sklearn import covariance as sk_covariance
from sklearn import mixture as sk_mixture

from evaluation.errors import EvaluationError

# A full covariance from N points in `dim` dimensions is well conditioned only when N is a
# comfortable multiple of dim; below that the sample covariance is noisy (or singular when
# N <= dim) and shrinkage towards a scaled identity is the standard remedy.
POINTS_PER_DIM_FOR_EMPIRICAL = 10
# A mixture component needs this many points per free covariance parameter row to fit a full
# covariance; with fewer it gets a diagonal one (dim parameters instead of dim*(dim+1)/2).
POINTS_PER_DIM_FOR_FULL_GMM = 2
# ...and at least this many points per component at all, else the number of components drops.
MIN_POINTS_PER_COMPONENT = 10


def as_points(z, what="z"):
  """`z` as a float64 [N, dim] array; EvaluationError if it is not one, empty or not finite."""
  z = np.asarray(z)
  if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
    raise EvaluationError(f"{what} must be a non-empty [N, dim] array, got shape {z.shape}")
  z = z.astype(np.float64, copy=False)
  if not np.all(np.isfinite(z)):
    raise EvaluationError(f"{what} contains NaN or Inf values")
  return z


def normal(num, dim, seed):
  """[num, dim] float32 points from N(0, I)."""
  rng = np.random.default_rng(seed)
  return rng.standard_normal((int(num), int(dim))).astype(np.float32)


def uniform(num, dim, r_limits, seed):
  """{r: [num, dim] float32}: components uniform in [-r, r], the same directions for every r.

  Drawing u ~ U[-1, 1] once and returning r * u keeps the grids comparable across r (the same
  tiles, further out), and each r * u is still exactly uniform in [-r, r]^dim.
  """
  rng = np.random.default_rng(seed)
  unit = rng.uniform(-1.0, 1.0, size=(int(num), int(dim)))
  return {float(r): (float(r) * unit).astype(np.float32) for r in r_limits}


def expected_uniform_radius_sq(dim, r):
  """E|z|^2 for components uniform in [-r, r]: dim * r^2 / 3 (variance r^2 / 3 per component)."""
  return dim * r * r / 3.0


@dataclasses.dataclass
class FittedSampler:
  """A density fitted to z-points; `sample(num, seed)` draws from it.

  Attributes:
    kind: "gaussian" or "gmm".
    means: [K, dim] component means (K = 1 for the Gaussian).
    covariances: [K, dim, dim] (full) or [K, dim] (diagonal) covariances.
    weights: [K] mixture weights summing to 1.
    settings: what was fitted, for generation.json (components, covariance type, shrinkage...).
    notes: human-readable remarks on regularisation or reductions (empty when none was needed).
  """

  kind: str
  means: np.ndarray
  covariances: np.ndarray
  weights: np.ndarray
  settings: dict
  notes: list

  @property
  def dim(self):
    return self.means.shape[1]

  def sample(self, num, seed):
    """[num, dim] float32 points; components chosen by weight, then Gaussian draws."""
    rng = np.random.default_rng(seed)
    num = int(num)
    labels = rng.choice(len(self.weights), size=num, p=self.weights)
    eps = rng.standard_normal((num, self.dim))
    out = np.empty((num, self.dim))
    for k in range(len(self.weights)):
      rows = labels == k
      if self.covariances.ndim == 2:  # Diagonal: per-component standard deviations.
        out[rows] = self.means[k] + eps[rows] * np.sqrt(self.covariances[k])
      else:
        out[rows] = self.means[k] + eps[rows] @ cholesky(self.covariances[k]).T
    return out.astype(np.float32)


def cholesky(cov):
  """Cholesky factor; a tiny diagonal jitter rescues covariances that are PSD up to rounding."""
  try:
    return np.linalg.cholesky(cov)
  except np.linalg.LinAlgError:
    jitter = 1e-9 * max(float(np.trace(cov)) / len(cov), 1e-12)
    return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))


def fit_gaussian(z, shrinkage="auto"):
  """Fits one full-covariance Gaussian to z-points [N, dim].

  Args:
    z: z-points of real images.
    shrinkage: "auto" (Ledoit-Wolf when N < POINTS_PER_DIM_FOR_EMPIRICAL * dim, else the
      sample covariance), "ledoit_wolf" or "none".

  Returns:
    A FittedSampler (kind "gaussian").
  """
  z = as_points(z, "z-points")
  n, dim = z.shape
  if n < 2:
    raise EvaluationError("fitting a Gaussian needs at least 2 z-points, got 1")
  use_shrinkage = (shrinkage == "ledoit_wolf"
                   or (shrinkage == "auto" and n < POINTS_PER_DIM_FOR_EMPIRICAL * dim))
  notes = []
  if use_shrinkage:
    estimator = sk_covariance.LedoitWolf().fit(z)
    cov, amount = estimator.covariance_, float(estimator.shrinkage_)
    notes.append(f"gaussian: {n} z-points for {dim} dimensions (fewer than "
                 f"{POINTS_PER_DIM_FOR_EMPIRICAL} per dimension), so the covariance is "
                 f"Ledoit-Wolf shrunk towards a scaled identity (shrinkage {amount:.3f})")
  else:
    cov, amount = np.cov(z, rowvar=False).reshape(dim, dim), 0.0
  settings = {"num_points": n, "dim": dim, "covariance": "full",
              "estimator": "ledoit_wolf" if use_shrinkage else "empirical",
              "shrinkage": amount}
  return FittedSampler("gaussian", z.mean(axis=0, keepdims=True), cov[None], np.ones(1),
                       settings, notes)


def fit_gmm(z, components=10, seed=0, covariance_type="auto", reg_covar=1e-6):
  """Fits a Gaussian mixture (sklearn.mixture.GaussianMixture) to z-points [N, dim].

  With "auto", the fit adapts to the number of points instead of failing: at most
  N // MIN_POINTS_PER_COMPONENT components, full covariances only when each component has at
  least POINTS_PER_DIM_FOR_FULL_GMM * (dim + 1) points (else diagonal ones), and each
  adaptation is written into `notes`.

  Args:
    z: z-points of real images.
    components: requested number of mixture components.
    seed: random_state of the k-means initialisation.
    covariance_type: "auto", "full" or "diag".
    reg_covar: added to the covariances' diagonals (scikit-learn's regulariser).

  Returns:
    A FittedSampler (kind "gmm").
  """
  z = as_points(z, "z-points")
  n, dim = z.shape
  if n < 2:
    raise EvaluationError("fitting a Gaussian mixture needs at least 2 z-points, got 1")
  notes = []
  k = min(int(components), max(1, n // MIN_POINTS_PER_COMPONENT))
  if k < components:
    notes.append(f"gmm: {n} z-points are too few for {components} components (at least "
                 f"{MIN_POINTS_PER_COMPONENT} each), so {k} component(s) were fitted")
  if covariance_type == "auto":
    needed = POINTS_PER_DIM_FOR_FULL_GMM * (dim + 1) * k
    covariance_type = "full" if n >= needed else "diag"
    if covariance_type == "diag":
      notes.append(f"gmm: {n} z-points are too few for {k} full {dim}x{dim} covariances "
                   f"(about {needed} needed), so diagonal covariances were fitted")
  # Scale the regulariser with the data so that it means the same for any z scale.
  reg = float(reg_covar) * max(float(np.mean(np.var(z, axis=0))), 1e-12)
  gmm = sk_mixture.GaussianMixture(n_components=k, covariance_type=covariance_type,
                                   reg_covar=reg, random_state=int(seed), n_init=1,
                                   max_iter=200).fit(z)
  if not gmm.converged_:
    notes.append(f"gmm: EM did not converge in {gmm.max_iter} iterations; the mixture is the "
                 "last iterate")
  settings = {"num_points": n, "dim": dim, "components_requested": int(components),
              "components": k, "covariance": covariance_type, "reg_covar": reg,
              "converged": bool(gmm.converged_), "log_likelihood_per_point": float(gmm.score(z))}
  weights = gmm.weights_ / gmm.weights_.sum()
  return FittedSampler("gmm", gmm.means_, gmm.covariances_, weights, settings, notes)


def interpolate(z_start, z_end, steps):
  """Straight lines in z: [pairs, steps, dim] with t = 0 .. 1 (both ends included)."""
  z_start, z_end = np.asarray(z_start, np.float64), np.asarray(z_end, np.float64)
  if z_start.shape != z_end.shape or z_start.ndim != 2:
    raise EvaluationError(f"interpolation needs two [pairs, dim] arrays of the same shape, got "
                          f"{z_start.shape} and {z_end.shape}")
  if int(steps) < 2:
    raise EvaluationError(f"interpolation needs at least 2 steps, got {steps}")
  t = np.linspace(0.0, 1.0, int(steps))[None, :, None]
  return ((1.0 - t) * z_start[:, None, :] + t * z_end[:, None, :]).astype(np.float32)


def attribute_vector(z, attributes, index, name="attribute"):
  """Mean z of the images with attribute `index` (+1) minus the mean of those without (-1).

  Args:
    z: [N, dim] z-points.
    attributes: [N, num_attributes] CelebA-style values in {-1, +1}.
    index: column of the attribute.
    name: its name, for error messages.

  Returns:
    (vector [dim] float64, {"num_with": .., "num_without": .., "norm": ..}).
  """
  z = as_points(z, "z-points")
  attributes = np.asarray(attributes)
  if attributes.ndim != 2 or attributes.shape[0] != z.shape[0]:
    raise EvaluationError(f"attributes must be [N, A] with N = {z.shape[0]} rows, got "
                          f"{attributes.shape}")
  column = attributes[:, int(index)]
  with_it, without = column > 0, column < 0
  if not with_it.any() or not without.any():
    raise EvaluationError(f"attribute {name}: the fit images need both values, got "
                          f"{int(with_it.sum())} with and {int(without.sum())} without; use "
                          "more images (--max_fit_images) or another --attribute")
  vector = z[with_it].mean(axis=0) - z[without].mean(axis=0)
  return vector, {"num_with": int(with_it.sum()), "num_without": int(without.sum()),
                  "norm": float(np.linalg.norm(vector))}


def shift_along(z, vector, scales):
  """[N, len(scales), dim]: every z plus scale * vector, for each scale."""
  z = np.asarray(z, np.float64)
  scales = np.asarray(scales, np.float64)
  return (z[:, None, :] + scales[None, :, None] * np.asarray(vector)[None, None, :]).astype(
      np.float32)
