"""The latent-space libraries against direct NumPy computations (no TensorFlow, a few seconds).

Covers evaluation.correlation, statistics, slicing, geometry and zpoints: streaming results
equal the one-shot NumPy ones for every chunking, counts equal double loops, FWHM is exact on
hand-made histograms, and z-point files are checked, read in chunks and written all-or-nothing.
"""

import os

import numpy as np
import pytest
from scipy import stats

from evaluation import correlation
from evaluation import geometry
from evaluation import slicing
from evaluation import z_components
from evaluation import zpoints
from evaluation.errors import EvaluationError


def _planted(n=3000, seed=0):
  """[n, 8] points with known correlations and large offsets (the study's |mean| >> std).

  z = x @ A + offset with x ~ N(0, I): A couples components 0-1 strongly, 2-3 negatively and
  4-5-6 through a common factor; component 7 sits at 1e4 with std 0.01, where the naive
  sum(z z^T) - n mean mean^T loses every digit that a 1e-6 comparison looks at.
  """
  rng = np.random.default_rng(seed)
  a = np.eye(8)
  a[0, 1] = 2.0        # z1 = 2 x0 + x1: r = 2 / sqrt(5).
  a[2, 3] = -0.5       # z3 = -0.5 x2 + x3.
  a[4, 5] = a[4, 6] = 1.0
  a *= np.array([1.0, 0.5, 2.0, 1.0, 0.3, 1.0, 3.0, 0.01])
  offset = np.array([50.0, -50.0, 0.0, 3.0, 50.0, 0.5, -7.0, 1e4])
  return rng.normal(size=(n, 8)) @ a + offset


# ---------------------------------------------------------------------------------------------
# correlation


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000, 5000])
def test_streaming_correlation_equals_corrcoef_for_every_chunking(chunk_rows):
  z = _planted()
  acc = correlation.accumulate(z, chunk_rows=chunk_rows)
  assert acc.count == len(z)
  np.testing.assert_allclose(acc.correlation(), np.corrcoef(z, rowvar=False), rtol=0, atol=1e-6)
  np.testing.assert_allclose(acc.covariance(), np.cov(z, rowvar=False), rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(acc.variance(), z.var(axis=0), rtol=1e-9)
  np.testing.assert_allclose(acc.mean, z.mean(axis=0), rtol=1e-12)
  assert len(acc.constant_components()) == 0


def test_planted_data_defeats_the_naive_formula():
  # Guards the test above: on this data the one-pass formula is off by far more than 1e-6, so
  # passing it needs the centred (Chan et al.) accumulation.
  z = _planted()
  n = len(z)
  mean = z.mean(axis=0)
  naive_cov = (z.T @ z - n * np.outer(mean, mean)) / (n - 1)
  err = np.abs(naive_cov[7, 7] - np.cov(z, rowvar=False)[7, 7]) / np.cov(z, rowvar=False)[7, 7]
  assert err > 1e-6


def test_float32_input_and_a_rows_subset():
  z = _planted(seed=1).astype(np.float32)
  rows = correlation.sample_rows(len(z), 500, seed=3)
  acc = correlation.accumulate(z, rows=rows, chunk_rows=7)
  assert acc.count == 500
  expected = np.corrcoef(z[rows].astype(np.float64), rowvar=False)
  np.testing.assert_allclose(acc.correlation(), expected, rtol=0, atol=1e-6)
  np.testing.assert_allclose(acc.covariance(ddof=0),
                             np.cov(z[rows].astype(np.float64), rowvar=False, ddof=0),
                             rtol=1e-6)


def test_constant_component_has_zero_rows_and_is_listed():
  z = _planted(1000)
  z[:, 3] = np.float32(0.1)  # Not exactly representable: the chunk means round.
  z[:, 7] = 1e4
  acc = correlation.accumulate(z, chunk_rows=7)
  np.testing.assert_array_equal(acc.constant_components(), [3, 7])
  r = acc.correlation()
  for k in (3, 7):
    expected_row = np.zeros(8)
    expected_row[k] = 1.0
    np.testing.assert_array_equal(r[k], expected_row)
    np.testing.assert_array_equal(r[:, k], expected_row)
  with np.errstate(invalid="ignore", divide="ignore"):
    reference = np.corrcoef(z, rowvar=False)  # NaN rows for the constant components.
  keep = [0, 1, 2, 4, 5, 6]
  np.testing.assert_allclose(r[np.ix_(keep, keep)], reference[np.ix_(keep, keep)], atol=1e-6)
  # numpy's NaN comparisons count nothing for constant components; neither do the counts.
  thresholds = correlation.DEFAULT_THRESHOLDS
  upper = np.abs(reference[np.triu_indices(8, k=1)])
  with np.errstate(invalid="ignore"):
    expected = {correlation.threshold_label(t): int(np.sum(upper > t)) for t in thresholds}
  assert correlation.counts_above(r, thresholds) == expected


def test_streaming_correlation_rejects_bad_input_and_too_few_points():
  acc = correlation.StreamingCorrelation(3)
  with pytest.raises(EvaluationError, match="at least 2 z-points"):
    acc.correlation()
  with pytest.raises(EvaluationError, match="3 components"):
    acc.update(np.zeros((4, 2)))
  with pytest.raises(EvaluationError, match="3 components"):
    acc.update(np.zeros(3))
  acc.update(np.zeros((0, 3)))  # An empty chunk changes nothing.
  assert acc.count == 0
  acc.update(np.ones((1, 3)))
  with pytest.raises(EvaluationError, match="got 1"):
    acc.covariance()
  assert acc.variance().tolist() == [0.0, 0.0, 0.0]


def _double_loop(r, threshold):
  pairs = []
  for i in range(len(r)):
    for j in range(i + 1, len(r)):
      if abs(r[i, j]) > threshold:
        pairs.append([i, j, float(r[i, j])])
  return pairs


def test_counts_and_pairs_above_match_a_double_loop():
  rng = np.random.default_rng(5)
  # Few points for 12 components: plenty of |r| spread over (0, 1), of both signs.
  r = np.corrcoef(rng.normal(size=(15, 12)) @ rng.normal(size=(12, 12)), rowvar=False)
  r[2, 9] = r[9, 2] = 0.5  # Exactly on a threshold: "above" is strict, as in the study.
  r[4, 5] = r[5, 4] = -0.3
  thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.95)
  counts = correlation.counts_above(r, thresholds)
  assert list(counts) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.95"]
  for t in thresholds:
    expected = _double_loop(r, t)
    assert counts[correlation.threshold_label(t)] == len(expected)
    assert correlation.pairs_above(r, t) == expected
  assert [2, 9, 0.5] not in correlation.pairs_above(r, 0.5)
  assert [2, 9, 0.5] in correlation.pairs_above(r, 0.4999)
  assert 0 < counts["0.5"] < counts["0.1"] < 66


def test_strongest_pairs_order_and_ties():
  r = np.eye(4)
  for (i, j), value in {(0, 1): 0.3, (2, 3): -0.9, (1, 2): 0.5, (0, 3): -0.5,
                        (0, 2): 0.1, (1, 3): 0.0}.items():
    r[i, j] = r[j, i] = value
  assert correlation.strongest_pairs(r, 4) == [[2, 3, -0.9], [0, 3, -0.5], [1, 2, 0.5],
                                               [0, 1, 0.3]]
  assert len(correlation.strongest_pairs(r, 100)) == 6
  assert correlation.strongest_pairs(r, 0) == []


def test_threshold_label():
  assert correlation.threshold_label("0.5") == "0.5"
  assert correlation.threshold_label(0.5) == "0.5"
  assert correlation.threshold_label(1.0) == "1"
  assert correlation.threshold_label(0.1) == "0.1"
  assert [correlation.threshold_label(t) for t in correlation.DEFAULT_THRESHOLDS] == [
      "0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]


def test_sample_rows_is_seeded_sorted_and_checked():
  rows = correlation.sample_rows(170000, 5000, seed=0)
  assert rows.shape == (5000,) and len(np.unique(rows)) == 5000
  assert np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < 170000
  np.testing.assert_array_equal(rows, correlation.sample_rows(170000, 5000, seed=0))
  assert not np.array_equal(rows, correlation.sample_rows(170000, 5000, seed=1))
  expected = np.sort(np.random.default_rng(7).choice(1000, size=10, replace=False))
  np.testing.assert_array_equal(correlation.sample_rows(1000, 10, seed=7), expected)
  assert correlation.sample_rows(1000, 1000, seed=0) is None
  assert correlation.sample_rows(1000, 5000, seed=0) is None
  assert correlation.sample_rows(1000, None, seed=0) is None
  for bad in (1, 0, -3):
    with pytest.raises(EvaluationError, match="--num_samples must be at least 2"):
      correlation.sample_rows(1000, bad, seed=0)


# ---------------------------------------------------------------------------------------------
# statistics


def test_fwhm_of_hand_made_histograms():
  fwhm = z_components.full_width_at_half_maximum
  # Peak 10 at x=4, half 5: left crossing 3 - (6-5)/(6-2) = 2.75, right 5 + (8-5)/(8-4) = 5.75.
  centres = np.arange(11, dtype=float)
  assert fwhm(centres, [0, 0, 2, 6, 10, 8, 4, 0, 0, 0, 0]) == pytest.approx((3.0, 4.0))
  # The same shape on bins of width 0.25 starting at 0.625: widths scale, the peak moves.
  assert fwhm(0.625 + 0.25 * centres, [0, 0, 2, 6, 10, 8, 4, 0, 0, 0, 0]) == pytest.approx(
      (0.75, 1.625))
  # Bins at exactly half height are inside; the crossing is then their centre (1 and 4).
  assert fwhm(centres[:7], [0, 5, 10, 10, 5, 0, 0]) == pytest.approx((3.0, 2.0))
  # Peak in the first bin: the bin beyond the edge counts as empty (crossing at -0.5).
  assert fwhm(centres[:3], [10, 4, 0]) == pytest.approx((0.5 + 5 / 6, 0.0))
  # One occupied bin between empty ones: the crossings sit half a bin out on each side.
  assert fwhm(centres[:3], [0, 7, 0]) == pytest.approx((1.0, 1.0))
  # The walk stops at the first bin below half: a second, separate mode is not included.
  assert fwhm(centres[:7], [0, 10, 0, 0, 9, 0, 0]) == pytest.approx((1.0, 1.0))
  assert fwhm(np.array([3.5]), [12]) == (0.0, 3.5)


def test_component_statistics_on_gaussians():
  rng = np.random.default_rng(0)
  mean, std = np.array([0.0, 1.5, -2.0]), np.array([1.0, 0.5, 3.0])
  z = rng.normal(size=(200000, 3)) * std + mean
  acc = correlation.accumulate(z)
  components, histograms, settings = z_components.component_statistics(z, acc, chunk_rows=30000)
  assert settings == {"bins": "scott", "bin_width": None}
  assert [c["index"] for c in components] == [0, 1, 2]
  for j, c in enumerate(components):
    assert c["mean"] == pytest.approx(z[:, j].mean(), rel=1e-12, abs=1e-12)
    assert c["std"] == pytest.approx(z[:, j].std(), rel=1e-12)
    assert (c["min"], c["max"]) == (z[:, j].min(), z[:, j].max())
    assert c["half_width_gaussian"] == pytest.approx(z_components.GAUSSIAN_FWHM_PER_STD * c["std"])
    assert z_components.GAUSSIAN_FWHM_PER_STD == pytest.approx(2.3548, abs=1e-4)
    # Measured off a 200k-point histogram: within a few percent of 2.355 std.
    assert c["half_width"] == pytest.approx(2.3548 * std[j], rel=0.03)
    # The mode of a noisy histogram whose top is flat to 2% over +-0.2 std.
    assert abs(c["peak"] - mean[j]) < 0.25 * std[j]
    assert c["bin_width"] == pytest.approx(3.49 * c["std"] * len(z) ** (-1 / 3))
    centres, counts = histograms.component(j)
    assert counts.sum() == len(z)
    np.testing.assert_allclose(np.diff(centres), c["bin_width"])


def test_fixed_bin_width_aligns_every_component_on_its_multiples():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(5000, 4)) * [0.3, 1.0, 2.0, 0.7] + [0.33, -1.17, 4.05, 0.0]
  z[:, 3] = 0.3  # Constant: one bin, half-width 0.
  acc = correlation.accumulate(z)
  components, histograms, settings = z_components.component_statistics(
      z, acc, bin_width=0.125, chunk_rows=777)
  assert settings == {"bins": "fixed", "bin_width": 0.125}
  for j, c in enumerate(components):
    assert c["bin_width"] == 0.125
    centres, counts = histograms.component(j)
    # Bin edges on multiples of 0.125, so centres at k * 0.125 + 0.0625 for every component.
    np.testing.assert_allclose((centres - 0.0625) / 0.125, np.round((centres - 0.0625) / 0.125),
                               atol=1e-9)
    edges = np.concatenate([centres - 0.0625, [centres[-1] + 0.0625]])
    np.testing.assert_array_equal(counts, np.histogram(z[:, j], edges)[0])
    assert c["peak"] in centres
  assert components[3]["std"] == 0.0 and components[3]["half_width"] == 0.0
  with pytest.raises(EvaluationError, match="bin width must be > 0"):
    z_components.component_statistics(z, acc, bin_width=0.0)


@pytest.mark.parametrize("chunk_rows", [1, 777, 16384])
def test_constant_components_have_std_and_half_width_zero_and_peak_at_their_value(chunk_rows):
  z = np.random.default_rng(6).normal(size=(3000, 4))
  z[:, 1], z[:, 2], z[:, 3] = 0.0, 0.3, 1e4 + 0.1  # A dead unit, and two constants that round.
  acc = correlation.accumulate(z, chunk_rows=chunk_rows)
  components, _, _ = z_components.component_statistics(z, acc, chunk_rows=chunk_rows)
  for j in (1, 2, 3):
    c = components[j]
    assert (c["std"], c["half_width"], c["half_width_gaussian"]) == (0.0, 0.0, 0.0)
    assert c["peak"] == pytest.approx(z[0, j], rel=1e-14, abs=1e-14)
    assert c["min"] == c["max"] == z[0, j]
  assert components[0]["std"] > 0.9


def test_component_statistics_over_a_rows_subset():
  z = _planted(2000)
  rows = correlation.sample_rows(len(z), 300, seed=2)
  acc = correlation.accumulate(z, rows=rows)
  components, _, _ = z_components.component_statistics(z, acc, rows=rows, chunk_rows=64)
  np.testing.assert_allclose([c["mean"] for c in components], z[rows].mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose([c["std"] for c in components], z[rows].std(axis=0), rtol=1e-9)
  np.testing.assert_array_equal([c["max"] for c in components], z[rows].max(axis=0))


def _component(index, mean, half_width):
  return {"index": index, "mean": mean, "half_width": half_width}


def test_dominant_and_most_dominant_components():
  components = [_component(0, 0.1, 1.0),    # Neither.
                _component(1, -0.6, 1.0),   # |mean| >= 0.5: score 1.2.
                _component(2, 0.0, 3.0),    # half-width >= 1.5: score 2.
                _component(3, 0.5, 1.5),    # Both exactly at the cut-offs: score 1.
                _component(4, 2.0, 0.2),    # Score 4.
                _component(5, 1.0, 0.0),    # Score 2, tied with 2.
                _component(6, 0.49, 1.49)]  # Just below both.
  dominant = z_components.dominant_components(components)
  assert dominant["abs_mean_cutoff"] == 0.5 and dominant["half_width_cutoff"] == 1.5
  assert dominant["count"] == 5
  entries = {e["index"]: e for e in dominant["components"]}
  assert list(entries) == [1, 2, 3, 4, 5]
  assert (entries[1]["large_mean"], entries[1]["large_width"]) == (True, False)
  assert (entries[2]["large_mean"], entries[2]["large_width"]) == (False, True)
  assert (entries[3]["large_mean"], entries[3]["large_width"]) == (True, True)
  assert [entries[k]["score"] for k in (1, 2, 3, 4, 5)] == pytest.approx([1.2, 2, 1, 4, 2])
  assert all(e["score"] >= 1 for e in dominant["components"])
  # Ties by index: 2 before 5.
  assert z_components.most_dominant(components, 3) == [4, 2, 5]
  assert z_components.most_dominant(components, 100) == [4, 2, 5, 1, 3, 6, 0]
  strict = z_components.dominant_components(components, abs_mean_cutoff=1.0, half_width_cutoff=4.0)
  assert [e["index"] for e in strict["components"]] == [4, 5]


def test_active_units():
  active = z_components.active_units(np.array([0.5, 0.01, 0.02, 0.0, 3.0]))
  assert active == {"threshold": 0.01, "count": 3, "indices": [0, 2, 4]}
  assert z_components.active_units([0.5, 0.2], threshold=0.3)["indices"] == [0]


def test_kl_per_dimension_equals_the_direct_formula():
  rng = np.random.default_rng(2)
  mu = rng.normal(size=(1000, 5)) * [0.1, 1.0, 2.0, 0.0, 0.5]
  log_var = rng.normal(size=(1000, 5)) * 0.5 - [0.0, 1.0, 3.0, 0.0, 0.2]
  log_var[:, 3] = 0.0  # mu = 0, var = 1: exactly the prior, KL 0.
  expected = (0.5 * (mu ** 2 + np.exp(log_var) - 1.0 - log_var)).mean(axis=0)
  kl = z_components.kl_per_dimension(mu, log_var, chunk_rows=7)
  np.testing.assert_allclose(kl, expected, rtol=1e-12)
  assert kl[3] == 0.0 and np.all(kl >= 0)
  with pytest.raises(EvaluationError, match="--with_log_var"):
    z_components.kl_per_dimension(mu, log_var[:, :4])


def test_gaussian_total_correlation():
  r = np.corrcoef(_planted(), rowvar=False)
  assert z_components.gaussian_total_correlation(r) == pytest.approx(
      -0.5 * np.log(np.linalg.det(r)), rel=1e-10)
  assert z_components.gaussian_total_correlation(r) > 0.1
  assert z_components.gaussian_total_correlation(np.eye(6)) == 0.0
  rho = 0.6
  assert z_components.gaussian_total_correlation(np.array([[1, rho], [rho, 1]])) == pytest.approx(
      -0.5 * np.log(1 - rho ** 2))
  # Constant components (zero rows, diagonal 1, as correlation() returns them) are left out.
  padded = np.eye(4)
  padded[np.ix_([0, 2], [0, 2])] = [[1, rho], [rho, 1]]
  assert z_components.gaussian_total_correlation(padded, constant=[1, 3]) == pytest.approx(
      -0.5 * np.log(1 - rho ** 2))
  assert z_components.gaussian_total_correlation(np.eye(3), constant=[0, 1, 2]) is None
  assert z_components.gaussian_total_correlation(np.ones((3, 3))) is None  # Singular.


# ---------------------------------------------------------------------------------------------
# slicing


def _direct_slice(z, c1, c2, threshold):
  ok = np.abs(z) < threshold
  stages = [ok[:, :c1].all(axis=1)]
  stages.append(stages[-1] & ok[:, c1 + 1:c2].all(axis=1))
  stages.append(stages[-1] & ok[:, c2 + 1:].all(axis=1))
  return [int(s.sum()) for s in stages], np.flatnonzero(stages[-1])


def test_study_slice_matches_direct_numpy():
  z = np.random.default_rng(3).normal(size=(5000, 10)) * 0.9
  report, selected = slicing.study_slice(z, (7, 3), 2.0, chunk_rows=333)
  counts, expected = _direct_slice(z, 3, 7, 2.0)
  assert report["components"] == [3, 7] and report["threshold"] == 2.0
  assert report["num_considered"] == 5000
  assert [s["components"] for s in report["stages"]] == ["[0, 3)", "[4, 7)", "[8, 10)"]
  assert [s["count"] for s in report["stages"]] == counts
  assert report["count"] == counts[-1]
  assert counts[0] > counts[1] > counts[2] > 0
  np.testing.assert_array_equal(selected, expected)
  assert np.all(np.abs(np.delete(z[selected], [3, 7], axis=1)) < 2.0)


def test_study_slice_over_a_rows_subset_and_at_the_edges():
  z = np.random.default_rng(4).normal(size=(4000, 6))
  rows = correlation.sample_rows(len(z), 700, seed=1)
  report, selected = slicing.study_slice(z, (1, 4), 1.5, rows=rows, chunk_rows=50)
  counts, expected = _direct_slice(z[rows], 1, 4, 1.5)
  assert report["num_considered"] == 700
  assert [s["count"] for s in report["stages"]] == counts
  np.testing.assert_array_equal(selected, rows[expected])
  # First and last component free: the outer stages are empty ranges that keep everything.
  report, selected = slicing.study_slice(z, (0, 5), 1.5)
  counts, expected = _direct_slice(z, 0, 5, 1.5)
  assert [s["components"] for s in report["stages"]] == ["[0, 0)", "[1, 5)", "[6, 6)"]
  assert [s["count"] for s in report["stages"]] == [4000, counts[1], counts[1]]
  np.testing.assert_array_equal(selected, expected)


@pytest.mark.parametrize("components", [(3, 3), (-1, 2), (2, 6), (1,), (1, 2, 3), ()])
def test_study_slice_rejects_bad_components(components):
  z = np.zeros((10, 6))
  with pytest.raises(EvaluationError, match=r"--slice_components needs two different .*\[0, 5\]"):
    slicing.study_slice(z, components, 2.0)


@pytest.mark.parametrize("threshold", [0.0, -1.0])
def test_study_slice_rejects_bad_thresholds(threshold):
  with pytest.raises(EvaluationError, match="--slice_threshold must be > 0"):
    slicing.study_slice(np.zeros((10, 6)), (1, 2), threshold)


# ---------------------------------------------------------------------------------------------
# geometry


def test_radius_summary_and_stats():
  summary = geometry.radius_summary(np.arange(1, 101))
  assert summary["count"] == 100 and summary["mean"] == 50.5
  assert (summary["min"], summary["max"]) == (1.0, 100.0)
  assert summary["std"] == pytest.approx(np.arange(1, 101).std())
  assert summary["p50"] == 50.5 and summary["p1"] == pytest.approx(1.99)
  assert set(summary) == {"count", "mean", "std", "min", "max", "p1", "p5", "p25", "p50",
                          "p75", "p95", "p99"}
  z = np.array([[3.0, 4.0], [0.0, 0.0], [-6.0, 8.0]], np.float32)
  stats_ = geometry.radius_stats(z)
  assert (stats_["min"], stats_["max"], stats_["mean"]) == (0.0, 10.0, 5.0)
  with pytest.raises(EvaluationError):
    geometry.radius_stats(np.zeros(3))


def _cloud_points(n=20000, dim=8, seed=0):
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(dim, dim)) * np.linspace(0.3, 2.0, dim)
  return rng.normal(size=(n, dim)) @ mixing.T + np.linspace(-2.0, 5.0, dim)


def test_inside_fraction_for_the_fitted_gaussian_and_far_away():
  cloud = geometry.GaussianCloud.fit(_cloud_points())
  assert cloud.dim == 8 and cloud.notes == ()
  own = np.random.default_rng(1).multivariate_normal(cloud.mean, cloud.covariance, size=40000)
  assert cloud.inside_fraction(own, 0.99) == pytest.approx(0.99, abs=0.01)
  assert cloud.inside_fraction(own, 0.5) == pytest.approx(0.5, abs=0.02)
  far = own + 10.0 * np.sqrt(np.diag(cloud.covariance))
  assert cloud.inside_fraction(far, 0.99) < 0.01
  assert cloud.threshold(0.99) == pytest.approx(stats.chi2.ppf(0.99, df=8))
  for bad in (0.0, 1.0, 1.5):
    with pytest.raises(EvaluationError, match="quantile"):
      cloud.threshold(bad)
  with pytest.raises(EvaluationError, match="dimensions"):
    cloud.mahalanobis_sq(np.zeros((2, 7)))


def test_mahalanobis_equals_the_direct_formula():
  cloud = geometry.GaussianCloud.fit(_cloud_points(2000))
  z = _cloud_points(50, seed=9)
  diff = z - cloud.mean
  expected = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cloud.covariance), diff)
  np.testing.assert_allclose(cloud.mahalanobis_sq(z, batch_size=7), expected, rtol=1e-8)


def test_centre_offset():
  points = _cloud_points()
  centred = geometry.GaussianCloud.fit(points - points.mean(axis=0)).centre_offset()
  assert centred["centre_norm"] < 1e-10 and centred["origin_mahalanobis"] < 1e-10
  assert centred["centre_norm_in_rms_std"] < 1e-10
  # An isotropic cloud (std 2) centred exactly at m, |m| = 6: 3 typical stds off the origin.
  rng = np.random.default_rng(2)
  iso = rng.normal(size=(20000, 8)) * 2.0
  shift = np.full(8, 6.0 / np.sqrt(8))
  offset = geometry.GaussianCloud.fit(iso - iso.mean(axis=0) + shift).centre_offset()
  assert offset["centre_norm"] == pytest.approx(6.0, rel=1e-10)
  assert offset["rms_std"] == pytest.approx(2.0, rel=0.02)
  assert offset["centre_norm_in_rms_std"] == pytest.approx(3.0, rel=0.02)
  assert offset["origin_mahalanobis"] == pytest.approx(3.0, rel=0.03)
  cov = np.cov(iso, rowvar=False)
  assert offset["origin_mahalanobis"] == pytest.approx(
      np.sqrt(shift @ np.linalg.solve(cov, shift)), rel=1e-8)


# ---------------------------------------------------------------------------------------------
# zpoints: loading, chunked reading, atomic writing, encoding


def _save(tmp_path, name, array):
  path = tmp_path / name
  np.save(path, array)
  return str(path)


def _bad_files(tmp_path):
  nan = np.zeros((20, 3), np.float32)
  nan[12, 1] = np.nan
  inf = np.zeros((20, 3))
  inf[17, 2] = -np.inf
  (tmp_path / "text.npy").write_text("z-points, honestly\n")
  (tmp_path / "zero.npy").write_bytes(b"")
  return {
      "1-D": (_save(tmp_path, "flat.npy", np.zeros(8, np.float32)), "shape (8,)"),
      "3-D": (_save(tmp_path, "cube.npy", np.zeros((2, 3, 4), np.float32)), "shape (2, 3, 4)"),
      "no rows": (_save(tmp_path, "empty.npy", np.zeros((0, 4), np.float32)), "non-empty"),
      "no columns": (_save(tmp_path, "thin.npy", np.zeros((4, 0), np.float32)), "non-empty"),
      "NaN": (_save(tmp_path, "nan.npy", nan), "first in row 12"),
      "Inf": (_save(tmp_path, "inf.npy", inf), "first in row 17"),
      "integers": (_save(tmp_path, "ints.npy", np.zeros((4, 3), np.int32)), "dtype int32"),
      "text": (str(tmp_path / "text.npy"), "not a readable .npy"),
      "zero bytes": (str(tmp_path / "zero.npy"), "not a readable .npy"),
      "missing": (str(tmp_path / "nowhere.npy"), "does not exist"),
      "directory": (str(tmp_path), "does not exist"),
  }


def test_load_z_points_rejects_bad_files_naming_them(tmp_path, monkeypatch):
  monkeypatch.setattr(zpoints, "_CHECK_ROWS", 5)  # Several check blocks: the row is absolute.
  for kind, (path, expected) in _bad_files(tmp_path).items():
    with pytest.raises(EvaluationError) as raised:
      zpoints.load_z_points(path)
    message = str(raised.value)
    assert message.startswith(f"--z_points {path} "), (kind, message)
    assert expected in message, (kind, message)
    assert "\n" not in message, (kind, message)
  with pytest.raises(EvaluationError, match="^--fit_points .*nowhere.npy does not exist"):
    zpoints.load_z_points(tmp_path / "nowhere.npy", what="--fit_points")


def test_load_z_points_maps_good_files_read_only(tmp_path):
  z = _planted(100).astype(np.float32)
  loaded = zpoints.load_z_points(_save(tmp_path, "Z.npy", z))
  assert isinstance(loaded, np.memmap) and loaded.dtype == np.float32
  np.testing.assert_array_equal(loaded, z)
  with pytest.raises(ValueError):
    loaded[0, 0] = 1.0
  loaded64 = zpoints.load_z_points(_save(tmp_path, "Z64.npy", z.astype(np.float64)))
  assert loaded64.dtype == np.float64


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_iter_chunks_of_arrays_and_memmaps(tmp_path, chunk_rows):
  z = _planted(250).astype(np.float32)
  mapped = zpoints.load_z_points(_save(tmp_path, "Z.npy", z))
  rows = np.array([0, 3, 4, 100, 101, 249])
  for source in (z, mapped):
    chunks = list(zpoints.iter_chunks(source, chunk_rows))
    assert all(c.dtype == np.float64 for c in chunks)
    assert [len(c) for c in chunks[:-1]] == [chunk_rows] * (len(chunks) - 1)
    assert len(chunks) == -(-250 // chunk_rows)
    np.testing.assert_array_equal(np.concatenate(chunks), z.astype(np.float64))
    picked = np.concatenate(list(zpoints.iter_chunks(source, chunk_rows, rows)))
    np.testing.assert_array_equal(picked, z[rows].astype(np.float64))
  # Released pages come back from the file: the map still reads the same values afterwards.
  np.testing.assert_array_equal(mapped, z)
  # The same chunks give bit-identical results from the file and from memory.
  from_file = correlation.accumulate(mapped, rows=rows, chunk_rows=chunk_rows)
  from_memory = correlation.accumulate(z, rows=rows, chunk_rows=chunk_rows)
  np.testing.assert_array_equal(from_file.correlation(), from_memory.correlation())
  assert [len(c) for c in zpoints.iter_chunks(z, 0)] == [1] * 250  # At least one row a chunk.


def test_iter_chunks_leaves_writable_maps_alone(tmp_path):
  path = _save(tmp_path, "Z.npy", np.ones((10, 2), np.float32))
  writable = np.load(path, mmap_mode="r+")
  for chunk in zpoints.iter_chunks(writable, 3):
    assert chunk.shape[1] == 2
  writable[0, 0] = 5.0  # Not advised away: the write reaches the file.
  writable.flush()
  del writable
  assert np.load(path)[0, 0] == 5.0


def _leftovers(directory):
  return sorted(name for name in os.listdir(directory) if "partial" in name)


def test_writer_renames_only_when_complete(tmp_path):
  path = tmp_path / "sub" / "Z.npy"
  with zpoints.ZPointsWriter(path, 5, 3) as writer:
    writer.append(np.ones((2, 3)))
    assert not path.exists() and _leftovers(tmp_path / "sub") == ["Z.npy.partial.npy"]
    writer.append(np.arange(9).reshape(3, 3))
  np.testing.assert_array_equal(np.load(path), np.vstack([np.ones((2, 3)),
                                                          np.arange(9).reshape(3, 3)]))
  assert np.load(path).dtype == np.float32 and _leftovers(tmp_path / "sub") == []
  before = path.read_bytes()
  # A rewrite that fails leaves the complete earlier file as it was, and no partial file.
  with pytest.raises(EvaluationError, match="only 2 of 5 rows were written to .*Z.npy"):
    with zpoints.ZPointsWriter(path, 5, 3) as writer:
      writer.append(np.zeros((2, 3)))
  with pytest.raises(RuntimeError, match="encoder crashed"):
    with zpoints.ZPointsWriter(path, 5, 3) as writer:
      writer.append(np.zeros((2, 3)))
      raise RuntimeError("encoder crashed")
  with pytest.raises(EvaluationError, match=r"cannot append rows of shape \(6, 3\) at row 0"):
    with zpoints.ZPointsWriter(path, 5, 3) as writer:
      writer.append(np.zeros((6, 3)))
  with pytest.raises(EvaluationError, match=r"shape \(2, 4\)"):
    with zpoints.ZPointsWriter(path, 5, 3) as writer:
      writer.append(np.zeros((2, 4)))
  assert path.read_bytes() == before and _leftovers(tmp_path / "sub") == []


def _fake_encoder(images):
  """uint8 [B, 2, 2, 3] -> [B, 4]: per-pixel means, scaled (a deterministic stand-in)."""
  return images.reshape(len(images), 4, 3).mean(axis=2) / 255.0


def _fake_vae_encoder(images):
  z = _fake_encoder(images)
  return z, -z


def _batches(sizes, str_ids=False):
  rng = np.random.default_rng(0)
  batches, number = [], 1
  for size in sizes:
    ids = [f"{k:06d}.jpg" for k in range(number, number + size)]
    batches.append({"image": rng.integers(0, 256, size=(size, 2, 2, 3), dtype=np.uint8),
                    "id": np.array(ids if str_ids else [i.encode() for i in ids])})
    number += size
  return batches


@pytest.mark.parametrize("str_ids", [False, True])
def test_encode_to_npy_writes_z_and_ids(tmp_path, str_ids):
  batches = _batches([3, 3, 2], str_ids)
  output = tmp_path / "Z.npy"
  result = zpoints.encode_to_npy(_fake_encoder, iter(batches), output, 8)
  assert result == {"num_vectors": 8, "dim": 4,
                    "files": [str(output), str(tmp_path / "Z.ids.npy")]}
  expected = np.concatenate([_fake_encoder(b["image"]) for b in batches]).astype(np.float32)
  np.testing.assert_array_equal(zpoints.load_z_points(output), expected)
  assert zpoints.load_ids(output).tolist() == [f"{k:06d}.jpg" for k in range(1, 9)]
  assert not (tmp_path / "Z.log_var.npy").exists() and _leftovers(tmp_path) == []


def test_encode_to_npy_with_log_var(tmp_path):
  batches = _batches([4, 4, 1])
  output = str(tmp_path / "Z.npy")
  result = zpoints.encode_to_npy(_fake_vae_encoder, batches, output, 9, with_log_var=True)
  assert result["files"] == [output, zpoints.companion_path(output, "log_var"),
                             zpoints.companion_path(output, "ids")]
  assert zpoints.companion_path(output, "log_var") == str(tmp_path / "Z.log_var.npy")
  z = np.load(output)
  np.testing.assert_array_equal(np.load(tmp_path / "Z.log_var.npy"), -z)
  assert z.shape == (9, 4) and len(zpoints.load_ids(output)) == 9


@pytest.mark.parametrize("with_log_var", [False, True])
@pytest.mark.parametrize("total", [10, 7])
def test_encode_to_npy_writes_all_or_nothing(tmp_path, with_log_var, total):
  # 8 rows arrive: fewer than 10 (caught at the end) or more than 7 (caught on append).
  encoder = _fake_vae_encoder if with_log_var else _fake_encoder
  with pytest.raises(EvaluationError, match="nothing was saved|cannot append"):
    zpoints.encode_to_npy(encoder, _batches([3, 3, 2]), tmp_path / "Z.npy", total,
                          with_log_var=with_log_var)
  assert os.listdir(tmp_path) == []


def test_encode_to_npy_failures_leave_nothing(tmp_path):
  output = tmp_path / "Z.npy"
  with pytest.raises(EvaluationError, match="no images to encode into .*Z.npy"):
    zpoints.encode_to_npy(_fake_encoder, [], output, 5)
  with pytest.raises(EvaluationError, match="no images"):
    zpoints.encode_to_npy(_fake_encoder, _batches([2]), output, 0)

  def crashing(images, calls=[]):  # pylint: disable=dangerous-default-value
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError("out of memory on the accelerator")
    return _fake_encoder(images)

  with pytest.raises(RuntimeError, match="out of memory"):
    zpoints.encode_to_npy(crashing, _batches([3, 3, 2]), output, 8)
  assert os.listdir(tmp_path) == []
