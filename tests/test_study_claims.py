"""The study's claims: every verdict rule on crafted numbers where it holds and where it does
not, and the two image measures behind the sharpening claim."""

import numpy as np
import pytest
from PIL import Image

from evaluation import image_ops
from evaluation import image_quality
from evaluation import study_claims as sc


def _ae(**override):
  """A latent summary shaped like the study's AE: 8 of 64 components dominant."""
  dominant = [{"index": i, "mean": 1.5, "half_width": 2.0} for i in range(8)]
  ae = {"dim": 64, "num_vectors": 5000, "dominant": dominant, "median_abs_mean": 0.05,
        "median_half_width": 0.6, "abs_mean_cutoff": 0.5, "half_width_cutoff": 1.5,
        "centre_norm_in_rms_std": 3.0, "origin_mahalanobis_sq": 100.0, "chi2_cutoff": 93.2,
        "data_radius": {"p5": 8.0, "p50": 10.0, "p95": 12.0},
        "uniform": {"0.5": {"mean_radius": 2.3, "inside_fraction": 0.0},
                    "1.5": {"mean_radius": 6.9 + 3.0, "inside_fraction": 0.01},
                    "4": {"mean_radius": 18.5, "inside_fraction": 0.0}},
        "counts": {"0.1": 300, "0.2": 40, "0.3": 12, "0.4": 6, "0.5": 3, "0.6": 1},
        "pairs": [[0, 1, 0.7], [2, 40, -0.55], [30, 41, 0.52]], "pair_threshold": 0.2}
  ae.update(override)
  return ae


def _verdict(claim, measurements):
  return claim(measurements)["verdict"]


def _score(mean, half=0.02):
  """A face figures block with face score `mean` and a 95 % interval of +- half."""
  return {"face_score": {"mean": mean, "ci95": [mean - half, mean + half]}}


def _faces(half=0.02, **scores):
  return {"faces": {key: ({r: _score(v, half) for r, v in value.items()}
                          if isinstance(value, dict) else _score(value, half))
                    for key, value in scores.items()}}


@pytest.mark.parametrize("claim, holds, fails", [
    (sc.claim_dominant_components, {"ae": _ae()},
     {"ae": _ae(median_half_width=1.8)}),                       # Most components wide.
    (sc.claim_dominant_components, {"ae": _ae()}, {"ae": _ae(dominant=[])}),
    (sc.claim_off_centre_cloud, {"ae": _ae()},
     {"ae": _ae(origin_mahalanobis_sq=5.0)}),                   # Origin deep inside.
    (sc.claim_off_centre_cloud, {"ae": _ae()}, {"ae": _ae(centre_norm_in_rms_std=0.2)}),
    (sc.claim_uniform_vectors, {"ae": _ae()},
     {"ae": _ae(uniform={"4": {"mean_radius": 10.0, "inside_fraction": 0.0}})}),
    (sc.claim_uniform_vectors, {"ae": _ae()},
     {"ae": _ae(uniform={"1.5": {"mean_radius": 10.0, "inside_fraction": 0.8}})}),
    (sc.claim_correlated_pairs, {"ae": _ae()},
     {"ae": _ae(pairs=[[30, 41, 0.9], [20, 21, 0.6]])}),        # Strong pairs not dominant.
    (sc.claim_correlated_pairs, {"ae": _ae()},                  # Nearly every pair correlated.
     {"ae": _ae(counts={"0.1": 2016, "0.2": 2016, "0.3": 2000, "0.4": 1990, "0.5": 1980,
                        "0.6": 1900})}),
    (sc.claim_kl_share, {"vae": {"kl_share": 0.031, "kl_factor": 5.0}},
     {"vae": {"kl_share": 0.007, "kl_factor": 5.0}}),
    (sc.claim_vae_loss_above_ae, {"losses": {"ae": 4850.0, "vae": 5015.0}},
     {"losses": {"ae": 5100.0, "vae": 5015.0}}),
    (sc.claim_vae_generates_faces, _faces(vae_normal=0.77, ae_normal=0.04),
     _faces(vae_normal=0.3, ae_normal=0.04)),
    (sc.claim_vae_generates_faces, _faces(vae_normal=0.77, ae_normal=0.04),
     _faces(vae_normal=0.77, ae_normal=0.6)),
    (sc.claim_faces_degrade_with_distance,
     _faces(vae_uniform={"0.5": 0.99, "1": 0.93, "2": 0.74, "5": 0.53}),
     _faces(vae_uniform={"0.5": 0.5, "1": 0.6, "2": 0.7, "5": 0.8})),
    (sc.claim_sharpening,
     {"sharpening": {0.0: {"laplacian_variance": 50, "checkerboard_energy": 0.001},
                     7.0: {"laplacian_variance": 900, "checkerboard_energy": 0.01}}},
     {"sharpening": {0.0: {"laplacian_variance": 50, "checkerboard_energy": 0.01},
                     7.0: {"laplacian_variance": 900, "checkerboard_energy": 0.001}}}),
    (sc.claim_large_ae_keeps_detail,
     {"reconstruction": {"ae_z1600": {"psnr": 22.0, "ssim": 0.7}, "vae": {"psnr": 18.8,
                                                                          "ssim": 0.48}}},
     {"reconstruction": {"ae_z1600": {"psnr": 18.0, "ssim": 0.7}, "vae": {"psnr": 18.8,
                                                                          "ssim": 0.48}}}),
    (sc.claim_fitted_density, _faces(ae_gaussian=0.97, ae_normal=0.04),
     _faces(ae_gaussian=0.2, ae_gmm=0.3, ae_normal=0.04)),
    (sc.claim_upsampling, {"upsampling": {"transpose": 0.02, "upsample": 0.005}},
     {"upsampling": {"transpose": 0.005, "upsample": 0.02}}),
])
def test_each_rule_holds_and_fails_on_crafted_numbers(claim, holds, fails):
  assert _verdict(claim, holds) == sc.HOLDS
  assert _verdict(claim, fails) == sc.FAILS


def test_missing_numbers_and_other_settings_are_not_comparable():
  rows = sc.verdicts({})
  assert [row["id"] for row in rows] == list(range(1, 13))
  assert {row["verdict"] for row in rows} == {sc.NOT_COMPARABLE}
  assert _verdict(sc.claim_kl_share, {"vae": {"kl_share": 0.03, "kl_factor": 15.0}}) == (
      sc.NOT_COMPARABLE)
  assert _verdict(sc.claim_faces_degrade_with_distance,
                  _faces(vae_uniform={"1": 0.9})) == sc.NOT_COMPARABLE


@pytest.mark.parametrize("claim, straddling", [
    (sc.claim_vae_generates_faces, _faces(0.1, vae_normal=0.55, ae_normal=0.04)),
    (sc.claim_vae_generates_faces, _faces(0.1, vae_normal=0.8, ae_normal=0.38)),
    (sc.claim_faces_degrade_with_distance,
     _faces(0.05, vae_uniform={"1": 0.9, "3": 0.85, "8": 0.78})),
    (sc.claim_fitted_density, _faces(0.1, ae_gaussian=0.55, ae_normal=0.04)),
])
def test_intervals_across_a_threshold_are_inconclusive(claim, straddling):
  row = claim(straddling)
  assert row["verdict"] == sc.INCONCLUSIVE and "[" in row["measured"]
  # The same means with tight intervals decide.
  tight = {"faces": {k: ({r: _score(f["face_score"]["mean"], 0.001) for r, f in v.items()}
                         if "face_score" not in v else _score(v["face_score"]["mean"], 0.001))
                     for k, v in straddling["faces"].items()}}
  assert claim(tight)["verdict"] in (sc.HOLDS, sc.FAILS)


def test_rows_carry_the_study_figure_and_the_run_figure():
  row = sc.claim_correlated_pairs({"ae": _ae()})
  assert row["study"].endswith("1456, 158, 44, 25, 16, 8")
  assert row["measured"].startswith("all 5000 vectors: 300, 40, 12, 6, 3, 1")
  assert "2 of 3 pairs above 0.5 involve a dominant one" in row["measured"]
  lines = sc.markdown_table(sc.verdicts({"ae": _ae()}))
  assert lines[0].startswith("| # | claim |") and "**holds**" in lines[2]
  assert any(line.startswith("12. holds when") for line in lines)


def test_latent_summary_reads_a_latent_report():
  report = {
      "dim": 3, "num_vectors": 10, "counts": {"0.5": 1}, "pairs": [[0, 1, 0.6]],
      "pair_threshold": 0.2,
      "components": [{"mean": 0.1, "half_width": 0.5}, {"mean": -2.0, "half_width": 3.0},
                     {"mean": 0.0, "half_width": 0.4}],
      "dominant": {"abs_mean_cutoff": 0.5, "half_width_cutoff": 1.5,
                   "components": [{"index": 1, "mean": -2.0, "half_width": 3.0}]},
      "geometry": {"centre": {"centre_norm_in_rms_std": 2.0, "origin_mahalanobis": 3.0},
                   "inside_test": {"chi2_cutoff": 11.3},
                   "data": {"radius": {"p5": 1.0, "p50": 2.0, "p95": 3.0}},
                   "random": {"uniform_b=1": {"radius": {"mean": 1.7}, "inside_fraction": 0.1},
                              "normal": {"radius": {"mean": 1.7}, "inside_fraction": 0.2}}}}
  summary = sc.latent_summary(report)
  assert summary["median_abs_mean"] == 0.1 and summary["median_half_width"] == 0.5
  assert summary["origin_mahalanobis_sq"] == 9.0
  assert summary["uniform"] == {"1": {"mean_radius": 1.7, "inside_fraction": 0.1}}


def test_checkerboard_energy_is_one_for_a_checkerboard_and_zero_when_flat():
  yy, xx = np.mgrid[:32, :32]
  board = np.repeat(((yy + xx) % 2 * 255).astype(np.uint8)[None, ..., None], 3, axis=-1)
  flat = np.full_like(board, 90)
  smooth = np.repeat(np.tile(np.linspace(0, 255, 32), (32, 1)).astype(np.uint8)[None, ..., None],
                     3, axis=-1)
  energy = image_quality.checkerboard_energy(np.concatenate([board, flat, smooth]))
  np.testing.assert_allclose(energy[:2], [1.0, 0.0], atol=1e-12)
  assert 0.0 < energy[2] < 0.05
  with pytest.raises(image_quality.EvaluationError, match="even"):
    image_quality.checkerboard_energy(board[:, :31])


def test_pil_sharpening_raises_the_laplacian_variance():
  rng = np.random.default_rng(0)
  blurry = np.asarray(Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).resize(
      (96, 96), Image.BILINEAR))[None]
  by_factor = {f: image_ops.sharpen(blurry, f) for f in sc.STUDY_SHARPEN_FACTORS}
  table = image_quality.summarize_by_factor(by_factor)
  sharpness = [table[f]["laplacian_variance"] for f in sc.STUDY_SHARPEN_FACTORS]
  assert sharpness == sorted(sharpness) and sharpness[-1] > 2 * sharpness[0]
  assert sc.claim_sharpening({"sharpening": table})["measured"].startswith("factor 0:")
