"""Image quality and distribution metrics: PSNR and SSIM (tf.image), and a Frechet distance.

- `psnr`, `ssim`: per image, on float images in [0, 1] with max_val 1.0 (tf.image.psnr and
  tf.image.ssim with their default 11x11 Gaussian window). An exact reconstruction has an
  infinite PSNR.
- `frechet_distance`: the Frechet (2-Wasserstein) distance between Gaussians fitted to two
  sets of vectors, |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). The generation tool
  applies it to the *model's own encoder outputs* of real and generated images. It is NOT the
  FID: the FID uses Inception-v3 features, which would need downloaded weights, and its values
  are not comparable with this one.
- `summarize`: mean, spread and percentiles of per-image values, JSON-safe.
"""

import numpy as np
import scipy.linalg

from evaluation.errors import EvaluationError

PERCENTILES = (5, 25, 50, 75, 95)


def _float_pair(a, b):
  a = np.asarray(a, dtype=np.float32)
  b = np.asarray(b, dtype=np.float32)
  if a.shape != b.shape or a.ndim != 4:
    raise EvaluationError(f"image metrics need two [N, H, W, C] batches of the same shape, got "
                          f"{a.shape} and {b.shape}")
  return a, b


def psnr(a, b, max_val=1.0):
  """Per-image PSNR in dB of float images in [0, max_val]: [N] float64 (inf when identical)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (keeps NumPy users TF-free)
  a, b = _float_pair(a, b)
  return tf.image.psnr(a, b, max_val=max_val).numpy().astype(np.float64)


def ssim(a, b, max_val=1.0):
  """Per-image SSIM of float images in [0, max_val]: [N] float64 (1 when identical)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a, b = _float_pair(a, b)
  if min(a.shape[1:3]) < 11:
    raise EvaluationError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1:3]}")
  return tf.image.ssim(a, b, max_val=max_val).numpy().astype(np.float64)


def gaussian_moments(x):
  """Mean [d] and covariance [d, d] (float64, N - 1 denominator) of vectors x [N, d]."""
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise EvaluationError(f"a Frechet distance needs at least 2 vectors [N, d], got {x.shape}")
  if not np.all(np.isfinite(x)):
    raise EvaluationError("a Frechet distance needs finite vectors; got NaN or Inf")
  return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_from_moments(mu_a, cov_a, mu_b, cov_b):
  """|mu_a - mu_b|^2 + Tr(cov_a + cov_b - 2 sqrtm(cov_a cov_b)), as a float >= 0."""
  diff = mu_a - mu_b
  covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
  if not np.all(np.isfinite(covmean)):
    # Singular products (fewer vectors than dimensions) can defeat sqrtm; a tiny ridge on both
    # covariances, as in the reference FID code, makes the product well defined.
    ridge = 1e-6 * np.eye(len(cov_a))
    covmean = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
  # Rounding leaves tiny imaginary parts; the trace of the true root is real.
  covmean = np.real(covmean)
  value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
  return float(max(value, 0.0))


def frechet_distance(a, b):
  """Frechet distance between Gaussians fitted to vectors a [N, d] and b [M, d]."""
  mu_a, cov_a = gaussian_moments(a)
  mu_b, cov_b = gaussian_moments(b)
  if mu_a.shape != mu_b.shape:
    raise EvaluationError(f"a Frechet distance needs vectors of one dimension, got "
                          f"{mu_a.shape[0]} and {mu_b.shape[0]}")
  return frechet_from_moments(mu_a, cov_a, mu_b, cov_b)


def summarize(values):
  """count, mean, std, min, max and percentiles of per-image values (JSON-safe floats).

  Infinite values (PSNR of an exact reconstruction) are counted in `num_infinite` and left out
  of the statistics, which JSON could not hold otherwise; NaN is a bug and raises.
  """
  values = np.asarray(values, dtype=np.float64).ravel()
  if np.isnan(values).any():
    raise EvaluationError("metric values contain NaN")
  finite = values[np.isfinite(values)]
  summary = {"count": int(values.size), "num_infinite": int(values.size - finite.size)}
  if finite.size == 0:
    summary.update({"mean": None, "std": None, "min": None, "max": None})
    summary.update({f"p{p}": None for p in PERCENTILES})
    return summary
  summary.update({"mean": float(finite.mean()), "std": float(finite.std()),
                  "min": float(finite.min()), "max": float(finite.max())})
  summary.update({f"p{p}": float(v) for p, v in zip(PERCENTILES,
                                                    np.percentile(finite, PERCENTILES))})
  return summary
