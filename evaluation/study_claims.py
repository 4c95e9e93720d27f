"""The study's claims as verdicts from one run's numbers: the table that opens the demo report.

The study (../shared/seed/, three blog posts on AE/VAE latent spaces of CelebA) argues with
pictures. Each claim here has the sentence, the study's own figure where it gives one, the figure
measured in this run, and a verdict by a written rule: "holds", "does not hold", "inconclusive"
(face figures whose 95 % intervals straddle the threshold) or "not comparable" (the run lacks what
the rule needs, with the reason). `verdicts(m)` takes the run's measurements as one plain dict
(`study_measurements` in workflows/demo_report.py builds it; tests build it by hand; keys "ae",
"losses", "vae", "faces", "sharpening", "reconstruction", "upsampling", each described at its claim
function). Any key may be missing: its rows are "not comparable".
"""

import math

HOLDS, FAILS, NOT_COMPARABLE = "holds", "does not hold", "not comparable"
INCONCLUSIVE = "inconclusive"
FACE_THRESHOLD = 0.5  # A sampler "makes faces" at a mean face score of at least this.

# The study's figures (post III, AE with z_dim 256 on 170,000 CelebA images).
STUDY_DOMINANT_COUNT = 20
STUDY_PAIR_COUNTS = {"0.1": 1456, "0.2": 158, "0.3": 44, "0.4": 25, "0.5": 16, "0.6": 8}
STUDY_KL_SHARE = 0.03
STUDY_LOSSES = {"ae": 4850.0, "vae": 5015.0}
STUDY_SHARPEN_FACTORS = (0.0, 3.0, 6.0, 7.0)


def latent_summary(report):
  """The numbers rows 1-4 need, from a latent_report.json dict (docs/LATENTS.md)."""
  components = report["components"]
  geometry = report["geometry"]
  dominant = report["dominant"]["components"]
  return {
      "dim": report["dim"],
      "num_vectors": report["num_vectors"],
      "dominant": [{"index": c["index"], "mean": c["mean"], "half_width": c["half_width"]}
                   for c in dominant],
      "median_abs_mean": _median([abs(c["mean"]) for c in components]),
      "median_half_width": _median([c["half_width"] for c in components]),
      "abs_mean_cutoff": report["dominant"]["abs_mean_cutoff"],
      "half_width_cutoff": report["dominant"]["half_width_cutoff"],
      "centre_norm_in_rms_std": geometry["centre"]["centre_norm_in_rms_std"],
      "origin_mahalanobis_sq": geometry["centre"]["origin_mahalanobis"] ** 2,
      "chi2_cutoff": geometry["inside_test"]["chi2_cutoff"],
      "data_radius": {k: geometry["data"]["radius"][k] for k in ("p5", "p50", "p95")},
      "uniform": {label.split("=", 1)[1]: {"mean_radius": v["radius"]["mean"],
                                           "inside_fraction": v["inside_fraction"]}
                  for label, v in geometry["random"].items() if label.startswith("uniform_b=")},
      "counts": dict(report["counts"]),
      "pairs": [list(p) for p in report["pairs"]],
      "pair_threshold": report["pair_threshold"],
  }


def _median(values):
  values = sorted(values)
  if not values:
    return float("nan")
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _fmt(value, digits=2):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _row(number, claim, study, rule, measured, verdict):
  return {"id": number, "claim": claim, "study": study, "rule": rule, "measured": measured,
          "verdict": verdict}


def claim_dominant_components(m):
  claim = ("AE z-points: most latent components are narrow around 0; a few dominant ones are "
           "wide or off-centre.")
  rule = ("holds when the median component has |mean| below the |mean| cut-off and a "
          "half-width below the half-width cut-off, and the dominant components (|mean| or "
          "half-width at or above a cut-off) number at least 1 and at most a quarter of z_dim")
  study = f"{STUDY_DOMINANT_COUNT} dominant of 256 (|mu| up to 2.25, half-widths 1.0-4.1)"
  ae = m.get("ae")
  if not ae:
    return _row(1, claim, study, rule, "no AE latent report", NOT_COMPARABLE)
  count = len(ae["dominant"])
  listed = "; ".join(f"{c['index']} mu {c['mean']:.2f} hw {c['half_width']:.2f}"
                     for c in sorted(ae["dominant"], key=lambda c: c["index"])[:20])
  measured = (f"{count} dominant of {ae['dim']} (median |mean| {ae['median_abs_mean']:.2f}, "
              f"median half-width {ae['median_half_width']:.2f}): {listed or 'none'}")
  holds = (ae["median_abs_mean"] < ae["abs_mean_cutoff"]
           and ae["median_half_width"] < ae["half_width_cutoff"]
           and 1 <= count <= ae["dim"] / 4)
  return _row(1, claim, study, rule, measured, HOLDS if holds else FAILS)


def claim_off_centre_cloud(m):
  claim = "The cloud's centre is off the origin, and the origin lies near the cloud's border."
  rule = ("holds when the centre is at least one RMS standard deviation from the origin and the "
          "origin's squared Mahalanobis distance from the fitted cloud is within a factor 2 of "
          "the cloud's 99 % chi-square contour (near the border, neither deep inside nor far "
          "outside)")
  study = "centre near a few dominant axes, away from the origin (post II)"
  ae = m.get("ae")
  if not ae:
    return _row(2, claim, study, rule, "no AE latent report", NOT_COMPARABLE)
  ratio = ae["origin_mahalanobis_sq"] / ae["chi2_cutoff"]
  measured = (f"centre {ae['centre_norm_in_rms_std']:.2f} RMS std from the origin; origin at "
              f"{ratio:.2f} x the 99 % contour")
  holds = ae["centre_norm_in_rms_std"] >= 1.0 and 0.5 <= ratio <= 2.0
  return _row(2, claim, study, rule, measured, HOLDS if holds else FAILS)


def claim_uniform_vectors(m):
  claim = ("Uniform random vectors in [-b, b]^z_dim reach the data's radii only for about "
           "1 <= b <= 2, and most of them fall outside the cloud.")
  rule = ("holds when every b whose random vectors' mean radius lies within the data radii's "
          "5-95 % range is in [1, 2] (and at least one is), and for every b fewer than half of "
          "the random vectors lie inside the cloud's 99 % contour")
  study = "1.0 <= b <= 2.0 give the right length (post II)"
  ae = m.get("ae")
  if not ae or not ae.get("uniform"):
    return _row(3, claim, study, rule, "no AE latent report with uniform vectors", NOT_COMPARABLE)
  low, high = ae["data_radius"]["p5"], ae["data_radius"]["p95"]
  matching = sorted(float(b) for b, v in ae["uniform"].items()
                    if low <= v["mean_radius"] <= high)
  inside = {b: v["inside_fraction"] for b, v in ae["uniform"].items()}
  measured = (f"data radii {low:.1f}-{high:.1f}; b with matching radii: "
              f"{', '.join(_fmt(b, 1) for b in matching) or 'none'}; inside the cloud: "
              + ", ".join(f"b={b} {f:.2f}" for b, f in sorted(inside.items(),
                                                               key=lambda kv: float(kv[0]))))
  holds = (bool(matching) and all(1.0 <= b <= 2.0 for b in matching)
           and all(f < 0.5 for f in inside.values()))
  return _row(3, claim, study, rule, measured, HOLDS if holds else FAILS)


def claim_correlated_pairs(m):
  claim = ("Some latent components are correlated; the pairs with |r| > 0.5 mostly involve "
           "dominant components.")
  rule = ("holds when the pair counts fall as the threshold rises, at least one pair but fewer "
          "than 1 % of all pairs have |r| > 0.5 (some components, not all: the study had 16 of "
          "32,640), and more than half of those pairs involve a dominant component; the study's "
          "counts are on 5,000 of 170,000 vectors, so counts are compared by shape only")
  study = "pairs above 0.1..0.6: " + ", ".join(str(v) for v in STUDY_PAIR_COUNTS.values())
  ae = m.get("ae")
  if not ae:
    return _row(4, claim, study, rule, "no AE latent report", NOT_COMPARABLE)
  counts = {k: ae["counts"].get(k) for k in STUDY_PAIR_COUNTS if k in ae["counts"]}
  if "0.5" not in counts or ae["pair_threshold"] > 0.5:
    return _row(4, claim, study, rule, "the report lacks the |r| > 0.5 pairs", NOT_COMPARABLE)
  dominant = {c["index"] for c in ae["dominant"]}
  strong = [p for p in ae["pairs"] if abs(p[2]) > 0.5]
  with_dominant = sum(1 for i, j, _ in strong if i in dominant or j in dominant)
  ordered = [counts[k] for k in sorted(counts, key=float)]
  measured = (f"all {ae['num_vectors']} vectors: " + ", ".join(str(v) for v in ordered)
              + f"; {with_dominant} of {len(strong)} pairs above 0.5 involve a dominant one")
  all_pairs = ae["dim"] * (ae["dim"] - 1) / 2
  holds = (all(a >= b for a, b in zip(ordered, ordered[1:])) and strong
           and counts["0.5"] < 0.01 * all_pairs and with_dominant > len(strong) / 2)
  return _row(4, claim, study, rule, measured, HOLDS if holds else FAILS)


def claim_kl_share(m):
  claim = "At kl_factor 5 the VAE's KL term is about 3 % of its loss."
  rule = ("holds when the last epoch's validation KL share is within a factor 2 of 3 % "
          "(1.5-6 %); not comparable at another kl_factor")
  study = "about 3 % (fact = 5)"
  vae = m.get("vae")
  if not vae or vae.get("kl_share") is None:
    return _row(5, claim, study, rule, "no VAE training history", NOT_COMPARABLE)
  measured = f"{100 * vae['kl_share']:.1f} % at kl_factor {_fmt(vae['kl_factor'], 1)}"
  if vae["kl_factor"] != 5:
    return _row(5, claim, study, rule, measured, NOT_COMPARABLE)
  holds = STUDY_KL_SHARE / 2 <= vae["kl_share"] <= STUDY_KL_SHARE * 2
  return _row(5, claim, study, rule, measured, HOLDS if holds else FAILS)


def claim_vae_loss_above_ae(m):
  claim = "After training, the VAE's loss per image is higher than the AE's."
  rule = ("holds when the VAE's last validation loss per image (reconstruction + kl_factor x "
          "KL, the study's units) is above the AE's")
  study = f"VAE > {STUDY_LOSSES['vae']:.0f} vs AE {STUDY_LOSSES['ae']:.0f} per image"
  losses = m.get("losses") or {}
  if losses.get("ae") is None or losses.get("vae") is None:
    return _row(6, claim, study, rule, "needs both models' histories", NOT_COMPARABLE)
  measured = f"VAE {losses['vae']:.0f} vs AE {losses['ae']:.0f} per image"
  return _row(6, claim, study, rule, measured, HOLDS if losses["vae"] > losses["ae"] else FAILS)


def _scores(faces, *keys):
  """(mean, low, high) of the face score of each key of a {key: figures} table, or None."""
  out = []
  for key in keys:
    score = (faces.get(key) or {}).get("face_score") or {}
    low, high = score.get("ci95") or (None, None)
    out.append(None if score.get("mean") is None else
               (score["mean"], score["mean"] if low is None else low,
                score["mean"] if high is None else high))
  return out


def _fmt_score(score):
  return "n/a" if score is None else f"{score[0]:.2f} [{score[1]:.2f}, {score[2]:.2f}]"


def _calibration(m):
  real, mean_face = _scores(m.get("faces") or {}, "real", "mean_face")
  return f" (judge: real photos {_fmt_score(real)}, mean face {_fmt_score(mean_face)})"


def _decide(holds, fails):
  return HOLDS if holds else FAILS if fails else INCONCLUSIVE


def claim_vae_generates_faces(m):
  claim = "A VAE decodes faces from z ~ N(0, I); an AE does not."
  rule = (f"holds when the 95 % interval of the VAE's N(0, I) face score lies above "
          f"{FACE_THRESHOLD} and the AE's below half the VAE's; does not hold when the VAE's "
          f"lies below {FACE_THRESHOLD} or the AE's above half the VAE's; inconclusive when "
          "the intervals straddle these bounds")
  study = "pictures: faces from the VAE, none from the AE (posts I and the VAE post)"
  vae, ae = _scores(m.get("faces") or {}, "vae_normal", "ae_normal")
  if vae is None or ae is None:
    return _row(7, claim, study, rule, "needs both models' normal-sampler face scores",
                NOT_COMPARABLE)
  measured = f"face score VAE {_fmt_score(vae)}, AE {_fmt_score(ae)}" + _calibration(m)
  verdict = _decide(vae[1] >= FACE_THRESHOLD and ae[2] < vae[1] / 2,
                    vae[2] < FACE_THRESHOLD or ae[1] >= vae[2] / 2)
  return _row(7, claim, study, rule, measured, verdict)


def claim_faces_degrade_with_distance(m):
  claim = "Faces degrade with the distance from the origin."
  rule = ("holds when the VAE's face score over the uniform r sweep falls with r (Spearman rank "
          "correlation of the means <= -0.5) and the drop from the smallest to the largest r "
          "is at least 0.1 across their 95 % intervals; does not hold when the correlation is "
          "above -0.5 or the drop is below 0.1 across them; inconclusive otherwise")
  study = "images get weirder for coordinates above about 3 (the VAE post)"
  sweep = (m.get("faces") or {}).get("vae_uniform")
  if not sweep or len(sweep) < 3:
    return _row(8, claim, study, rule, "needs the VAE's uniform sweep (3+ radii)", NOT_COMPARABLE)
  radii = sorted(sweep, key=float)
  scores = _scores(sweep, *radii)
  if any(score is None for score in scores):
    return _row(8, claim, study, rule, "the sweep has no face scores (no real test images)",
                NOT_COMPARABLE)
  rho = _spearman([float(r) for r in radii], [score[0] for score in scores])
  measured = ", ".join(f"r={r}: {_fmt_score(score)}" for r, score in zip(radii, scores))
  measured += f" (Spearman {rho:.2f})"
  first, last = scores[0], scores[-1]
  drop_low, drop_high = first[1] - last[2], first[2] - last[1]
  verdict = _decide(rho <= -0.5 and drop_low >= 0.1, rho > -0.5 or drop_high < 0.1)
  return _row(8, claim, study, rule, measured, verdict)


def _spearman(x, y):
  def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
      j = i
      while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
        j += 1
      for k in range(i, j + 1):
        result[order[k]] = (i + j) / 2.0
      i = j + 1
    return result
  rx, ry = ranks(x), ranks(y)
  mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
  cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
  var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
  return cov / var if var > 0 else 0.0


def claim_sharpening(m):
  claim = ("PIL sharpening with factors 0, 3, 6, 7 sharpens the VAE's images and strengthens "
           "the grid artefacts.")
  rule = ("holds when both the variance of the Laplacian (sharpness) and the period-2 spectral "
          "energy share (checkerboard artefacts) never fall from one factor to the next and are "
          "higher at the largest factor than at the smallest")
  study = "factors 0, 3, 6, 7: sharper, crossing-line artefacts stronger (the VAE post)"
  table = m.get("sharpening")
  if not table or len(table) < 2:
    return _row(9, claim, study, rule, "needs samples sharpened at 2+ factors", NOT_COMPARABLE)
  factors = sorted(table, key=float)
  sharp = [table[f]["laplacian_variance"] for f in factors]
  grid = [table[f]["checkerboard_energy"] for f in factors]
  measured = "; ".join(f"factor {_fmt(float(f), 0)}: Laplacian var {s:.0f}, period-2 share "
                       f"{g:.4f}" for f, s, g in zip(factors, sharp, grid))
  rising = lambda v: all(a <= b for a, b in zip(v, v[1:])) and v[-1] > v[0]
  return _row(9, claim, study, rule, measured, HOLDS if rising(sharp) and rising(grid) else FAILS)


def claim_large_ae_keeps_detail(m):
  claim = "The AE with z_dim 1600 reconstructs more detail than the VAE."
  rule = "holds when ae_z1600's PSNR and SSIM on the test split are both above the VAE's"
  study = "a sharp reconstruction from the z_dim 1600 AE, a blurred one from the VAE (own photo)"
  rec = m.get("reconstruction") or {}
  big, vae = rec.get("ae_z1600"), rec.get("vae")
  if not big or not vae:
    return _row(10, claim, study, rule, "needs ae_z1600 and the VAE reconstructed",
                NOT_COMPARABLE)
  measured = (f"PSNR {big['psnr']:.2f} vs {vae['psnr']:.2f} dB, SSIM {big['ssim']:.3f} vs "
              f"{vae['ssim']:.3f}, face score {_fmt_score(_scores(rec, 'ae_z1600')[0])} vs "
              f"{_fmt_score(_scores(rec, 'vae')[0])}")
  holds = big["psnr"] > vae["psnr"] and big["ssim"] > vae["ssim"]
  return _row(10, claim, study, rule, measured, HOLDS if holds else FAILS)


def claim_fitted_density(m):
  claim = ("Beyond the study: a plain AE does generate faces when sampled from a density fitted "
           "to its own z-points (Gaussian, GMM).")
  rule = (f"holds when the 95 % interval of the AE's face score from the fitted Gaussian or GMM "
          f"(the better mean) lies above {FACE_THRESHOLD} and above N(0, I)'s; does not hold "
          f"when it lies below {FACE_THRESHOLD} or below N(0, I)'s; inconclusive otherwise")
  study = "not in the study (it samples the AE from fixed distributions only)"
  gaussian, gmm, normal = _scores(m.get("faces") or {}, "ae_gaussian", "ae_gmm", "ae_normal")
  if gaussian is None and gmm is None:
    return _row(11, claim, study, rule, "needs the AE's gaussian or gmm sampler's face scores",
                NOT_COMPARABLE)
  best = max((s for s in (gaussian, gmm) if s is not None), key=lambda s: s[0])
  measured = (f"AE face score: gaussian {_fmt_score(gaussian)}, GMM {_fmt_score(gmm)}, "
              f"N(0, I) {_fmt_score(normal)}") + _calibration(m)
  verdict = _decide(best[1] >= FACE_THRESHOLD and (normal is None or best[1] > normal[2]),
                    best[2] < FACE_THRESHOLD or (normal is not None and best[2] <= normal[1]))
  return _row(11, claim, study, rule, measured, verdict)


def claim_upsampling(m):
  claim = ("Beyond the study (its hint): upsampling layers instead of Conv2DTranspose reduce the "
           "crossing-line artefacts.")
  rule = ("holds when the decoder with upsampling layers has a lower period-2 spectral energy "
          "share in its unsharpened N(0, I) samples than the Conv2DTranspose decoder (same "
          "preset, data, epochs and seed)")
  study = "a hint from the literature, not tried in the study"
  pair = m.get("upsampling") or {}
  if pair.get("transpose") is None or pair.get("upsample") is None:
    return _row(12, claim, study, rule, "not trained in this run (tools.demo "
                "--upsampling_variant, or make demo DEMO_FLAGS=--upsampling_variant)",
                NOT_COMPARABLE)
  measured = f"period-2 share: upsample {pair['upsample']:.4f} vs transpose {pair['transpose']:.4f}"
  return _row(12, claim, study, rule, measured,
              HOLDS if pair["upsample"] < pair["transpose"] else FAILS)


CLAIMS = (claim_dominant_components, claim_off_centre_cloud, claim_uniform_vectors,
          claim_correlated_pairs, claim_kl_share, claim_vae_loss_above_ae,
          claim_vae_generates_faces, claim_faces_degrade_with_distance, claim_sharpening,
          claim_large_ae_keeps_detail, claim_fitted_density, claim_upsampling)


def verdicts(measurements):
  """One row per claim: {"id", "claim", "study", "rule", "measured", "verdict"}."""
  return [claim(measurements) for claim in CLAIMS]


def markdown_table(rows):
  """The rows as a Markdown table (claim, study, this run, verdict), then the rules."""
  lines = ["| # | claim | the study | this run | verdict |", "|---|---|---|---|---|"]
  for row in rows:
    cells = [str(row["id"]), row["claim"], row["study"], row["measured"], f"**{row['verdict']}**"]
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  lines += ["", "Verdict rules:", ""]
  lines += [f"{row['id']}. {row['rule']}." for row in rows]
  return lines
