"""Draws a synthetic face from its factors, where CelebA's aligned faces sit.

`render_face(factors)` draws the face described by a factor dict (factors.py) as a
178x218 RGB image; `landmarks(factors)` gives CelebA's five landmarks of that drawing.

Geometry follows CelebA's alignment (eyes near y=111, mouth near y=152 in the 178x218 image), so
the crop box (0, 40, 178, 218) holds the face and some hair. Everything is drawn at 2x resolution
and averaged down 2x2 (supersampling: PIL draws polygons without anti-aliasing, and a box
reduction is exactly the coverage average, at a tenth of the cost of a LANCZOS resize). Shapes are
polygons in face-local coordinates mapped through one rotation and offset, so the head tilt costs
nothing extra.
"""

import math

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

from data_pipeline.synthetic.factors import EYESHADOW_RGB
from data_pipeline.synthetic.factors import HAIR_RGB
from data_pipeline.synthetic.factors import IRIS_RGB
from data_pipeline.synthetic.factors import LIPSTICK_RGB
from data_pipeline.synthetic.factors import PALE_SKIN
from data_pipeline.synthetic.factors import SKIN_RAMP

IMAGE_SIZE = (178, 218)  # (width, height) of CelebA's aligned images.
# Where the middle of the head sits before the pose offset; puts the eyes near CelebA's y=111.
FACE_CENTER = (89.0, 120.0)
_SUPERSAMPLE = 2


def _pose(f):
  """The map from face-local to image coordinates (1x): a rotation matrix and an origin."""
  angle = math.radians(f["tilt"])
  cos, sin = math.cos(angle), math.sin(angle)
  origin = np.array([FACE_CENTER[0] + f["offset_x"], FACE_CENTER[1] + f["offset_y"]])
  return np.array([[cos, sin], [-sin, cos]]), origin


class _Pen:
  """Draws polygons and lines given in face-local 1x coordinates, after tilt and offset."""

  def __init__(self, image, factors):
    self.draw = ImageDraw.Draw(image, "RGBA")  # "RGBA" blends colours with an alpha.
    matrix, origin = _pose(factors)
    self._matrix = matrix * _SUPERSAMPLE
    self._origin = origin * _SUPERSAMPLE

  def xy(self, points):
    return (np.asarray(points, np.float64) @ self._matrix + self._origin).ravel().tolist()

  def polygon(self, points, fill):
    self.draw.polygon(self.xy(points), fill=fill)

  def line(self, points, fill, width):
    self.draw.line(self.xy(points), fill=fill, width=max(1, round(width * _SUPERSAMPLE)),
                   joint="curve")

  def circle(self, center, radius, fill=None, outline=None, width=1):
    x, y = self.xy([center])
    r = radius * _SUPERSAMPLE
    self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline,
                      width=max(1, round(width * _SUPERSAMPLE)))


def _ellipse(cx, cy, rx, ry, t0=0.0, t1=2 * math.pi, n=48):
  t = np.linspace(t0, t1, n)
  return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _scale(rgb, factor):
  return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)


def _mix(rgb_a, rgb_b, weight):
  return tuple(int(round(a * (1 - weight) + b * weight)) for a, b in zip(rgb_a, rgb_b))


def _skin_rgb(f):
  if f["Pale_Skin"]:
    base = np.array(PALE_SKIN, np.float64)
  else:
    position = f["skin_tone"] * (len(SKIN_RAMP) - 1)
    low = int(min(position, len(SKIN_RAMP) - 2))
    base = SKIN_RAMP[low] + (position - low) * (SKIN_RAMP[low + 1] - SKIN_RAMP[low])
  return tuple(int(v) for v in np.clip(base + np.array(f["skin_jitter"]), 0, 255))


def _hair_rgb(f):
  base = np.array(HAIR_RGB[f["hair_color"]], np.float64) + np.array(f["hair_jitter"])
  return tuple(int(v) for v in np.clip(base, 0, 255))


class _Face:
  """The derived geometry of one face (face-local 1x coordinates, origin at the head centre)."""

  def __init__(self, f):
    self.f = f
    self.w = (46.0 + 3.0 * f["head_width_amount"]) if f["Chubby"] else (
        38.0 + 6.0 * f["head_width_amount"])
    aspect = (1.34 + 0.1 * f["head_aspect_amount"]) if f["Oval_Face"] else (
        1.14 + 0.14 * f["head_aspect_amount"])
    self.h = min(self.w * aspect, 62.0)
    self.jaw = (0.84 + 0.1 * f["jaw_amount"]) if f["Male"] else (0.72 + 0.1 * f["jaw_amount"])
    self.fx = 4.0 * f["yaw"]  # features slide sideways when the head turns
    self.eye_y = -8.0
    self.eye_dx = f["eye_spacing"]
    self.eye_w = f["eye_width"]
    self.eye_open = (1.6 + 0.8 * f["eye_open_amount"]) if f["Narrow_Eyes"] else (
        3.4 + 1.4 * f["eye_open_amount"])
    self.nose_y = self.eye_y + 19.0 + 4.0 * f["nose_length"] + (2.5 if f["Big_Nose"] else 0.0)
    self.nose_w = (8.5 + 2.5 * f["nose_width_amount"]) if f["Big_Nose"] else (
        5.5 + 2.0 * f["nose_width_amount"])
    self.mouth_y = min(self.nose_y + 15.0, self.h * 0.68)
    self.mouth_w = 12.0 + 4.0 * f["mouth_width"] + (2.0 if f["Smiling"] else 0.0)
    self.smile = (3.5 + 4.0 * f["smile_amount"]) if f["Smiling"] else (
        -2.0 + 3.0 * f["smile_amount"])
    self.mouth_open = (2.5 + 3.5 * f["mouth_open_amount"]) if f["Mouth_Slightly_Open"] else 0.0
    self.lip = (4.0 + 1.5 * f["lip_amount"]) if f["Big_Lips"] else (2.0 + 1.2 * f["lip_amount"])
    self.skin = _skin_rgb(f)
    self.hair = _hair_rgb(f)
    self.brow_rgb = _scale(self.hair, 0.7) if f["hair_color"] != "black" else self.hair

  def outline(self, grow=0.0, n=72):
    """The head outline: an ellipse whose lower half narrows towards the jaw."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    lower = np.clip(np.sin(t), 0, None)
    x = (self.w + grow) * np.cos(t) * (1 - (1 - self.jaw) * lower)
    y = (self.h + grow) * np.sin(t)
    return np.stack([x, y], axis=1)

  def mouth_curve(self, x):
    """The line between the lips; corners rise with the smile."""
    return self.mouth_y - self.smile * (x / self.mouth_w) ** 2 + 0.25 * self.smile


def render_face(factors):
  """Draws the face described by `factors` as a 178x218 RGB PIL image."""
  f = factors
  face = _Face(f)
  size = (IMAGE_SIZE[0] * _SUPERSAMPLE, IMAGE_SIZE[1] * _SUPERSAMPLE)
  image = _background(f).resize(size, Image.NEAREST)  # a smooth gradient: nearest suffices
  _background_shapes(image, f)
  pen = _Pen(image, f)

  _draw_back_hair(pen, face)
  _draw_body(pen, face)
  _draw_head(pen, face)
  _draw_shading(pen, face)
  _draw_front_hair(pen, face)
  _draw_facial_hair(pen, face)
  _draw_eyes(pen, face)
  _draw_brows(pen, face)
  _draw_nose(pen, face)
  _draw_cheeks(pen, face)
  _draw_mouth(pen, face)
  _draw_accessories(pen, face)

  image = image.reduce(_SUPERSAMPLE)
  image = _apply_lighting(image, f)
  if f["Blurry"]:
    image = image.filter(ImageFilter.GaussianBlur(f["blur_radius"]))
  return image


def landmarks(factors):
  """CelebA's five landmarks of the face, as ints in LANDMARK_NAMES order (image pixels).

  Left and right are as seen in the image (the left eye has the smaller x), as in CelebA.
  """
  face = _Face(factors)
  points = []
  for side in (-1, 1):
    cx, cy, _, _, _ = _almond(face, side)
    points.append((cx, cy))
  points.append((face.fx * 1.5, face.nose_y))
  for side in (-1, 1):
    x = side * face.mouth_w
    points.append((face.fx + x, float(face.mouth_curve(x))))
  matrix, origin = _pose(factors)
  image_points = np.asarray(points) @ matrix + origin
  return [int(round(v)) for v in image_points.ravel()]


def _background(f):
  """A two-colour linear gradient at 1x (upsampled by the caller: it is smooth anyway)."""
  width, height = IMAGE_SIZE
  dx, dy = math.cos(f["background_angle"]), math.sin(f["background_angle"])
  span = abs(dx) * width + abs(dy) * height  # t runs from 0 to 1 across the image
  tx = (np.arange(width, dtype=np.float32) - width / 2) * (dx / span) + 0.5
  ty = (np.arange(height, dtype=np.float32) - height / 2) * (dy / span)
  t = ty[:, None] + tx[None, :]
  a = np.array(f["background_rgb_a"], np.float32)
  b = np.array(f["background_rgb_b"], np.float32)
  pixels = a + t[..., None] * (b - a)
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _background_shapes(image, f):
  """A few random shapes behind the person, so that backgrounds are not all plain gradients."""
  rng = np.random.default_rng(f["background_seed"])
  draw = ImageDraw.Draw(image, "RGBA")
  width, height = image.size
  for _ in range(int(rng.integers(0, 5))):
    kind = int(rng.integers(3))
    color = tuple(int(v) for v in rng.integers(10, 246, size=3)) + (int(rng.integers(60, 220)),)
    x0, y0 = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    x1, y1 = x0 + float(rng.uniform(20, 160)), y0 + float(rng.uniform(20, 160))
    if kind == 0:
      draw.ellipse((x0, y0, x1, y1), fill=color)
    elif kind == 1:
      draw.rectangle((x0, y0, x1, y1), fill=color)
    else:
      draw.line((x0, y0, x1 - 80, y1 + 60), fill=color, width=int(rng.integers(4, 16)))


def _wave(face, y, amplitude):
  """Sideways displacement of a hair edge at height y: wavy, curly (neither attribute) or none."""
  f = face.f
  if f["Straight_Hair"]:
    return np.zeros_like(y)
  if f["Wavy_Hair"]:
    return amplitude * np.sin(y / 7.0 + f["hair_wave_phase"])
  return 0.45 * amplitude * np.sin(y / 2.6 + f["hair_wave_phase"])  # tight curls


def _hair_bottom(face):
  return face.h * 0.1 + face.f["hair_length"] * 95.0


def _draw_back_hair(pen, face):
  """Hair behind the head: the crown outline and, for long hair, the fall past the shoulders."""
  f = face.f
  if f["Bald"]:
    # A fringe around the sides of the head only.
    for side in (-1, 1):
      x_out, x_in = side * (face.w + 2.5), side * (face.w - 3)
      pen.polygon([(x_in, -face.h * 0.35), (x_out, -face.h * 0.3), (x_out, 6), (x_in, 8)],
                  face.hair)
    return
  volume = f["hair_volume"]
  rx, ry = face.w + volume, face.h + 0.8 * volume
  crown = _ellipse(0, 0, rx, ry, math.pi, 2 * math.pi, n=40)
  bottom = _hair_bottom(face)
  ys = np.linspace(0, bottom, 16)
  spread = 6.0 * f["hair_length"]
  right = np.stack([rx + spread * ys / max(bottom, 1) + _wave(face, ys, 3.5), ys], axis=1)
  left = np.stack([-rx - spread * ys / max(bottom, 1) + _wave(face, ys, 3.5), ys], axis=1)[::-1]
  if not f["Straight_Hair"]:
    crown = crown + np.stack([0 * crown[:, 1], _wave(face, crown[:, 0], 1.5)], axis=1)
  pen.polygon(np.concatenate([crown, right, left]), face.hair)


def _draw_body(pen, face):
  """Neck, shoulders and clothes, plus the collar, necktie and necklace."""
  f = face.f
  w, h = face.w, face.h
  neck_skin = _scale(face.skin, 0.86)
  neck_w = 0.5 * w if f["Male"] else 0.42 * w
  pen.polygon([(-neck_w, h * 0.4), (neck_w, h * 0.4), (neck_w * 1.1, h + 30),
               (-neck_w * 1.1, h + 30)], neck_skin)
  shoulder = 2.2 * w if f["Male"] else 1.95 * w
  top = h + 14
  body = [(-neck_w * 1.1, top), (-shoulder * 0.8, top + 10), (-shoulder, top + 26),
          (-shoulder * 1.1, 160), (shoulder * 1.1, 160), (shoulder, top + 26),
          (shoulder * 0.8, top + 10), (neck_w * 1.1, top)]
  pen.polygon(body, f["clothes_rgb"])
  if f["Wearing_Necktie"]:
    # A white shirt collar with the tie knot and blade in the opening.
    pen.polygon([(-neck_w * 1.1, top), (0, top + 20), (neck_w * 1.1, top),
                 (neck_w * 1.4, top + 6), (0, top + 30), (-neck_w * 1.4, top + 6)],
                (236, 236, 240))
    tie = f["tie_rgb"]
    pen.polygon([(-4, top + 2), (4, top + 2), (3, top + 8), (-3, top + 8)], _scale(tie, 0.8))
    pen.polygon([(-3, top + 8), (3, top + 8), (6, top + 38), (0, top + 45), (-6, top + 38)], tie)
  else:
    pen.polygon([(-neck_w * 1.1, top), (0, top + 16), (neck_w * 1.1, top)], neck_skin)
  if f["Wearing_Necklace"]:
    points = _ellipse(0, top - 2, neck_w * 1.15, 14, 0.15 * math.pi, 0.85 * math.pi, n=11)
    for x, y in points:
      pen.circle((x, y), 1.6, fill=(240, 228, 170))


def _draw_head(pen, face):
  """Ears (hidden by long hair), the head, and the marks of age on it: double chin, wrinkles."""
  f = face.f
  ears_visible = f["Bald"] or f["hair_length"] < 0.4
  if ears_visible:
    for side in (-1, 1):
      pen.polygon(_ellipse(side * (face.w - 1), 2, 6.5, 11, n=24), _scale(face.skin, 0.93))
      pen.polygon(_ellipse(side * (face.w + 1), 2, 2.5, 6, n=16), _scale(face.skin, 0.8))
  pen.polygon(face.outline(), face.skin)
  if f["Double_Chin"]:
    # A fold under the chin with a shaded band below it.
    upper = _ellipse(0, face.h - 5, face.w * 0.42, 6, 0.15 * math.pi, 0.85 * math.pi, n=16)
    lower = _ellipse(0, face.h - 1, face.w * 0.48, 7, 0.85 * math.pi, 0.15 * math.pi, n=16)
    pen.polygon(np.concatenate([upper, lower]), (80, 40, 30, 45))
    pen.line(upper, (80, 40, 30, 110), 1.4)
  if not f["Young"]:
    # Forehead lines and crow's feet.
    alpha = int(50 + 60 * f["wrinkle_amount"])
    for k in range(3):
      y = -face.h * 0.5 + 4.5 * k
      pen.line(_ellipse(0, y + 4, face.w * 0.45, 4, 1.15 * math.pi, 1.85 * math.pi, n=12),
               (90, 50, 40, alpha), 1.0)
    for side in (-1, 1):
      x = face.fx + side * (face.eye_dx + face.eye_w + 3)
      for dy in (-2.5, 0, 2.5):
        pen.line([(x, face.eye_y + dy), (x + side * 4, face.eye_y + dy * 1.6)],
                 (90, 50, 40, alpha), 0.8)


def _draw_shading(pen, face):
  """Darkens the side of the face turned away from the light.

  Eight overlapping slices of the head, each cut further out, each adding a faint shade: a ramp
  that deepens towards the rim, in steps too small to see.
  """
  f = face.f
  alpha = int(round(6 * f["light_strength"]))
  if alpha == 0:
    return
  angle = f["light_angle"]
  light = np.array([math.cos(angle), math.sin(angle)])
  outline = face.outline()
  along = outline @ light / face.w
  for cut in np.linspace(0.2, -0.85, 8):
    points = outline[along < cut]
    if len(points) > 2:
      pen.polygon(points, (50, 25, 35, alpha))


def _draw_front_hair(pen, face):
  """Hair over the forehead down to the hairline (bangs, receding), side locks, hat."""
  f = face.f
  w, h = face.w, face.h
  if not f["Bald"]:
    volume = f["hair_volume"]
    crown = _ellipse(0, 0, w + volume, h + 0.8 * volume, math.pi, 2 * math.pi, n=40)
    xs = np.linspace(w + 1, -(w + 1), 33)
    part = f["hair_part"] * w
    if f["Bangs"]:
      apex = -h * 0.42
      edge = apex + 0.2 * h * (np.abs(xs) / w) ** 3
      edge = edge + 2.2 * (np.arange(len(xs)) % 2)  # a ragged fringe
    elif f["Receding_Hairline"]:
      # The "M" shape: the temples recede further than the middle.
      apex = -h * 0.78
      edge = apex - 0.12 * h * np.sin(np.pi * np.clip(np.abs(xs) / w, 0, 1)) + (
          0.5 * h * np.clip((np.abs(xs) / w) - 0.75, 0, None) / 0.25)
    else:
      apex = -h * 0.66
      edge = apex + 0.52 * h * (np.abs(xs - part) / (w + abs(part))) ** 2.2
    edge = np.minimum(edge, -h * 0.12)
    hairline = np.stack([xs, edge], axis=1)
    pen.polygon(np.concatenate([crown, hairline]), face.hair)
    if f["hair_length"] >= 0.4:
      # Locks framing the face, falling in front of the shoulders.
      bottom = _hair_bottom(face)
      ys = np.linspace(-h * 0.2, bottom, 12)
      for side in (-1, 1):
        outer = side * (w + volume * 0.6) + _wave(face, ys, 3.0)
        inner = side * (w - 4 + 4 * ys / bottom) + _wave(face, ys, 3.0)
        points = np.concatenate([np.stack([outer, ys], 1), np.stack([inner, ys], 1)[::-1]])
        pen.polygon(points, _scale(face.hair, 0.93))
  if f["Sideburns"]:
    for side in (-1, 1):
      pen.polygon([(side * (w + 0.5), -h * 0.2), (side * (w - 5), -h * 0.2),
                   (side * (w - 5.5), 12), (side * (w - 0.5), 12)], face.hair)
  if f["Wearing_Hat"]:
    _draw_hat(pen, face)


def _draw_hat(pen, face):
  f = face.f
  w, h = face.w, face.h
  color = f["hat_rgb"]
  band = -h * 0.5
  style = f["hat_style"]
  if style == 0:  # baseball cap: a dome and a visor towards the viewer
    pen.polygon(_ellipse(0, band, w + 5, h * 0.62, math.pi, 2 * math.pi, n=32), color)
    pen.polygon(_ellipse(0, band - 1, w * 0.95, 11, 0, math.pi, n=24), _scale(color, 0.78))
  elif style == 1:  # beanie with a folded band
    pen.polygon(_ellipse(0, band, w + 6, h * 0.75, math.pi, 2 * math.pi, n=32), color)
    pen.polygon([(-(w + 7), band - 9), (w + 7, band - 9), (w + 7, band + 3), (-(w + 7), band + 3)],
                _scale(color, 0.8))
  else:  # brimmed hat
    pen.polygon(_ellipse(0, band - 2, w + 24, 8, n=40), _scale(color, 0.8))
    pen.polygon([(-(w - 2), band - 2), (-(w - 6), band - h * 0.6), (w - 6, band - h * 0.6),
                 (w - 2, band - 2)], color)
    pen.polygon([(-(w - 2), band - 2), (-(w - 3), band - 8), (w - 3, band - 8), (w - 2, band - 2)],
                _scale(color, 0.5))


def _jaw_region(face, top_middle, top_side):
  """Jaw, chin and upper lip: the head below a curve that runs from `top_side` at the ears down
  to `top_middle` under the nose (for beards and stubble, which leave the cheeks bare)."""
  outline = face.outline(grow=1.5)
  jaw = outline[outline[:, 1] > top_side]  # one arc, from the right ear round the chin
  x_right, x_left = jaw[0, 0], jaw[-1, 0]
  xs = np.linspace(x_left, x_right, 15)
  half = max(x_right, -x_left)
  ys = top_middle - (top_middle - top_side) * (xs / half) ** 2
  return np.concatenate([jaw, np.stack([xs, ys], 1)])


def _draw_facial_hair(pen, face):
  f = face.f
  beard_rgb = face.brow_rgb
  if f["5_o_Clock_Shadow"]:
    pen.polygon(_jaw_region(face, face.nose_y + 2, face.eye_y + 20), (60, 60, 75, 50))
  if f["full_beard"]:
    pen.polygon(_jaw_region(face, face.nose_y + 1, face.eye_y + 12), beard_rgb)
  if f["Goatee"]:
    x = face.fx
    top = face.mouth_y + face.lip + 1.5
    pen.polygon([(x - face.mouth_w * 0.7, top), (x + face.mouth_w * 0.7, top),
                 (x + face.w * 0.38, face.h * 0.9), (x, face.h + 2.5),
                 (x - face.w * 0.38, face.h * 0.9)], beard_rgb)


def _almond(face, side):
  """Upper and lower lid curves of one eye as functions of x, and its centre."""
  cx = face.fx + side * face.eye_dx + 0.6 * face.fx * side
  cy = face.eye_y
  squint = 0.85 if face.f["Smiling"] else 1.0
  half_w, opening = face.eye_w, face.eye_open * squint

  def upper(x):
    return cy - opening * (1 - np.clip((x - cx) / half_w, -1, 1) ** 2)

  def lower(x):
    return cy + 0.65 * opening * (1 - np.clip((x - cx) / half_w, -1, 1) ** 2)

  return cx, cy, half_w, upper, lower


def _draw_eyes(pen, face):
  f = face.f
  iris_rgb = IRIS_RGB[f["iris_color"]]
  for side in (-1, 1):
    cx, cy, half_w, upper, lower = _almond(face, side)
    xs = np.linspace(cx - half_w, cx + half_w, 17)
    almond = np.concatenate([np.stack([xs, upper(xs)], 1), np.stack([xs, lower(xs)], 1)[::-1]])
    if f["Heavy_Makeup"]:
      shadow = np.concatenate([np.stack([xs, upper(xs) - 4.5], 1),
                               np.stack([xs, upper(xs)], 1)[::-1]])
      pen.polygon(shadow, EYESHADOW_RGB[f["eyeshadow_color"]] + (130,))
    if f["Bags_Under_Eyes"]:
      # A puffy, shaded crescent under the eye.
      inner = xs[2:-2]
      bag = np.concatenate([np.stack([inner, lower(inner) + 0.5], 1),
                            np.stack([inner[::-1], lower(inner[::-1]) + 4.5], 1)])
      pen.polygon(bag, (110, 60, 70, 60))
      pen.line(np.stack([inner, lower(inner) + 4.5], 1), (90, 50, 50, 100), 1.1)
    pen.polygon(almond, (244, 242, 236))
    # Iris and pupil are circles clipped to the almond, so narrow eyes stay inside their lids.
    gx, gy = cx + f["gaze_x"], cy + f["gaze_y"]
    for radius, color in ((3.3, iris_rgb), (1.5, (12, 10, 10))):
      t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
      px = np.clip(gx + radius * np.cos(t), cx - half_w, cx + half_w)
      py = np.clip(gy + radius * np.sin(t), upper(px), lower(px))
      pen.polygon(np.stack([px, py], 1), color)
    lid_width = 1.6 if f["Male"] else 2.2
    pen.line(np.stack([xs, upper(xs)], 1), (40, 25, 25), lid_width)
    if not f["Male"]:
      # Lashes at the outer corner.
      x0 = cx + side * half_w
      pen.line([(x0, cy), (x0 + side * 2.5, cy - 2)], (40, 25, 25), 1.2)


def _draw_brows(pen, face):
  f = face.f
  thickness = (3.4 + 1.2 * f["brow_thickness_amount"]) if f["Bushy_Eyebrows"] else (
      1.4 + 1.1 * f["brow_thickness_amount"])
  arch = (3.2 + 1.6 * f["brow_arch_amount"]) if f["Arched_Eyebrows"] else (
      0.4 + 1.4 * f["brow_arch_amount"])
  for side in (-1, 1):
    cx, cy, half_w, _, _ = _almond(face, side)
    t = np.linspace(0, 1, 9)
    xs = cx + side * (-half_w - 1 + t * (2 * half_w + 4))
    # The peak sits two thirds of the way out, which is what reads as an arch.
    ys = cy - 8.5 - f["brow_raise"] - arch * np.sin(np.pi * np.clip(t / 0.66, 0, 1) * 0.5) * (
        1 - np.clip((t - 0.66) / 0.34, 0, 1) * 0.7)
    pen.line(np.stack([xs, ys], 1), face.brow_rgb, thickness)


def _draw_nose(pen, face):
  f = face.f
  x, tip = face.fx * 1.5, face.nose_y
  dark = _scale(face.skin, 0.72)
  nw = face.nose_w
  side = 1 if math.cos(f["light_angle"]) < 0 else -1  # the bridge shadow is away from the light
  pen.line([(x + side * 2.5, face.eye_y + 4), (x + side * 3.0, tip - 6)], dark + (110,), 1.2)
  if f["Pointy_Nose"]:
    # A sharp tip: a shaded triangle under the bridge, outlined.
    pen.polygon([(x + side * 3.0, tip - 9), (x + 0.6 * nw, tip - 1.5), (x, tip + 2),
                 (x - 0.6 * nw, tip - 1.5)], dark + (70,))
    pen.line([(x + side * 3.0, tip - 6), (x, tip + 2), (x - 0.6 * nw, tip - 1.5)], dark, 1.3)
    pen.line([(x, tip + 2), (x + 0.6 * nw, tip - 1.5)], dark, 1.3)
  else:
    # A round tip: a ball of shade and the curve of the nostril wings.
    pen.polygon(_ellipse(x, tip - 3, nw * 0.5, 3.5, n=20), dark + (45,))
    pen.line(_ellipse(x, tip - 2.5, nw * 0.75, 4, 0.1 * math.pi, 0.9 * math.pi, n=14), dark, 1.3)
  for s in (-1, 1):
    pen.polygon(_ellipse(x + s * nw * 0.38, tip - 0.5, 1.6, 1.0, n=10), _scale(face.skin, 0.45))


def _draw_cheeks(pen, face):
  f = face.f
  cheek_y = face.eye_y + 15
  for side in (-1, 1):
    cx = face.fx + side * (face.eye_dx + 4)
    if f["Rosy_Cheeks"]:
      pen.polygon(_ellipse(cx, cheek_y, 8, 5, n=20), (235, 80, 95, 85))
    elif f["Heavy_Makeup"]:
      pen.polygon(_ellipse(cx, cheek_y, 7, 4, n=20), (220, 110, 110, 35))
    if f["High_Cheekbones"]:
      # A highlight over the cheekbone and a shadow line beneath it.
      pen.polygon(_ellipse(cx + side * 2, cheek_y - 3, 7, 3, n=16), (255, 250, 240, 90))
      t0, t1 = (0.2, 0.6) if side > 0 else (0.4, 0.8)  # the outer lower quarter of an ellipse
      pen.line(_ellipse(cx + side * 3, cheek_y + 3, 8, 5, t0 * math.pi, t1 * math.pi, n=8),
               (90, 45, 40, 100), 1.5)
    if f["Smiling"]:
      # Smile lines from the nose wing towards the mouth corner.
      nx = face.fx * 1.5 + side * (face.nose_w * 0.7 + 1)
      mx = face.fx + side * (face.mouth_w + 2)
      pen.line([(nx, face.nose_y - 1), (nx + side * 3, face.nose_y + 5),
                (mx, face.mouth_curve(face.mouth_w) + 1)], (90, 45, 40, 80), 1.0)


def _draw_mouth(pen, face):
  f = face.f
  x0 = face.fx
  half = face.mouth_w
  xs = np.linspace(-half, half, 21)
  line = face.mouth_curve(xs)
  shape = np.sqrt(np.clip(1 - (xs / half) ** 2, 0, 1))
  if f["Wearing_Lipstick"]:
    lip_rgb = LIPSTICK_RGB[f["lipstick_color"]]
  else:
    lip_rgb = _mix(face.skin, (160, 60, 70), 0.45)
  opening = face.mouth_open * shape
  upper_inner = line - 0.3 * opening
  lower_inner = line + 0.7 * opening
  # Cupid's bow: the upper lip dips in the middle.
  upper_outer = upper_inner - face.lip * 0.85 * shape * (1 - 0.25 * np.exp(-(xs / 3.0) ** 2))
  lower_outer = lower_inner + face.lip * shape
  px = xs + x0
  if f["Mustache"]:
    top = upper_outer - 1.0
    wide = xs * 1.08 + x0  # a little wider than the mouth
    pen.polygon(np.concatenate([np.stack([wide, top], 1),
                                np.stack([wide[::-1], top[::-1] - 5.0 * shape[::-1] - 1.5], 1)]),
                face.brow_rgb)
  pen.polygon(np.concatenate([np.stack([px, upper_outer], 1),
                              np.stack([px[::-1], lower_outer[::-1]], 1)]), lip_rgb)
  if face.mouth_open > 0:
    pen.polygon(np.concatenate([np.stack([px, upper_inner], 1),
                                np.stack([px[::-1], lower_inner[::-1]], 1)]), (70, 22, 30))
    if f["Smiling"]:
      teeth = upper_inner + 0.45 * (lower_inner - upper_inner)
      pen.polygon(np.concatenate([np.stack([px[3:-3], upper_inner[3:-3]], 1),
                                  np.stack([px[3:-3][::-1], teeth[3:-3][::-1]], 1)]),
                  (240, 238, 228))
  else:
    pen.line(np.stack([px, line], 1), _scale(lip_rgb, 0.6), 1.1)


def _draw_accessories(pen, face):
  f = face.f
  if f["Wearing_Earrings"]:
    for side in (-1, 1):
      center = (side * (face.w + 0.5), 14)
      if f["earring_style"] == 0:
        pen.circle(center, 2.3, fill=(236, 200, 90))
      else:
        pen.circle((center[0], center[1] + 3), 3.6, outline=(236, 200, 90), width=1.1)
  if f["Eyeglasses"]:
    _draw_glasses(pen, face)


def _draw_glasses(pen, face):
  f = face.f
  style = f["glasses_style"]
  color = f["glasses_rgb"]
  half_w = 10.0 + 2.0 * f["lens_size"]
  half_h = 7.0 + 2.0 * f["lens_size"]
  t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
  if style == 1:  # rectangular lenses: a superellipse
    c, s = np.cos(t), np.sin(t)
    ux, uy = np.sign(c) * np.abs(c) ** 0.5, np.sign(s) * np.abs(s) ** 0.5
  else:
    ux, uy = np.cos(t), np.sin(t)
  inner_edges = []
  for side in (-1, 1):
    cx, cy, _, _, _ = _almond(face, side)
    lens = np.stack([cx + half_w * ux, cy + 1 + half_h * uy], 1)
    if style == 2:
      pen.polygon(lens, (20, 22, 30, 215))
    closed = np.concatenate([lens, lens[:1]])
    pen.line(closed, color, 1.6)
    inner_edges.append((cx - side * half_w, cy - 1))
    # The temple arm towards the ear.
    pen.line([(cx + side * half_w, cy - 1), (side * (face.w + 1), cy)], color, 1.4)
  pen.line([inner_edges[0], ((inner_edges[0][0] + inner_edges[1][0]) / 2, inner_edges[0][1] - 2),
            inner_edges[1]], color, 1.4)


def _apply_lighting(image, f):
  """A brightness gradient across the whole picture, brighter towards the light."""
  strength = 0.28 * f["light_strength"]
  if strength < 0.01:
    return image
  width, height = IMAGE_SIZE
  angle = f["light_angle"]
  xs = (np.arange(width, dtype=np.float32) - width / 2) / width
  ys = (np.arange(height, dtype=np.float32) - height / 2) / height
  gain = 1.0 + strength * (math.cos(angle) * xs[None, :] + math.sin(angle) * ys[:, None])
  pixels = np.asarray(image, np.float32) * gain[..., None]
  return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
