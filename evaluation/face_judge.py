"""An independent judge of "is this a face": OpenCV's Haar cascade frontal-face detector.

Judging generated faces with a model's own encoder is circular; this judge was trained by
nobody here. It is the Viola-Jones detector (Viola & Jones, "Rapid object detection using a
boosted cascade of simple features", CVPR 2001) with the cascade file that OpenCV 4.x ships,
`haarcascade_frontalface_default.xml` (opencv-python-headless < 5; the 5.0 wheels no longer
ship the cascades), so nothing is downloaded at run time.

An image counts as a face when the detector finds at least one face in it. 96x96 images are
small for the cascade's 24x24 base window at scale factor 1.1, so each image is converted to
grayscale and upscaled `upscale` times (bilinear) first; `min_size` is in upscaled pixels. With
the defaults (upscale 2, scale factor 1.1, min neighbours 3, min size 40x40) the face rates
measured on 96x96 crops (box 0,40,178,218, LANCZOS) of the 450 real CelebA test photos of
../shared/celeba_real are: real 0.99, the same blurred (Gaussian, sigma 3 px) 0.88, uniform
noise 0.00-0.01. `calibration` reports such reference rates with every use, so that a rate is
read against what the judge does on real faces and on noise.
"""

import dataclasses

import numpy as np

from evaluation.errors import EvaluationError

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
  """The detector's settings (cv2.CascadeClassifier.detectMultiScale), recorded in reports.

  Attributes:
    upscale: integer factor the image is enlarged by (bilinear) before detection.
    scale_factor: image-pyramid step of detectMultiScale.
    min_neighbors: overlapping detections needed to keep one (higher: fewer false faces).
    min_size: smallest face side, in upscaled pixels.
  """
  upscale: int = 2
  scale_factor: float = 1.1
  min_neighbors: int = 3
  min_size: int = 40


class FaceJudge:
  """Counts the images in which OpenCV's frontal-face cascade finds a face.

  Raises:
    EvaluationError: OpenCV or its cascade file is missing (install opencv-python-headless<5).
  """

  def __init__(self, settings=JudgeSettings()):
    try:
      import cv2  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise EvaluationError("the face judge needs OpenCV: pip install "
                            "'opencv-python-headless>=4.8,<5'") from None
    self._cv2 = cv2
    self.settings = settings
    self.cascade_path = cv2.data.haarcascades + CASCADE_FILE
    self._cascade = cv2.CascadeClassifier(self.cascade_path)
    if self._cascade.empty():
      raise EvaluationError(f"OpenCV {cv2.__version__} ships no {CASCADE_FILE} (OpenCV 5 "
                            "dropped the cascades); install opencv-python-headless<5")

  def detect(self, images):
    """Whether each image shows a face.

    Args:
      images: uint8 [N, H, W, 3] RGB (or float in [0, 1], converted as `to_uint8` does).

    Returns:
      bool [N].
    """
    images = _as_uint8(images)
    cv2, s = self._cv2, self.settings
    found = np.zeros(len(images), dtype=bool)
    for index, image in enumerate(images):
      gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
      if s.upscale != 1:
        gray = cv2.resize(gray, (gray.shape[1] * s.upscale, gray.shape[0] * s.upscale),
                          interpolation=cv2.INTER_LINEAR)
      faces = self._cascade.detectMultiScale(gray, scaleFactor=s.scale_factor,
                                             minNeighbors=s.min_neighbors,
                                             minSize=(s.min_size, s.min_size))
      found[index] = len(faces) > 0
    return found

  def face_rate(self, images):
    """The fraction of images with at least one detected face, in [0, 1]; None for no images."""
    if len(images) == 0:
      return None
    return float(self.detect(images).mean())

  def describe(self):
    """What a report records about the judge: detector, cascade, settings, OpenCV version."""
    return {"detector": "OpenCV Haar cascade (Viola-Jones)", "cascade": CASCADE_FILE,
            "opencv": self._cv2.__version__, **dataclasses.asdict(self.settings),
            "face": "at least one detection in the image"}


def _as_uint8(images):
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise EvaluationError(f"the face judge takes RGB images [N, H, W, 3], got {images.shape}")
  if images.dtype == np.uint8:
    return images
  return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def calibration(judge, real_images, seed=0):
  """The judge's reference rates: on real images and on uniform noise of the same shape.

  Args:
    judge: a FaceJudge.
    real_images: uint8 [N, H, W, 3] real faces (e.g. the test split's crops).
    seed: seed of the noise (numpy.random.default_rng).

  Returns:
    {"real": rate, "noise": rate, "num_images": N}: the rates that a measured face rate is
    read against (a model's faces near "real" look like faces to the judge; near "noise", not).
  """
  real_images = _as_uint8(real_images)
  noise = np.random.default_rng(seed).integers(0, 256, real_images.shape, dtype=np.uint8)
  return {"real": judge.face_rate(real_images), "noise": judge.face_rate(noise),
          "num_images": int(len(real_images))}
