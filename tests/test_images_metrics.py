"""Sharpening, grids, PSNR/SSIM and the Frechet distance."""

import io

import numpy as np
import pytest
from PIL import Image

from evaluation import image_ops
from evaluation import image_quality
from evaluation.errors import EvaluationError


def _faces(n=4, size=32, seed=0):
  """Smooth random images with edges (sharpening needs structure to act on)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:size, 0:size] / size
  out = []
  for _ in range(n):
    a, b, c = rng.uniform(0.2, 0.8, size=3)
    base = np.stack([a * x, b * y, c * (x > 0.5)], axis=-1)
    out.append(base + 0.05 * rng.normal(size=base.shape))
  return image_ops.to_uint8(np.clip(np.array(out), 0, 1))


def test_to_uint8_rounds_and_clips():
  out = image_ops.to_uint8(np.array([[-0.5, 0.0, 0.5 / 255, 1.6 / 255, 1.0, 2.0]]))
  np.testing.assert_array_equal(out, [[0, 0, 0, 2, 255, 255]])  # rint: half to even.
  assert out.dtype == np.uint8


def test_sharpen_factor_one_is_identity_and_others_change_images():
  faces = _faces()
  np.testing.assert_array_equal(image_ops.sharpen(faces, 1), faces)
  changed = {f: np.abs(image_ops.sharpen(faces, f).astype(int) - faces).mean()
             for f in (0, 3, 7)}
  assert all(v > 0 for v in changed.values()), changed
  assert changed[7] > changed[3]  # A stronger factor moves pixels further.
  sharp = image_ops.sharpen(faces, 7)
  assert sharp.shape == faces.shape and sharp.dtype == np.uint8
  with pytest.raises(EvaluationError, match=">= 0"):
    image_ops.sharpen(faces, -1)
  with pytest.raises(EvaluationError, match="uint8"):
    image_ops.sharpen(faces.astype(np.float32), 3)


def test_panel_grid_is_labelled_readable_and_deterministic():
  faces = _faces(6)
  panels = [(f"sharpness {f}", image_ops.sharpen(faces, f)) for f in (1, 3, 7)]
  grid = image_ops.panel_grid(panels, columns=3, title="normal N(0, I), seed 0")
  scale = image_ops.upscale_for(32)
  assert scale == 3  # 32 px tiles are shown at 96 px.
  pixels = np.asarray(grid)
  assert grid.width >= 3 * 3 * 96 and grid.height >= 2 * 96 + 20
  # The title strip holds dark text pixels.
  assert (pixels[:16] < 100).any()
  # The first tile of the first panel appears upscaled with NEAREST, exactly.
  tiles = image_ops.tile(faces, columns=3, scale=scale)
  np.testing.assert_array_equal(tiles[:96, :96], faces[0].repeat(3, 0).repeat(3, 1))
  data = image_ops.png_bytes(grid)
  assert data == image_ops.png_bytes(image_ops.panel_grid(panels, 3, "normal N(0, I), seed 0"))
  assert Image.open(io.BytesIO(data)).size == grid.size
  one_column = image_ops.panel_grid([("original", faces), ("run_ae (ae) a long label that "
                                                             "wraps", faces)], columns=1)
  assert one_column.height >= 6 * 96


def test_psnr_and_ssim_of_identity_and_noise():
  rng = np.random.default_rng(0)
  faces = _faces(3).astype(np.float32) / 255.0
  same = image_quality.psnr(faces, faces)
  assert same.shape == (3,) and np.isinf(same).all()
  assert image_quality.ssim(faces, faces) == pytest.approx(np.ones(3))
  noise = rng.random(faces.shape).astype(np.float32)
  assert image_quality.psnr(faces, noise).max() < 12.0
  assert image_quality.ssim(faces, noise).max() < 0.2
  slightly = np.clip(faces + rng.normal(0, 0.01, faces.shape), 0, 1).astype(np.float32)
  assert image_quality.psnr(faces, slightly).min() > 35.0
  with pytest.raises(EvaluationError, match="same shape"):
    image_quality.psnr(faces, faces[:2])
  with pytest.raises(EvaluationError, match="11x11"):
    image_quality.ssim(faces[:, :8, :8], faces[:, :8, :8])


def test_frechet_distance_is_zero_for_a_set_and_grows_with_a_shift():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8))
  assert image_quality.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
  distances = [image_quality.frechet_distance(x, x + shift) for shift in (0.5, 1.0, 2.0)]
  # Same covariance: the distance is exactly the squared mean offset, 8 * shift^2.
  np.testing.assert_allclose(distances, [8 * 0.25, 8 * 1.0, 8 * 4.0], rtol=1e-6)
  wider = image_quality.frechet_distance(x, 2.0 * x)
  assert wider > 1.0
  # Fewer vectors than dimensions (singular covariances) still give a finite value.
  small = image_quality.frechet_distance(x[:5], x[5:10])
  assert np.isfinite(small) and small >= 0
  with pytest.raises(EvaluationError, match="one dimension"):
    image_quality.frechet_distance(x, x[:, :4])
  with pytest.raises(EvaluationError, match="at least 2"):
    image_quality.frechet_distance(x[:1], x)


def test_summarize_is_json_safe_with_infinite_values():
  summary = image_quality.summarize([1.0, 2.0, 3.0, np.inf])
  assert summary["count"] == 4 and summary["num_infinite"] == 1
  assert summary["mean"] == pytest.approx(2.0) and summary["p50"] == pytest.approx(2.0)
  assert image_quality.summarize([np.inf])["mean"] is None
  with pytest.raises(EvaluationError, match="NaN"):
    image_quality.summarize([np.nan])
