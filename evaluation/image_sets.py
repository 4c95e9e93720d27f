"""Image sets from files (a folder of PNG/JPEG files or a uint8 .npy array) for the judge."""

import hashlib
import os

import numpy as np
from PIL import Image

from evaluation import face_judge
from evaluation.errors import EvaluationError

SUFFIXES = (".png", ".jpg", ".jpeg")


def load(path, flag):
  """The images at `path`, at the judge's working size.

  Args:
    path: a folder of .png/.jpg/.jpeg files (any sizes; read in name order, as RGB), or a .npy
      uint8 array [N, H, W, 3].
    flag: the flag that named it, for errors.

  Returns:
    (uint8 [N >= 1, 96, 96, 3], sha256 hex of the files read, in order).

  Raises:
    EvaluationError: a missing path, an empty folder, an unreadable image, or an array of
      another dtype or shape.
  """
  digest = hashlib.sha256()
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(SUFFIXES))
    if not names:
      raise EvaluationError(f"{flag} {path} holds no .png or .jpg files; point it at a folder "
                            "of images or a uint8 .npy [N, H, W, 3]")
    images = []
    for name in names:
      file_path = os.path.join(path, name)
      with open(file_path, "rb") as f:
        data = f.read()
      digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
      try:
        with Image.open(file_path) as image:
          images.append(face_judge.working_size(np.asarray(image.convert("RGB"))[None])[0])
      except OSError as error:
        raise EvaluationError(f"{flag}: cannot read the image {file_path} ({error}); remove "
                              "or replace it") from None
    return np.stack(images), digest.hexdigest()
  if path.endswith(".npy") and os.path.isfile(path):
    try:
      array = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as error:
      raise EvaluationError(f"{flag} {path} is not a NumPy array file ({error})") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or not len(array):
      raise EvaluationError(f"{flag} {path} holds {array.dtype} {list(array.shape)}; it must "
                            "be uint8 [N >= 1, H, W, 3] RGB images")
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return face_judge.working_size(np.asarray(array)), digest.hexdigest()
  raise EvaluationError(f"{flag} {path} is neither a folder of images nor a .npy file; check "
                        "the path")
