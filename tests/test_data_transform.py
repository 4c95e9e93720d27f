"""The image transform: crop rule, LANCZOS reference, input modes, bad bytes (no TensorFlow)."""

import io

import numpy as np
import pytest
from PIL import Image

from data_pipeline import transform
from data_pipeline.errors import DataError
from data_pipeline.transform import BadImageError


def _face(size=(178, 218), seed=0):
  """A smooth random RGB image (JPEG-friendly, like a photo)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
  return Image.fromarray(small).resize(size, Image.BICUBIC)


def _encode(img, fmt, **kwargs):
  buffer = io.BytesIO()
  img.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def _reference(img, box=transform.CROP_BOX, size=96):
  return np.asarray(img.convert("RGB").crop(box).resize((size, size), Image.LANCZOS))


def test_celeba_sized_image_matches_the_study_reference_exactly():
  img = _face()
  data = _encode(img, "JPEG", quality=95)
  expected = _reference(Image.open(io.BytesIO(data)))
  got = transform.transform_bytes(data)
  assert got.dtype == np.uint8 and got.shape == (96, 96, 3)
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(transform.transform_bytes(data, (10, 20, 150, 200), 32),
                                _reference(Image.open(io.BytesIO(data)), (10, 20, 150, 200), 32))


@pytest.mark.parametrize("size, expected", [
    ((178, 218), (0, 40, 178, 218)),     # CelebA: unchanged.
    ((356, 436), (0, 80, 356, 436)),     # 2x CelebA: the box scales with it.
    ((89, 109), (0, 20, 89, 109)),       # Half size.
    ((600, 218), (211, 40, 389, 218)),   # Landscape: centred 178x218 frame, then the box.
    ((178, 400), (0, 131, 178, 309)),    # Tall: centred frame vertically.
])
def test_crop_box_rule_for_other_sizes(size, expected):
  assert transform.crop_box_for(size) == expected


def test_other_sizes_give_a_square_undistorted_crop():
  left, top, right, bottom = transform.crop_box_for((1200, 900))
  assert right - left == bottom - top  # The default box is square, so is its scaled copy.


def test_too_small_image_is_a_bad_image():
  with pytest.raises(BadImageError, match="too small") as info:
    transform.transform(Image.new("RGB", (89, 109)), crop_box=(0, 0, 1, 1))
  assert info.value.kind == "too_small"


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16", "1"])
def test_other_modes_become_rgb(mode):
  img = _face().convert(mode) if mode != "I;16" else _face().convert("L").convert("I;16")
  fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
  pixels = transform.transform_bytes(_encode(img, fmt))
  assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8


def test_png_bytes_under_a_jpg_name_are_decoded_by_content(tmp_path):
  img = _face()
  path = tmp_path / "000001.jpg"
  path.write_bytes(_encode(img, "PNG"))
  np.testing.assert_array_equal(transform.transform_file(path), _reference(img))


def test_grayscale_keeps_its_values_in_all_channels():
  gray = _face().convert("L")
  pixels = transform.transform_bytes(_encode(gray, "PNG"))
  np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])
  np.testing.assert_array_equal(pixels[..., 0], _reference(gray)[..., 0])


def test_exif_orientation_is_applied():
  img = _face((218, 178))  # Stored sideways, as a camera does.
  exif = Image.Exif()
  exif[0x0112] = 6  # "Rotate 90 CW to display".
  data = _encode(img, "JPEG", quality=95, exif=exif.tobytes())
  upright = Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270)
  assert upright.size == (178, 218)
  np.testing.assert_array_equal(transform.transform_bytes(data), _reference(upright))


@pytest.mark.parametrize("data, kind", [
    (b"", "empty"),
    (b"this is not an image\n", "unreadable"),
    (None, "unreadable"),  # Truncated JPEG, built below.
])
def test_bad_bytes_raise_bad_image_error(data, kind):
  if data is None:
    full = _encode(_face(), "JPEG", quality=95)
    data = full[:len(full) // 2]
  with pytest.raises(BadImageError) as info:
    transform.transform_bytes(data)
  assert info.value.kind == kind
  assert isinstance(info.value, DataError)


def test_transform_file_names_the_file(tmp_path):
  with pytest.raises(BadImageError, match="nope.jpg") as info:
    transform.transform_file(tmp_path / "nope.jpg")
  assert info.value.kind == "missing"
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"garbage")
  with pytest.raises(BadImageError, match="bad.jpg"):
    transform.transform_file(bad)


def test_transform_array_matches_bytes_path():
  img = _face()
  np.testing.assert_array_equal(transform.transform_array(np.asarray(img)), _reference(img))


@pytest.mark.parametrize("text", ["0,40,178", "a,b,c,d", "0,40,179,218", "10,40,10,218",
                                  "-1,0,178,218"])
def test_bad_crop_boxes_are_rejected(text):
  with pytest.raises(ValueError):
    transform.parse_crop_box(text)


def test_crop_box_parses():
  assert transform.parse_crop_box(" 0, 40,178,218") == (0, 40, 178, 218)
