"""The independent face judge (OpenCV's Haar cascade): calibrated on real photos and on noise."""

import os

import numpy as np
import pytest
from PIL import Image
from PIL import ImageFilter

from evaluation import face_judge


@pytest.fixture(scope="module")
def judge():
  return face_judge.FaceJudge()


@pytest.fixture(scope="module")
def real_test_crops(celeba_real_dir):
  """The first 200 real test photos, cropped (0,40,178,218) and resized to 96 (LANCZOS)."""
  with open(os.path.join(celeba_real_dir, "list_eval_partition.txt"), encoding="utf-8") as f:
    names = [line.split()[0] for line in f if line.split()[1:] == ["2"]][:200]
  crops = []
  for name in names:
    with Image.open(os.path.join(celeba_real_dir, "img_align_celeba", name)) as img:
      crops.append(np.asarray(img.convert("RGB").crop((0, 40, 178, 218)).resize(
          (96, 96), Image.LANCZOS)))
  return np.stack(crops)


@pytest.mark.slow
def test_judge_finds_faces_in_real_photos_and_none_in_noise(judge, real_test_crops):
  calibration = face_judge.calibration(judge, real_test_crops, seed=0)
  assert calibration["num_images"] == 200
  assert calibration["real"] >= 0.95, calibration     # Measured: 0.99 on all 450.
  assert calibration["noise"] <= 0.03, calibration    # Measured: 0.00-0.01.
  blurred = np.stack([np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(3)))
                      for image in real_test_crops])
  assert judge.face_rate(blurred) < calibration["real"]  # Measured: 0.88 blurred.


def test_float_images_are_judged_like_their_uint8_pixels(judge, real_test_crops):
  images = real_test_crops[:20]
  np.testing.assert_array_equal(judge.detect(images.astype(np.float32) / 255.0),
                                judge.detect(images))


def test_flat_and_noise_images_are_not_faces(judge):
  flat = np.full((4, 96, 96, 3), 128, dtype=np.uint8)
  noise = np.random.default_rng(1).integers(0, 256, (20, 96, 96, 3), dtype=np.uint8)
  assert judge.face_rate(flat) == 0.0
  assert judge.face_rate(noise) <= 0.1
  assert judge.face_rate(flat[:0]) is None
  described = judge.describe()
  assert described["cascade"] == "haarcascade_frontalface_default.xml"
  assert described["upscale"] == 2 and described["min_neighbors"] == 3
  with pytest.raises(face_judge.EvaluationError, match=r"\[N, H, W, 3\]"):
    judge.detect(flat[0])
