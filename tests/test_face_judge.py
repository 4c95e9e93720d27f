"""The independent face judge (MTCNN) and its face figures: on real photos, blurred, the mean
face and noise; the figures' formulas and intervals on small hand-made inputs."""

import os
import subprocess
import sys

from mtcnn import MTCNN
import numpy as np
import pytest
from PIL import Image

from data_pipeline import transform
from data_pipeline.synthetic import faces
from data_pipeline.synthetic import render
from evaluation import face_figures
from evaluation import face_judge
from evaluation import mtcnn_stages
from evaluation.errors import EvaluationError
from tests.toolrun import REPO_ROOT

# Best first: the order of FD-face and of the face score.
CHAIN = ("real", "blur_1", "blur_2", "blur_4", "mean_face_noise", "noise")


@pytest.fixture(scope="module")
def judge():
  return face_judge.shared()


def _crops(real_dir, split, limit=None):
  """Real photos of a split (list_eval_partition code), cropped (0,40,178,218), 96 LANCZOS."""
  with open(os.path.join(real_dir, "list_eval_partition.txt"), encoding="utf-8") as f:
    names = [line.split()[0] for line in f if line.split()[1:] == [split]][:limit]
  crops = []
  for name in names:
    with Image.open(os.path.join(real_dir, "img_align_celeba", name)) as img:
      crops.append(np.asarray(img.convert("RGB").crop((0, 40, 178, 218)).resize(
          (96, 96), Image.LANCZOS)))
  return np.stack(crops)


@pytest.fixture(scope="module")
def real_calibration(judge, celeba_real_dir):
  """The calibration of all 450 real test photos (225 reference, 225 judged per set)."""
  mean_face = _crops(celeba_real_dir, "0", 500).mean(axis=0)
  return face_figures.calibration(judge, _crops(celeba_real_dir, "2"), mean_face, seed=0)


@pytest.mark.slow
def test_figures_order_real_blur_mean_face_noise(real_calibration):
  reference, block = real_calibration
  assert reference.num_images == 225 and block["note"] is None
  sets = block["sets"]
  assert all(sets[name]["num_images"] == 225 for name in sets)
  fds = [sets[name]["fd_face"]["value"] for name in CHAIN]
  assert fds == sorted(fds) and len(set(fds)) == len(fds), fds
  scores = [sets[name]["face_score"]["mean"] for name in CHAIN]
  assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores), scores
  # Both see the lost variety: copies of the mean face lie between blur 4 and noise.
  assert fds[3] < sets["mean_face"]["fd_face"]["value"] < fds[-1]
  assert scores[3] > sets["mean_face"]["face_score"]["mean"] > scores[-1]
  for name in ("mean_face", "mean_face_noise"):  # Far below the real interval.
    assert sets[name]["face_score"]["ci95"][1] * 10 < sets["real"]["face_score"]["ci95"][0]
  # ... and far from the real photos: the intervals do not touch.
  assert sets["real"]["fd_face"]["ci95"][1] * 10 < sets["mean_face"]["fd_face"]["ci95"][0]
  assert sets["real"]["face_rate"] >= 0.95 and sets["noise"]["face_rate"] == 0.0
  for name in ("real", "blur_4", "mean_face_noise"):  # Every interval holds its estimate.
    low, high = sets[name]["face_score"]["ci95"]
    assert low <= sets[name]["face_score"]["mean"] <= high
    low, high = sets[name]["fd_face"]["ci95"]
    assert low <= sets[name]["fd_face"]["value"] <= high
  # Landmarks: real photos scatter around their mean; noise has none.
  assert 0 < sets["real"]["landmark_error"]["mean"] < 0.3
  assert sets["noise"]["landmark_error"]["num_faces"] == 0


@pytest.mark.slow
def test_the_same_inputs_give_the_same_figures(judge, real_calibration, celeba_real_dir):
  real = _crops(celeba_real_dir, "2", 40)
  first = face_figures.figures(judge.judge(real), real_calibration[0], seed=3)
  assert face_figures.figures(judge.judge(real), real_calibration[0], seed=3) == first


def test_float_images_are_judged_like_their_uint8_pixels(judge):
  images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  as_float = judge.judge(images.astype(np.float32) / 255.0)
  as_uint8 = judge.judge(images)
  np.testing.assert_array_equal(as_float.detection, as_uint8.detection)
  np.testing.assert_array_equal(as_float.features, as_uint8.features)
  assert as_uint8.features.shape == (3, 256) and as_uint8.landmarks.shape == (3, 5, 2)


def test_one_judge_per_process(judge):
  assert face_judge.shared() is judge and isinstance(judge, face_judge.FaceJudge)


def test_flat_and_noise_images_are_not_faces(judge):
  flat = np.full((4, 96, 96, 3), 128, dtype=np.uint8)
  noise = np.random.default_rng(1).integers(0, 256, (20, 96, 96, 3), dtype=np.uint8)
  assert judge.face_rate(flat) == 0.0
  assert judge.face_rate(noise) <= 0.1
  assert judge.face_rate(flat[:0]) is None
  assert judge.judge(flat[:0]).features.shape == (0, 256)
  described = judge.describe()
  assert described["mtcnn"] == "1.0.0" and described["face_threshold"] == 0.9
  with pytest.raises(EvaluationError, match=r"\[N, H, W, 3\]"):
    judge.detect(flat[0])


def _judged(features, detection=None, landmarks=None):
  features = np.asarray(features, np.float32)
  n = len(features)
  detection = np.ones(n) if detection is None else np.asarray(detection, np.float64)
  if landmarks is None:
    landmarks = np.tile(np.array([[30, 40], [66, 40], [48, 55], [35, 70], [61, 70]],
                                 np.float64), (n, 1, 1))
  return face_judge.Judged(detection, landmarks, features, features)


def test_frechet_distance_and_realism_follow_their_formulas():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(400, 256))
  reference = face_figures.Reference.from_judged(_judged(real))
  # FD of the reference's own features is 0; a shift of the mean adds its squared length.
  assert face_figures.frechet_distance(real, reference) == pytest.approx(0.0, abs=1e-6)
  shifted = real + 0.5
  assert face_figures.frechet_distance(shifted, reference) == pytest.approx(0.25 * 256,
                                                                            rel=1e-6)
  # Copies of one point: no spread, FD = |mu - x|^2 + tr(S_real).
  copies = np.repeat(real[:1], 50, axis=0)
  expected = np.sum((real.mean(0) - real[0]) ** 2) + np.trace(np.cov(real, rowvar=False))
  assert face_figures.frechet_distance(copies, reference) == pytest.approx(expected, rel=1e-6)
  # Realism: a reference centre itself is inside its hypersphere (capped at 1); a far point
  # scores radius / distance; the probability multiplies.
  centre = reference.centres[:1]
  far = centre + 100.0
  scores = face_figures.face_scores(_judged(np.vstack([centre, far]), [0.5, 1.0]), reference)
  assert scores[0] == 0.5
  distances = np.linalg.norm(far - reference.centres, axis=1)
  assert scores[1] == pytest.approx(np.max(reference.radii / distances))
  # Landmarks at the reference's mean: error 0, in units of the inter-ocular distance.
  assert reference.interocular == pytest.approx(36.0)
  np.testing.assert_allclose(face_figures.landmark_errors(_judged(real[:2]), reference), 0)


def test_distinctness_counts_each_near_copy_among_a_reference_sized_draw():
  rng = np.random.default_rng(3)
  reference = face_figures.Reference.from_judged(_judged(rng.normal(size=(50, 256))))
  nearest = np.sort(np.linalg.norm(reference.centres[:, None] - reference.centres[None],
                                   axis=-1), axis=1)
  assert 0 < reference.duplicate_radius < np.median(nearest[:, 1])
  # Spread wider than the reference: no near-copies. Three copies of a point: 1/3 each.
  spread = 2.0 * rng.normal(size=(40, 256))
  copies = np.repeat(spread[:1], 3, axis=0)
  weights = face_figures.distinctness(np.vstack([spread[1:], copies]), reference)
  np.testing.assert_allclose(weights, [1.0] * 39 + [1 / 3] * 3)
  # 200 copies: counted among R - 1 = 49 others, so 1/50 whatever the set's size, and
  # the face score falls by as much.
  many = np.repeat(spread[:1], 200, axis=0)
  np.testing.assert_allclose(face_figures.distinctness(many, reference), 1 / 50)
  scores = face_figures.face_scores(_judged(many), reference)
  alone = face_figures.face_scores(_judged(many[:1]), reference)
  np.testing.assert_allclose(scores, np.full(200, alone[0] / 50))


def test_figures_intervals_and_the_missing_reference():
  rng = np.random.default_rng(1)
  reference = face_figures.Reference.from_judged(_judged(rng.normal(size=(100, 256))))
  judged = _judged(rng.normal(size=(60, 256)), rng.uniform(0.8, 1.0, 60))
  block = face_figures.figures(judged, reference, seed=0)
  assert block["num_images"] == 60 and block["face_rate"] == pytest.approx(
      np.mean(judged.detection >= 0.9))
  for key, value in (("face_score", "mean"), ("detection", "mean"), ("fd_face", "value")):
    low, high = block[key]["ci95"]
    assert low < block[key][value] < high, key
  assert block["landmark_error"]["num_faces"] == int(np.sum(judged.detection >= 0.9))
  # FD-face's interval is centred as the estimate, not shifted up by repeated images.
  low, high = block["fd_face"]["ci95"]
  assert abs((low + high) / 2 - block["fd_face"]["value"]) < (high - low) / 2
  bare = face_figures.figures(judged, None, seed=0)
  assert bare["face_score"] is None and bare["fd_face"] is None and bare["face_rate"] is not None
  one = face_figures.figures(judged.take([0]), reference, seed=0)
  assert one["face_score"]["ci95"] == [None, None] and one["fd_face"] is None
  with pytest.raises(EvaluationError, match="4 or more real photos"):
    face_figures.Reference.from_judged(_judged(rng.normal(size=(3, 256))))


def test_calibration_with_few_photos_notes_what_is_null(judge):
  noise = np.random.default_rng(2).integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
  reference, block = face_figures.calibration(judge, noise, None, seed=0)
  assert reference is None and "face_score, fd_face and landmark_error are null" in block["note"]
  assert set(block["sets"]) == {"real", "blur_1", "blur_2", "blur_4", "mean_face",
                                "mean_face_noise", "noise"}
  assert all(s["num_images"] == 3 and s["face_score"] is None for s in block["sets"].values())


def test_stages_that_skip_empty_candidates_detect_as_mtcnn_does(judge):
  del judge  # Loaded: MTCNN's weights and traces are in place.
  cartoons = np.stack([transform.transform(render.render_face(faces.face_factors(0, i)),
                                           image_size=96) for i in range(6)])
  flat = np.full((4, 96, 96, 3), 128, dtype=np.uint8)
  ours, stock = MTCNN(stages=mtcnn_stages.STAGES), MTCNN()
  for batch in (np.concatenate([cartoons, flat]), flat):
    batch = list(face_judge.working_size(batch))
    assert (ours.detect_faces(batch, threshold_onet=0.0)
            == stock.detect_faces(batch, threshold_onet=0.0))


@pytest.mark.slow
def test_judging_images_without_candidates_logs_no_tensorflow_failure():
  # In a fresh process: TensorFlow logs only the first few such failures of a process.
  code = ("import numpy as np; from evaluation import face_judge; "
          "print(face_judge.FaceJudge().judge(np.full((4, 96, 96, 3), 128, np.uint8)).detection)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[0. 0. 0. 0.]"
  assert "Local rendezvous is aborting" not in result.stderr, result.stderr[-2000:]
