"""The image transform of the study: decode -> RGB -> crop (0,40,178,218) -> LANCZOS resize.

CelebA's aligned images are 178x218. The study crops the 178x178 square
`(left, top, right, bottom) = (0, 40, 178, 218)` (dropping the top 40 rows, mostly hair and
background) and resizes it to 96x96 with PIL's LANCZOS filter; `transform` does exactly
`img.crop(box).resize((S, S), Image.LANCZOS)`, so the prepared pixels equal that reference bit
for bit. Images of another size follow one rule (`crop_box_for`). Grayscale, palette, CMYK,
alpha and PNG data under a `.jpg` name are decoded by content and converted to RGB; an EXIF
orientation tag is applied before cropping.
"""

import io
import os

import numpy as np
from PIL import Image
from PIL import ImageOps

from data_pipeline.errors import DataError

CELEBA_SIZE = (178, 218)  # (width, height) of CelebA's aligned images.
CROP_BOX = (0, 40, 178, 218)  # (left, top, right, bottom) in CelebA pixel coordinates.
IMAGE_SIZE = 96

_EXIF_ORIENTATION = 0x0112


class BadImageError(DataError):
  """One source image cannot be used; the writer skips it and records `kind` and the reason.

  Kinds: "missing" (listed but absent), "empty", "unreadable" (truncated, not an image, or an
  I/O error), "too_small" (no room for the crop box), "no_attributes" (absent from the
  attribute list while the others have attributes).
  """

  def __init__(self, kind, message):
    super().__init__(message)
    self.kind = kind


def parse_crop_box(text):
  """Parses "left,top,right,bottom" into a validated box in CelebA's 178x218 coordinates.

  Raises:
    ValueError: the text is not four integers describing a non-empty box inside 178x218.
  """
  parts = [p.strip() for p in str(text).split(",")]
  try:
    box = tuple(int(p) for p in parts)
  except ValueError:
    raise ValueError(f"expected four integers left,top,right,bottom, got {text!r}") from None
  if len(box) != 4:
    raise ValueError(f"expected four integers left,top,right,bottom, got {text!r}")
  validate_crop_box(box)
  return box


def validate_crop_box(box):
  """Raises ValueError unless `box` is a non-empty (left, top, right, bottom) inside 178x218."""
  if len(box) != 4:
    raise ValueError(f"expected four integers left,top,right,bottom, got {box!r}")
  left, top, right, bottom = box
  width, height = CELEBA_SIZE
  if not (0 <= left < right <= width and 0 <= top < bottom <= height):
    raise ValueError(f"crop box {','.join(map(str, box))} must satisfy 0 <= left < right <= "
                     f"{width} and 0 <= top < bottom <= {height} (CelebA's {width}x{height} "
                     "pixel coordinates)")


def crop_box_for(size, crop_box=CROP_BOX):
  """The crop box to apply to an image of `size` = (width, height).

  1. Take the largest region of the image with CelebA's aspect ratio 178:218, centred (the
     whole image when it already has that ratio, e.g. 356x436).
  2. Map the box from CelebA's 178x218 coordinates onto that region, scaling both axes by the
     same factor; round its corner and its width/height to whole pixels (a square box stays
     square). A box below one pixel makes the image unusable (`BadImageError`, "too_small").

  So 178x218 keeps the box, a 2x copy gets it doubled, and a landscape photo gets a centred
  portrait frame instead of a squashed face.
  """
  width, height = size
  if (width, height) == CELEBA_SIZE:
    return tuple(crop_box)
  ref_width, ref_height = CELEBA_SIZE
  # Largest centred region with CelebA's aspect ratio; compare by cross-multiplying so that an
  # exact multiple of 178x218 keeps the whole image without floating-point doubt.
  if width * ref_height > height * ref_width:  # Wider than CelebA: trim the sides.
    frame_height = height
    frame_width = height * ref_width / ref_height
  else:  # Taller (or the same ratio): trim top and bottom.
    frame_width = width
    frame_height = width * ref_height / ref_width
  offset_x = (width - frame_width) / 2
  offset_y = (height - frame_height) / 2
  scale = frame_width / ref_width
  left, top, right, bottom = crop_box
  # Round the corner and the extent separately, so that a square box stays square.
  new_left = round(offset_x + left * scale)
  new_top = round(offset_y + top * scale)
  new_right = min(width, new_left + round((right - left) * scale))
  new_bottom = min(height, new_top + round((bottom - top) * scale))
  if new_right <= new_left or new_bottom <= new_top:
    raise BadImageError("too_small", f"image of {width}x{height} pixels is too small for the "
                        f"crop box {','.join(map(str, crop_box))}")
  return new_left, new_top, new_right, new_bottom


def open_rgb(data):
  """Decodes image bytes (any format PIL reads) into a fully loaded RGB `PIL.Image`.

  Raises:
    BadImageError: the bytes are empty, truncated or not an image.
  """
  if not data:
    raise BadImageError("empty", "empty file")
  try:
    img = Image.open(io.BytesIO(data))
    img.load()  # Decode now so that truncated files fail here, not later.
  except Image.DecompressionBombError as error:
    raise BadImageError("unreadable", f"image too large: {error}") from None
  except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying "not decodable".
    raise BadImageError("unreadable",
                        f"not a readable image ({type(error).__name__}: {error})") from None
  if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
    img = ImageOps.exif_transpose(img)
  if img.mode != "RGB":
    img = img.convert("RGB")
  return img


def transform(img, crop_box=CROP_BOX, image_size=IMAGE_SIZE):
  """Crops `img` (RGB) by the rule above and resizes it; returns uint8 [S, S, 3]."""
  box = crop_box_for(img.size, crop_box)
  # crop() then resize(), not resize(box=...): the latter lets LANCZOS read pixels outside the
  # box, which would differ from the study's reference at the edges.
  resized = img.crop(box).resize((image_size, image_size), Image.LANCZOS)
  return np.asarray(resized, dtype=np.uint8)


def transform_bytes(data, crop_box=CROP_BOX, image_size=IMAGE_SIZE):
  """`transform(open_rgb(data))`: encoded image bytes -> uint8 [S, S, 3]."""
  return transform(open_rgb(data), crop_box, image_size)


def transform_array(pixels, crop_box=CROP_BOX, image_size=IMAGE_SIZE):
  """Transforms an already decoded uint8 [H, W, 3] (or [H, W]) array, e.g. from TFDS."""
  pixels = np.asarray(pixels)
  if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
    raise BadImageError("unreadable",
                        f"expected a uint8 [H, W, 3] image, got {pixels.dtype} {pixels.shape}")
  img = Image.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[-1] == 1
                        else pixels)
  if img.mode != "RGB":
    img = img.convert("RGB")
  return transform(img, crop_box, image_size)


def transform_file(path_or_bytes, crop_box=CROP_BOX, image_size=IMAGE_SIZE):
  """Transforms an image file (a path or its bytes), e.g. a user's own photo of any size.

  Raises:
    DataError: the file is missing, unreadable, or not an image; the message names the file.
  """
  if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
    return transform_bytes(bytes(path_or_bytes), crop_box, image_size)
  path = os.fspath(path_or_bytes)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as error:
    raise BadImageError("missing" if isinstance(error, FileNotFoundError) else "unreadable",
                        f"cannot read image {path}: {error.strerror or error}") from None
  try:
    return transform_bytes(data, crop_box, image_size)
  except BadImageError as error:
    raise BadImageError(error.kind, f"{path}: {error}") from None
