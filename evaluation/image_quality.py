"""Numbers that say how good images are: per image against its target, per image alone, per set.

- `psnr`, `ssim`: per image against its target, float images in [0, 1] with max_val 1.0
  (tf.image.psnr, tf.image.ssim with its default 11x11 Gaussian window); an exact
  reconstruction has an infinite PSNR.
- `laplacian_variance` (sharpness) and `checkerboard_energy` (the period-2 grid artefacts of
  transposed convolutions): per image alone, uint8 [N, H, W, 3] or float in [0, 1]; the
  study's sharpening claim rests on them.
- `frechet_distance`: the Frechet (2-Wasserstein) distance between Gaussians fitted to two sets
  of vectors, |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). The generation tool applies it
  to the *model's own encoder outputs* of real and generated images. It is NOT the FID (which
  uses Inception-v3 features, downloaded weights), and not comparable with it.
- `summarize`, `summarize_by_factor`: JSON-safe summaries of per-image values.
"""

import numpy as np
import scipy.linalg
import tensorflow as tf

from evaluation.errors import EvaluationError

PERCENTILES = (5, 25, 50, 75, 95)
# ITU-R BT.601 luma weights, as PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114])


def _float_pair(a, b):
  a = np.asarray(a, dtype=np.float32)
  b = np.asarray(b, dtype=np.float32)
  if a.shape != b.shape or a.ndim != 4:
    raise EvaluationError(f"image metrics need two [N, H, W, C] batches of the same shape, got "
                          f"{a.shape} and {b.shape}")
  return a, b


def psnr(a, b, max_val=1.0):
  """Per-image PSNR in dB of float images in [0, max_val]: [N] float64 (inf when identical)."""
  a, b = _float_pair(a, b)
  return tf.image.psnr(a, b, max_val=max_val).numpy().astype(np.float64)


def ssim(a, b, max_val=1.0):
  """Per-image SSIM of float images in [0, max_val]: [N] float64 (1 when identical)."""
  a, b = _float_pair(a, b)
  if min(a.shape[1:3]) < 11:
    raise EvaluationError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1:3]}")
  return tf.image.ssim(a, b, max_val=max_val).numpy().astype(np.float64)


def _gray(images):
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise EvaluationError(f"expected RGB images [N, H, W, 3], got shape {images.shape}")
  scale = 1.0 if images.dtype == np.uint8 else 255.0
  return (images.astype(np.float64) * scale) @ _LUMA


def laplacian_variance(images):
  """Variance of the 4-neighbour Laplacian per image (grayscale, 0..255 units), float64 [N].

  The classic focus measure (Pech-Pacheco et al., "Diatom autofocusing in brightfield
  microscopy: a comparative study", ICPR 2000): it rises as edges get steeper, higher = sharper.
  """
  gray = _gray(images)
  lap = (gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:]
         - 4.0 * gray[:, 1:-1, 1:-1])
  return lap.reshape(len(gray), -1).var(axis=1)


def checkerboard_energy(images):
  """Share of spectral energy at period 2 (DFT row H/2 or column W/2), float64 [N] in [0, 1].

  Conv2DTranspose layers with stride 2 leave exactly such period-2 "crossing line" patterns
  (Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016);
  sharpening (unsharp masking) amplifies them. The mean (DC term) is left out of the total, so
  a flat image has 0; a pure checkerboard 1. H and W must be even.
  """
  gray = _gray(images)
  height, width = gray.shape[1:]
  if height % 2 or width % 2:
    raise EvaluationError(f"checkerboard_energy needs even image sides, got {height}x{width}")
  power = np.abs(np.fft.fft2(gray)) ** 2
  power[:, 0, 0] = 0.0
  nyquist = power[:, height // 2, :].sum(axis=1) + power[:, :, width // 2].sum(axis=1)
  nyquist -= power[:, height // 2, width // 2]  # Counted in both lines.
  total = power.reshape(len(gray), -1).sum(axis=1)
  return np.divide(nyquist, total, out=np.zeros_like(total), where=total > 0)


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


def summarize_by_factor(images_by_factor):
  """{factor: {"laplacian_variance": mean, "checkerboard_energy": mean}} for sharpened sets.

  Args:
    images_by_factor: {sharpness factor: uint8 [N, H, W, 3]} (evaluation.image_ops.sharpen).
  """
  return {float(factor): {"laplacian_variance": float(laplacian_variance(images).mean()),
                          "checkerboard_energy": float(checkerboard_energy(images).mean())}
          for factor, images in sorted(images_by_factor.items())}
