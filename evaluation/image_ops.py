"""Operations on uint8 images: rounding, sharpening, labelled grids, PNG bytes (no measures).

- `to_uint8`: decoder output (float in [0, 1]) -> uint8, the same rounding everywhere.
- `sharpen`: PIL's ImageEnhance.Sharpness, as in the study (factors 0, 3, 6, 7). Factor 1
  returns the image unchanged, 0 blurs (PIL's smoothing filter), larger factors sharpen by
  unsharp masking (and also amplify the decoder's checkerboard artefacts, as the study notes).
- `panel_grid`: panels of tiles side by side, each with a label, under a title, upscaled with
  NEAREST so that tiles are at least `min_tile` pixels and each decoded pixel stays visible.
- `png_bytes`: deterministic PNG encoding (no timestamps), so the same pixels give the same
  file bytes.
The numbers measured on images (PSNR, SSIM, sharpness, ...) are in evaluation.image_quality.
"""

import io
import math

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageEnhance
from PIL import ImageFont

from evaluation.errors import EvaluationError

MIN_TILE = 96
GAP = 4
FONT_SIZE = 14
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def to_uint8(images):
  """float images in [0, 1] -> uint8 (clipped, rounded to nearest)."""
  images = np.asarray(images, dtype=np.float32)
  return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def _as_images(images):
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise EvaluationError(f"expected uint8 images [N, H, W, 3], got {images.dtype} "
                          f"{images.shape}")
  return images


def sharpen(images, factor):
  """Applies PIL ImageEnhance.Sharpness(factor) to each uint8 image [N, H, W, 3]."""
  images = _as_images(images)
  if factor < 0:
    raise EvaluationError(f"sharpening factor must be >= 0, got {factor}")
  out = np.empty_like(images)
  for i, image in enumerate(images):
    enhanced = ImageEnhance.Sharpness(Image.fromarray(image)).enhance(float(factor))
    out[i] = np.asarray(enhanced, dtype=np.uint8)
  return out


def factor_label(factor):
  """"1" for 1.0, "2.5" for 2.5: short, stable labels for factors and r limits."""
  return f"{float(factor):g}"


def tile(images, columns, scale=1, gap=GAP):
  """Arranges uint8 images [N, H, W, 3] row by row into one uint8 array (white gaps)."""
  images = _as_images(images)
  n, height, width, _ = images.shape
  columns = max(1, min(int(columns), n))
  rows = math.ceil(n / columns)
  h, w = height * scale, width * scale
  canvas = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255,
                   np.uint8)
  for index, image in enumerate(images):
    r, c = divmod(index, columns)
    big = image.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else image
    canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = big
  return canvas


def upscale_for(image_size, min_tile=MIN_TILE):
  """The integer NEAREST upscale factor that makes a tile at least `min_tile` pixels wide."""
  return max(1, math.ceil(min_tile / int(image_size)))


def _font(size=FONT_SIZE):
  # Pillow ships a scalable default font (with FreeType); the bitmap fallback is readable too.
  try:
    return ImageFont.load_default(size=size)
  except (TypeError, OSError):
    return ImageFont.load_default()


def _wrap(draw, text, font, width):
  """Greedy word wrap of `text` into lines no wider than `width` pixels (long words kept)."""
  lines = []
  for paragraph in str(text).split("\n"):
    line = ""
    for word in paragraph.split(" "):
      candidate = f"{line} {word}" if line else word
      if line and draw.textlength(candidate, font=font) > width:
        lines.append(line)
        line = word
      else:
        line = candidate
    lines.append(line)
  return lines


def _text_block(lines, font, width, align="left"):
  """A white strip of `width` pixels with `lines` of text."""
  line_height = font.size + 4 if hasattr(font, "size") else 15
  block = Image.new("RGB", (width, line_height * len(lines) + 6), BACKGROUND)
  draw = ImageDraw.Draw(block)
  for i, line in enumerate(lines):
    x = 2
    if align == "center":
      x = max(2, (width - draw.textlength(line, font=font)) // 2)
    draw.text((x, 3 + i * line_height), line, fill=TEXT, font=font)
  return block


def panel_grid(panels, columns, title="", min_tile=MIN_TILE):
  """Panels of tiles side by side, each under its label, below a title; returns a PIL image.

  Args:
    panels: list of (label, uint8 images [N, H, W, 3]); all panels share the tile size.
    columns: tiles per row inside each panel (1 gives one column per panel, as in the
      reconstruction grid).
    title: text above everything (wrapped to the grid's width).
    min_tile: tiles are upscaled (NEAREST, integer factor) to at least this many pixels.
  """
  if not panels:
    raise EvaluationError("a grid needs at least one panel")
  size = _as_images(panels[0][1]).shape[1]
  scale = upscale_for(size, min_tile)
  arrays = [tile(images, columns, scale) for _, images in panels]
  font = _font()
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  label_lines = [_wrap(measure, label, font, a.shape[1]) for (label, _), a in zip(panels, arrays)]
  label_rows = max(len(lines) for lines in label_lines)
  bodies = []
  for lines, array in zip(label_lines, arrays):
    header = _text_block(lines + [""] * (label_rows - len(lines)), font, array.shape[1],
                         align="center")
    body = Image.new("RGB", (array.shape[1], header.height + array.shape[0]), BACKGROUND)
    body.paste(header, (0, 0))
    body.paste(Image.fromarray(array), (0, header.height))
    bodies.append(body)
  gap = 3 * GAP
  width = sum(b.width for b in bodies) + gap * (len(bodies) - 1) + 2 * GAP
  height = max(b.height for b in bodies)
  title_block = _text_block(_wrap(measure, title, _font(FONT_SIZE + 2), width - 4),
                            _font(FONT_SIZE + 2), width) if title else None
  top = title_block.height if title_block else GAP
  canvas = Image.new("RGB", (width, top + height + GAP), BACKGROUND)
  if title_block:
    canvas.paste(title_block, (0, 0))
  x = GAP
  for body in bodies:
    canvas.paste(body, (x, top))
    x += body.width + gap
  return canvas


def png_bytes(image):
  """PNG bytes of a PIL image or uint8 array, without metadata (same pixels -> same bytes)."""
  if isinstance(image, np.ndarray):
    image = Image.fromarray(_as_images(image[None])[0])
  buffer = io.BytesIO()
  image.save(buffer, format="PNG", optimize=False, compress_level=6)
  return buffer.getvalue()
