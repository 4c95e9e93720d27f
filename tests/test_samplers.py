"""Samplers: shapes, determinism and the statistics each one promises."""

import numpy as np
import pytest

from evaluation import samplers
from evaluation.errors import EvaluationError

DIM = 8


def _correlated_points(n, dim=DIM, seed=0):
  """Points of an anisotropic, off-centre Gaussian (like real z-points, not like N(0, I))."""
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(dim, dim)) * np.linspace(0.2, 2.0, dim)
  return rng.normal(size=(n, dim)) @ mixing.T + np.linspace(-1.0, 3.0, dim)


def test_normal_shape_determinism_and_moments():
  z = samplers.normal(4000, DIM, seed=3)
  assert z.shape == (4000, DIM) and z.dtype == np.float32
  np.testing.assert_array_equal(z, samplers.normal(4000, DIM, seed=3))
  assert not np.array_equal(z, samplers.normal(4000, DIM, seed=4))
  assert np.abs(z.mean(axis=0)).max() < 0.1
  assert np.abs(z.std(axis=0) - 1.0).max() < 0.05


def test_uniform_radii_grow_as_dim_r2_over_3():
  r_limits = (0.5, 1.0, 2.0, 8.0)
  grids = samplers.uniform(5000, DIM, r_limits, seed=1)
  assert sorted(grids) == list(r_limits)
  for r, z in grids.items():
    assert z.shape == (5000, DIM) and z.dtype == np.float32
    assert np.abs(z).max() <= r
    mean_sq = float((z.astype(np.float64) ** 2).sum(axis=1).mean())
    expected = samplers.expected_uniform_radius_sq(DIM, r)
    assert expected == pytest.approx(DIM * r * r / 3)
    assert mean_sq == pytest.approx(expected, rel=0.03)
  # The same directions for every r: the grids show the same tiles moving outwards.
  np.testing.assert_allclose(grids[8.0], 16.0 * grids[0.5], rtol=1e-6)
  again = samplers.uniform(5000, DIM, r_limits, seed=1)
  np.testing.assert_array_equal(grids[2.0], again[2.0])


def test_fitted_gaussian_reproduces_mean_and_covariance():
  points = _correlated_points(20000)
  fit = samplers.fit_gaussian(points)
  assert fit.settings["estimator"] == "empirical" and fit.notes == []
  z = fit.sample(20000, seed=0)
  assert z.shape == (20000, DIM) and z.dtype == np.float32
  np.testing.assert_array_equal(z, fit.sample(20000, seed=0))
  scale = np.sqrt(np.diag(np.cov(points, rowvar=False)))
  assert np.abs(z.mean(axis=0) - points.mean(axis=0)).max() < 0.05 * scale.max()
  np.testing.assert_allclose(np.corrcoef(z, rowvar=False), np.corrcoef(points, rowvar=False),
                             atol=0.03)


def test_fitted_gaussian_with_few_points_shrinks_and_says_so():
  points = _correlated_points(6)  # Fewer points than dimensions: the sample cov is singular.
  fit = samplers.fit_gaussian(points)
  assert fit.settings["estimator"] == "ledoit_wolf"
  assert 0.0 < fit.settings["shrinkage"] <= 1.0
  assert len(fit.notes) == 1 and "Ledoit-Wolf" in fit.notes[0] and "6 z-points" in fit.notes[0]
  assert np.linalg.eigvalsh(fit.covariances[0]).min() > 0  # Regularised: positive definite.
  assert np.isfinite(fit.sample(50, seed=0)).all()


def test_gmm_finds_separated_clusters_and_is_seeded():
  rng = np.random.default_rng(0)
  centres = np.array([[-6.0] * DIM, [6.0] * DIM])
  points = np.concatenate([c + rng.normal(size=(1000, DIM)) for c in centres])
  fit = samplers.fit_gmm(points, components=2, seed=0)
  assert fit.settings["components"] == 2 and fit.settings["covariance"] == "full"
  found = fit.means[np.argsort(fit.means[:, 0])]
  np.testing.assert_allclose(found, centres, atol=0.2)
  np.testing.assert_allclose(fit.weights, [0.5, 0.5], atol=0.02)
  z = fit.sample(2000, seed=5)
  np.testing.assert_array_equal(z, fit.sample(2000, seed=5))
  assert 0.4 < (z[:, 0] > 0).mean() < 0.6  # Both components are sampled by their weights.
  again = samplers.fit_gmm(points, components=2, seed=0)
  np.testing.assert_array_equal(again.means, fit.means)


def test_gmm_with_few_points_reduces_components_and_covariance():
  points = _correlated_points(40)
  fit = samplers.fit_gmm(points, components=10, seed=0)
  assert fit.settings["components"] == 4  # 40 points // 10 per component.
  assert fit.settings["covariance"] == "diag"  # 40 < 2 * (8 + 1) * 4 points.
  assert fit.covariances.shape == (4, DIM)
  assert any("4 component(s)" in note for note in fit.notes)
  assert any("diagonal" in note for note in fit.notes)
  z = fit.sample(28, seed=0)
  assert z.shape == (28, DIM) and np.isfinite(z).all()


def test_fits_reject_bad_points():
  with pytest.raises(EvaluationError, match="NaN"):
    samplers.fit_gaussian(np.array([[0.0, np.nan], [1.0, 2.0]]))
  with pytest.raises(EvaluationError, match="at least 2"):
    samplers.fit_gmm(np.zeros((1, 3)))
  with pytest.raises(EvaluationError, match=r"\[N, dim\]"):
    samplers.fit_gaussian(np.zeros(5))


def test_interpolation_is_a_straight_line():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(3, DIM)), rng.normal(size=(3, DIM))
  lines = samplers.interpolate(a, b, steps=5)
  assert lines.shape == (3, 5, DIM) and lines.dtype == np.float32
  np.testing.assert_allclose(lines[:, 0], a, rtol=1e-6)
  np.testing.assert_allclose(lines[:, -1], b, rtol=1e-6)
  np.testing.assert_allclose(lines[:, 2], (a + b) / 2, rtol=1e-5, atol=1e-6)
  # Equal steps along the line.
  steps = np.linalg.norm(np.diff(lines, axis=1), axis=-1)
  np.testing.assert_allclose(steps, steps[:, :1].repeat(4, axis=1), rtol=1e-4)
  with pytest.raises(EvaluationError, match="2 steps"):
    samplers.interpolate(a, b, steps=1)


def test_attribute_vector_recovers_a_planted_direction():
  rng = np.random.default_rng(0)
  n = 4000
  attributes = np.where(rng.random((n, 3)) < 0.4, 1, -1).astype(np.int32)
  direction = np.zeros(DIM)
  direction[2] = 3.0
  z = rng.normal(size=(n, DIM)) + (attributes[:, 1:2] > 0) * direction
  vector, info = samplers.attribute_vector(z, attributes, index=1, name="Smiling")
  np.testing.assert_allclose(vector, direction, atol=0.15)
  assert info["num_with"] + info["num_without"] == n
  assert info["norm"] == pytest.approx(3.0, abs=0.15)
  shifted = samplers.shift_along(z[:5], vector, [-2, 0, 2])
  assert shifted.shape == (5, 3, DIM)
  np.testing.assert_allclose(shifted[:, 1], z[:5], rtol=1e-6)
  np.testing.assert_allclose(shifted[:, 2] - shifted[:, 0], np.tile(4 * vector, (5, 1)),
                             rtol=1e-5, atol=1e-5)
  one_sided = np.ones_like(attributes)
  with pytest.raises(EvaluationError, match="Smiling.*0 without"):
    samplers.attribute_vector(z, one_sided, index=1, name="Smiling")
