"""Two image measures for the study's sharpening claim: sharpness and grid (checkerboard) artefacts.

- `laplacian_variance`: the variance of the 4-neighbour Laplacian of the grayscale image, the
  classic focus measure (Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy: a
  comparative study", ICPR 2000). It rises as edges get steeper: higher = sharper.
- `checkerboard_energy`: the share of the image's non-constant spectral energy that sits at the
  highest spatial frequency along either axis (period 2 pixels: the rows and columns of the 2-D
  DFT at index H/2 or W/2). Conv2DTranspose layers with stride 2 leave exactly such period-2
  "crossing line" patterns (Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts",
  Distill 2016); sharpening (unsharp masking) amplifies them.

Both take uint8 [N, H, W, 3] (or float in [0, 1]) and return one float64 per image; H and W
must be even for the period-2 measure.
"""

import numpy as np

from evaluation.errors import EvaluationError

# ITU-R BT.601 luma weights, as PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114])


def _gray(images):
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise EvaluationError(f"expected RGB images [N, H, W, 3], got shape {images.shape}")
  scale = 1.0 if images.dtype == np.uint8 else 255.0
  return (images.astype(np.float64) * scale) @ _LUMA


def laplacian_variance(images):
  """Variance of the 4-neighbour Laplacian per image (grayscale, 0..255 units), float64 [N]."""
  gray = _gray(images)
  lap = (gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:]
         - 4.0 * gray[:, 1:-1, 1:-1])
  return lap.reshape(len(gray), -1).var(axis=1)


def checkerboard_energy(images):
  """Share of spectral energy at period 2 (DFT row H/2 or column W/2), float64 [N] in [0, 1].

  The mean (DC term) is left out of the total, so a flat image has 0; a pure checkerboard 1.
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


def summarize_by_factor(images_by_factor):
  """{factor: {"laplacian_variance": mean, "checkerboard_energy": mean}} for sharpened sets.

  Args:
    images_by_factor: {sharpness factor: uint8 [N, H, W, 3]} (evaluation.images.sharpen).
  """
  return {float(factor): {"laplacian_variance": float(laplacian_variance(images).mean()),
                          "checkerboard_energy": float(checkerboard_energy(images).mean())}
          for factor, images in sorted(images_by_factor.items())}
