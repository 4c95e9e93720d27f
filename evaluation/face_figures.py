"""Face figures of an image set against real photos, with bootstrap 95 % intervals.

- face score, per image in [0, 1]: the judge's face probability x min(1, realism) x
  distinctness. Realism is the realism score of Kynkaenniemi et al., "Improved precision and
  recall metric for assessing generative models", NeurIPS 2019 (section 4), in the judge's
  features of the face box; distinctness (this project's) is 1 / (1 + the image's near-copies
  in its set), so one average face repeated scores near 0.
- FD-face: the Frechet distance (Dowson & Landau 1982; FID's formula, Heusel et al. 2017)
  between Gaussians fitted to the set's and the real photos' features of the central box.
- landmark error: distance of the 5 landmarks from the real photos' mean, in inter-ocular units.
Intervals: percentile bootstrap over the set's images, the real photos fixed.
docs/benchmarks/face_judge.md defines each figure in full.
"""

import dataclasses

import numpy as np
from PIL import Image
from PIL import ImageFilter
from scipy import stats

from evaluation import face_judge as judge_lib
from evaluation.errors import EvaluationError

K = 3  # Neighbours of the realism score's hyperspheres (Kynkaenniemi et al.).
RESAMPLES = 1000  # Bootstrap resamples of the means.
FD_RESAMPLES = 200  # Of FD-face (a matrix square root each).
DUPLICATE_QUANTILE = 0.05  # Of the real photos' nearest-other distances: below is a near-copy.
CALIBRATION_BLURS = (1, 2, 4)  # Gaussian sigmas, pixels at the judge's working size.
MEAN_FACE_NOISE = 8.0  # Pixel-noise sigma (uint8 levels) of the noisy mean face.


@dataclasses.dataclass(frozen=True)
class Reference:
  """Real photos as the judge sees them.

  Attributes:
    radii: float64 [R'] distances to the K-th nearest other photo's face-box features, the
      smaller half of the R photos'.
    centres: float64 [R', 256] the face-box features those radii belong to.
    duplicate_radius: the DUPLICATE_QUANTILE quantile of the R photos' distances to their
      nearest other photo, face-box features.
    mean_landmarks: float64 [5, 2] at the judge's working size.
    interocular: mean distance between the eyes, pixels.
    mu, sigma: the central-box features' mean [256] and covariance [256, 256].
    sigma_root: the symmetric square root of sigma.
    num_images: R.
  """
  radii: np.ndarray
  centres: np.ndarray
  duplicate_radius: float
  mean_landmarks: np.ndarray
  interocular: float
  mu: np.ndarray
  sigma: np.ndarray
  sigma_root: np.ndarray
  num_images: int

  @classmethod
  def from_judged(cls, judged):
    """From the judge's outputs on real photos.

    Raises:
      EvaluationError: fewer than K + 1 photos, or fewer than 2 faces among them.
    """
    e = judged.features.astype(np.float64)
    f = judged.face_features.astype(np.float64)
    points = judged.landmarks[judged.has_face]
    if len(e) <= K or len(points) < 2:
      raise EvaluationError(f"the face judge's reference needs {K + 1} or more real photos, 2 "
                            f"of them with a face; got {len(e)}, {len(points)} with a face")
    distances = np.linalg.norm(f[:, None] - f[None], axis=-1)
    nearest = np.sort(distances, axis=1)  # Column 0 is the photo itself.
    radii = nearest[:, K]
    keep = radii <= np.median(radii)
    mean = points.mean(axis=0)
    sigma = np.cov(e, rowvar=False)
    values, vectors = np.linalg.eigh(sigma)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    return cls(radii[keep], f[keep], float(np.quantile(nearest[:, 1], DUPLICATE_QUANTILE)),
               mean, float(np.linalg.norm(mean[1] - mean[0])),
               e.mean(axis=0), sigma, root, len(e))


def face_scores(judged, reference, seed=0):
  """float64 [N]: detection x min(1, realism) x distinctness of each image of a set.

  `seed` draws the others each image's near-copies are counted among (sets over R images).
  """
  e = judged.face_features.astype(np.float64)
  distances = np.linalg.norm(e[:, None] - reference.centres[None], axis=-1)
  realism = np.max(reference.radii[None] / np.maximum(distances, 1e-12), axis=1)
  return judged.detection * np.minimum(1.0, realism) * distinctness(e, reference, seed)


def distinctness(features, reference, seed=0):
  """float64 [N]: 1 / (1 + near-copies) of each row of face-box features [N, 256]."""
  n, others = len(features), reference.num_images - 1
  rng = np.random.default_rng(seed)
  copies = np.zeros(n)
  for row in range(n):
    pool = np.arange(n - 1) if n - 1 <= others else rng.choice(n - 1, others, replace=False)
    pool = pool + (pool >= row)  # Every row but this one.
    distances = np.linalg.norm(features[pool] - features[row], axis=1)
    copies[row] = np.sum(distances < reference.duplicate_radius)
  return 1.0 / (1.0 + copies)


def landmark_errors(judged, reference):
  """float64 [F]: each face's mean landmark distance / the reference inter-ocular distance."""
  points = judged.landmarks[judged.has_face]
  return (np.linalg.norm(points - reference.mean_landmarks, axis=-1).mean(axis=1)
          / reference.interocular)


def frechet_distance(features, reference):
  """FD between a Gaussian fitted to `features` [N >= 2, 256] and the reference's.

  tr sqrt(S R) is computed as tr sqrt(R^1/2 S R^1/2), a symmetric matrix with the same
  eigenvalues, so that it is real. With S = C^T C (C the centred features / sqrt(N - 1)) that
  matrix is A^T A for A = C R^1/2, whose non-zero eigenvalues are those of A A^T: one
  eigvalsh of the smaller of the two (N x N for the bootstrap's small sets).
  """
  e = np.asarray(features, np.float64)
  mu = e.mean(axis=0)
  centred = (e - mu) / np.sqrt(len(e) - 1)
  a = centred @ reference.sigma_root
  gram = a @ a.T if len(e) <= e.shape[1] else a.T @ a
  cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None)))
  return float(np.sum((mu - reference.mu) ** 2) + np.sum(centred ** 2)
               + np.trace(reference.sigma) - 2.0 * cross)


def _bootstrap(data, statistic, seed, resamples, vectorized):
  return stats.bootstrap((data,), statistic, n_resamples=resamples, vectorized=vectorized,
                         confidence_level=0.95, method="percentile", random_state=seed)


def _interval(data, statistic, seed, resamples=RESAMPLES, vectorized=True):
  if len(data) < 2:
    return [None, None]
  interval = _bootstrap(data, statistic, seed, resamples, vectorized).confidence_interval
  return [float(interval.low), float(interval.high)]


def _mean_block(values, seed):
  if len(values) == 0:
    return {"mean": None, "ci95": [None, None]}
  return {"mean": float(np.mean(values)),
          "ci95": _interval(values, lambda v, axis: np.mean(v, axis=axis), seed)}


def figures(judged, reference=None, seed=0):
  """The face figures of one image set.

  Args:
    judged: face_judge.Judged of the set.
    reference: the Reference (real photos), or None: only face_rate and detection then.
    seed: seed of the bootstrap resampling.

  Returns:
    {"num_images", "face_rate", "detection": {"mean", "ci95"}, "face_score": {"mean", "ci95"},
    "fd_face": {"value", "ci95"}, "landmark_error": {"mean", "ci95", "num_faces"}}; the last
    three null without a reference. ci95 is [low, high] (nulls for fewer than 2 images).
  """
  n = len(judged.detection)
  out = {"num_images": int(n),
         "face_rate": float(judged.has_face.mean()) if n else None,
         "detection": _mean_block(judged.detection, seed),
         "face_score": None, "fd_face": None, "landmark_error": None}
  if reference is None or n == 0:
    return out
  out["face_score"] = _mean_block(face_scores(judged, reference, seed), seed)
  errors = landmark_errors(judged, reference)
  out["landmark_error"] = dict(_mean_block(errors, seed), num_faces=int(len(errors)))
  if n >= 2:
    out["fd_face"] = _fd_block(judged.features, reference, seed)
  return out


def _fd_block(features, reference, seed):
  value = frechet_distance(features, reference)
  result = _bootstrap(np.arange(len(features)), lambda rows: frechet_distance(
      features[rows], reference), seed, FD_RESAMPLES, vectorized=False)
  shift = value - float(np.median(result.bootstrap_distribution))
  interval = result.confidence_interval
  return {"value": value, "ci95": [float(interval.low) + shift, float(interval.high) + shift]}


def calibration_sets(real, mean_face, seed=0):
  """The sets every face figure is read against, each as many images as `real`.

  Args:
    real: uint8 [N, H, W, 3] real photos (not the reference's).
    mean_face: float or uint8 [H', W', 3], the mean image of the training split.
    seed: seed of the noise.

  Returns:
    {"real", "blur_1", "blur_2", "blur_4", "mean_face", "mean_face_noise", "noise"}: uint8
    [N, 96, 96, 3] each, at the judge's working size (blur sigmas in its pixels).
  """
  real = judge_lib.working_size(real)
  n, size = len(real), judge_lib.SIZE
  mean = judge_lib.working_size(np.round(np.asarray(mean_face, np.float64))[None]
                                .astype(np.uint8))[0].astype(np.float64)
  rng = np.random.default_rng(seed)
  sets = {"real": real}
  for sigma in CALIBRATION_BLURS:
    sets[f"blur_{sigma}"] = np.stack([np.asarray(Image.fromarray(image).filter(
        ImageFilter.GaussianBlur(sigma))) for image in real])
  sets["mean_face"] = np.repeat(np.round(mean).astype(np.uint8)[None], n, axis=0)
  noisy = mean[None] + rng.normal(0.0, MEAN_FACE_NOISE, (n, size, size, 3))
  sets["mean_face_noise"] = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
  sets["noise"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  return sets


def split_real(images):
  """(reference half, held-out half) of real photos: even rows, odd rows."""
  images = np.asarray(images)
  return images[0::2], images[1::2]


def calibration(judge, real_images, mean_face, seed=0):
  """The reference and the calibration block of a report.

  Args:
    judge: a face_judge.FaceJudge.
    real_images: uint8 [N >= 2 (K + 1), H, W, 3] real test photos: the even rows become the
      reference, the odd ones the "real" calibration set (a photo is never its own reference).
    mean_face: the training split's mean image [H', W', 3], or None: real_images' mean.
    seed: seed of the noise and the bootstrap.

  Returns:
    (Reference or None when the photos are too few, {"reference_images", "note" (why the
    reference is missing, or None), "sets": {name: figures}, "definition"}).
  """
  if mean_face is None:
    mean_face = np.mean(real_images, axis=0)
  reference_images, held_out = split_real(real_images)
  try:
    reference = Reference.from_judged(judge.judge(reference_images))
    note = None
  except EvaluationError as error:  # Too few photos: the figures that need them are null.
    reference, note = None, f"{error}: face_score, fd_face and landmark_error are null"
  return reference, _calibration_block(judge, reference, len(reference_images), held_out,
                                       mean_face, seed, note)


def format_interval(block, key, spec=".3f"):
  """"value [low, high]" of a figures block ({key, "ci95"}), "value" alone without an
  interval, "n/a" for a null block; numbers formatted with `spec`."""
  if not block:
    return "n/a"
  low, high = block["ci95"]
  return format(block[key], spec) + ("" if low is None else
                                      f" [{format(low, spec)}, {format(high, spec)}]")


def _calibration_block(judge, reference, num_reference, held_out, mean_face, seed, note):
  sets = calibration_sets(held_out, mean_face, seed)
  return {"reference_images": int(num_reference), "note": note,
          "sets": {name: figures(judge.judge(images), reference, seed)
                   for name, images in sets.items()},
          "definition": "real: the real photos' odd rows (the even rows are the reference); "
                         "blur_S: the same, Gaussian blur sigma S px at 96x96; mean_face: "
                         "copies of the mean image given (generate and compare_reconstructions: "
                         "the training split's; judge_faces: the reference's); "
                         f"mean_face_noise: it plus N(0, {MEAN_FACE_NOISE:g}^2) pixel noise; "
                         "noise: uniform; all as many images as real"}


def judge_sets(judge, sets, real_images, seed=0, with_calibration=True):
  """Face figures of named image sets against real photos (tools.judge_faces).

  Args:
    judge: a face_judge.FaceJudge.
    sets: {name: uint8 [N, H, W, 3]}.
    real_images: uint8 [R, H, W, 3] real photos; their even rows are the reference, and with
      calibration the odd rows are its "real" set (mean face: the mean of all R).
    seed: seed of the bootstrap and the calibration's noise.
    with_calibration: also judge the calibration sets.

  Returns:
    {"sets": {name: figures}, "reference_images", "calibration": block or None,
    "judge": judge.describe()}.

  Raises:
    EvaluationError: too few real photos, or too few faces among them, for a reference.
  """
  reference_images, held_out = split_real(real_images)
  reference = Reference.from_judged(judge.judge(reference_images))
  block = (_calibration_block(judge, reference, len(reference_images), held_out,
                              np.mean(real_images, axis=0), seed, None)
           if with_calibration else None)
  return {"sets": {name: figures(judge.judge(images), reference, seed)
                   for name, images in sets.items()},
          "reference_images": int(len(reference_images)), "calibration": block,
          "judge": judge.describe()}
