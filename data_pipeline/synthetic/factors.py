"""The random factors of one synthetic face, and the CelebA attributes that follow from them.

`sample_factors(rng)` draws one face's factors and `attribute_vector(factors)` gives its 40
CelebA attributes (+1/-1); render.py draws them. Factors are the attributes the renderer
controls (booleans under their CelebA names, plus `hair_color` and `full_beard`), continuous
factors in lower case that vary a face within its category, and palette indices. The renderer
decides every visible category from the boolean attributes alone, so flipping one changes
exactly that feature and the written attributes are the drawing's ground truth (`Attractive`
is a seeded, subjective draw, as in CelebA). Attributes depend on each other as in CelebA
(beards only on men, ...), so latent correlations have something real to find.
"""

import math

import numpy as np

from data_pipeline.attributes import ATTRIBUTE_NAMES

HAIR_COLORS = ("black", "brown", "blond", "gray", "red")
HAIR_RGB = {"black": (32, 26, 24), "brown": (104, 68, 42), "blond": (214, 184, 122),
             "gray": (176, 174, 170), "red": (158, 72, 36)}
_HAIR_ATTRIBUTE = {"black": "Black_Hair", "brown": "Brown_Hair", "blond": "Blond_Hair",
                   "gray": "Gray_Hair"}
# Palettes: the factors pick an index or a point along them, the renderer looks the colour up.
# From light to dark; a face's tone is a point along this ramp. Pale skin lies beyond its light end.
SKIN_RAMP = np.array([(246, 212, 186), (232, 190, 158), (214, 164, 128), (184, 130, 96),
                       (146, 98, 68), (104, 68, 48)], np.float64)
PALE_SKIN = (252, 236, 228)
IRIS_RGB = ((92, 60, 36), (50, 36, 30), (70, 110, 160), (80, 120, 80), (130, 100, 60))
LIPSTICK_RGB = ((196, 32, 52), (214, 70, 100), (150, 32, 66), (222, 96, 106), (172, 42, 42))
EYESHADOW_RGB = ((120, 80, 140), (90, 110, 160), (150, 100, 80), (80, 70, 70), (170, 120, 150))

# Probabilities roughly follow CelebA's attribute frequencies, except that rare but clearly
# visible attributes (glasses, hats, baldness) are drawn more often so that small datasets still
# hold enough of them to learn from.
_P_MALE = 0.42
_P_YOUNG = 0.75


def _uniform(rng, low, high):
  return float(rng.uniform(low, high))


def _coin(rng, p):
  return bool(rng.random() < p)


def _rgb(rng, low=0, high=255):
  return tuple(int(v) for v in rng.integers(low, high + 1, size=3))


def _muted_rgb(rng):
  """A random colour pulled part of the way towards its gray: photo backgrounds are rarely vivid."""
  rgb = rng.uniform(15, 240, size=3)
  gray = rgb.mean()
  rgb = gray + (rgb - gray) * rng.uniform(0.2, 0.85)
  return tuple(int(v) for v in rgb)


def _jitter(rng, scale):
  return tuple(float(v) for v in rng.normal(0.0, scale, size=3))


def sample_factors(rng):
  """Draws the factors of one face from `rng` (a numpy Generator); the same rng state gives the
  same factors. Returns a dict of plain Python values (JSON-serializable)."""
  # Each part draws in a fixed order and adds its keys in that order (FACTOR_NAMES' order).
  f = {}
  f["Male"] = _coin(rng, _P_MALE)
  f["Young"] = _coin(rng, _P_YOUNG)
  for draw_part in (_draw_head, _draw_hair, _draw_eyes, _draw_nose_and_mouth,
                    _draw_accessories, _draw_scene):
    draw_part(rng, f)
  return f


def _draw_head(rng, f):
  """Head shape, pose and skin."""
  young = f["Young"]
  f["Chubby"] = _coin(rng, 0.08 if young else 0.16)
  f["Oval_Face"] = _coin(rng, 0.3)
  f["Double_Chin"] = _coin(rng, 0.35 if f["Chubby"] else (0.03 if young else 0.12))
  f["head_width_amount"] = _uniform(rng, 0, 1)
  f["head_aspect_amount"] = _uniform(rng, 0, 1)
  f["jaw_amount"] = _uniform(rng, 0, 1)
  f["offset_x"] = _uniform(rng, -5, 5)
  f["offset_y"] = _uniform(rng, -5, 5)
  f["tilt"] = float(np.clip(rng.normal(0, 4), -10, 10))  # degrees
  f["yaw"] = _uniform(rng, -1, 1)  # turns the features sideways inside the head outline
  f["Pale_Skin"] = _coin(rng, 0.06)
  f["skin_tone"] = float(rng.beta(2.0, 3.0))
  f["skin_jitter"] = _jitter(rng, 5)


def _draw_hair(rng, f):
  """Hair, then facial hair (only drawn on men, as in almost all of CelebA)."""
  male, young = f["Male"], f["Young"]
  gray_p = 0.03 if young else 0.45
  f["hair_color"] = str(rng.choice(HAIR_COLORS, p=_hair_color_p(gray_p, male)))
  f["hair_jitter"] = _jitter(rng, 9)
  f["Wearing_Hat"] = _coin(rng, 0.08)
  f["Bald"] = male and _coin(rng, 0.05 if young else 0.18)
  f["Receding_Hairline"] = (not f["Bald"]) and _coin(rng, (0.1 if young else 0.3) if male
                                                     else 0.03)
  f["Bangs"] = (not f["Bald"]) and (not f["Receding_Hairline"]) and _coin(
      rng, 0.1 if male else 0.25)
  hair_style = rng.random()
  f["Straight_Hair"] = (not f["Bald"]) and hair_style < 0.32
  f["Wavy_Hair"] = (not f["Bald"]) and 0.32 <= hair_style < 0.66
  long_hair = _coin(rng, 0.12 if male else 0.8)
  f["hair_length"] = _uniform(rng, 0.45, 1.0) if long_hair else _uniform(rng, 0.0, 0.25)
  f["hair_volume"] = _uniform(rng, 3, 13)
  f["hair_wave_phase"] = _uniform(rng, 0, 2 * math.pi)
  f["hair_part"] = _uniform(rng, -0.5, 0.5)
  f["Sideburns"] = male and not f["Bald"] and _coin(rng, 0.15)
  f["Goatee"] = male and _coin(rng, 0.14)
  f["Mustache"] = male and _coin(rng, 0.45 if f["Goatee"] else 0.06)
  f["full_beard"] = male and _coin(rng, 0.07)
  f["5_o_Clock_Shadow"] = male and not f["full_beard"] and _coin(rng, 0.22)


def _draw_eyes(rng, f):
  """Eyes and brows."""
  male = f["Male"]
  f["Narrow_Eyes"] = _coin(rng, 0.12)
  f["Bags_Under_Eyes"] = _coin(rng, 0.12 if f["Young"] else 0.5)
  f["eye_spacing"] = _uniform(rng, 17, 21)
  f["eye_width"] = _uniform(rng, 6.5, 8.5)
  f["eye_open_amount"] = _uniform(rng, 0, 1)
  f["iris_color"] = int(rng.integers(len(IRIS_RGB)))
  f["gaze_x"] = _uniform(rng, -1.5, 1.5)
  f["gaze_y"] = _uniform(rng, -0.6, 0.6)
  f["Arched_Eyebrows"] = _coin(rng, 0.1 if male else 0.42)
  f["Bushy_Eyebrows"] = _coin(rng, 0.25 if male else 0.07)
  f["brow_thickness_amount"] = _uniform(rng, 0, 1)
  f["brow_arch_amount"] = _uniform(rng, 0, 1)
  f["brow_raise"] = _uniform(rng, -1.5, 2.5)


def _draw_nose_and_mouth(rng, f):
  """Nose, mouth and expression; smiles lift the cheeks, so High_Cheekbones follows Smiling as
  in CelebA."""
  f["Big_Nose"] = _coin(rng, 0.36 if f["Male"] else 0.14)
  f["Pointy_Nose"] = _coin(rng, 0.28)
  f["nose_length"] = _uniform(rng, 0, 1)
  f["nose_width_amount"] = _uniform(rng, 0, 1)
  smiling = f["Smiling"] = _coin(rng, 0.48)
  f["Mouth_Slightly_Open"] = _coin(rng, 0.62 if smiling else 0.33)
  f["High_Cheekbones"] = _coin(rng, 0.78 if smiling else 0.15)
  f["Big_Lips"] = _coin(rng, 0.24)
  f["smile_amount"] = _uniform(rng, 0, 1)
  f["mouth_open_amount"] = _uniform(rng, 0, 1)
  f["mouth_width"] = _uniform(rng, 0, 1)
  f["lip_amount"] = _uniform(rng, 0, 1)


def _draw_accessories(rng, f):
  """Make-up and accessories."""
  male = f["Male"]
  f["Heavy_Makeup"] = (not male) and _coin(rng, 0.6)
  f["Wearing_Lipstick"] = _coin(rng, 0.01 if male else (0.95 if f["Heavy_Makeup"] else 0.3))
  f["Rosy_Cheeks"] = _coin(rng, 0.03 if male else 0.12)
  f["lipstick_color"] = int(rng.integers(len(LIPSTICK_RGB)))
  f["eyeshadow_color"] = int(rng.integers(len(EYESHADOW_RGB)))
  f["Eyeglasses"] = _coin(rng, 0.12 if f["Young"] else 0.3)
  f["glasses_style"] = int(rng.choice(3, p=(0.45, 0.4, 0.15)))  # round, rectangular, sunglasses
  f["glasses_rgb"] = _rgb(rng, 0, 160)
  f["lens_size"] = _uniform(rng, 0, 1)
  f["hat_style"] = int(rng.integers(3))  # cap, beanie, brimmed hat
  f["hat_rgb"] = _rgb(rng, 20, 235)
  f["Wearing_Earrings"] = _coin(rng, 0.02 if male else 0.3)
  f["earring_style"] = int(rng.integers(2))  # stud, hoop
  f["Wearing_Necklace"] = _coin(rng, 0.01 if male else 0.2)
  f["Wearing_Necktie"] = _coin(rng, 0.16 if male else 0.01)
  f["clothes_rgb"] = _rgb(rng, 15, 235)
  f["tie_rgb"] = _rgb(rng, 20, 220)


def _draw_scene(rng, f):
  """Age, image quality, lighting, background, and Attractive (not drawn: a subjective label,
  as in CelebA)."""
  f["wrinkle_amount"] = _uniform(rng, 0, 1)
  f["Blurry"] = _coin(rng, 0.05)
  f["blur_radius"] = _uniform(rng, 0.9, 1.7)
  f["light_angle"] = _uniform(rng, 0, 2 * math.pi)
  f["light_strength"] = _uniform(rng, 0, 1)
  f["background_rgb_a"] = _muted_rgb(rng)
  f["background_rgb_b"] = _muted_rgb(rng)
  f["background_angle"] = _uniform(rng, 0, 2 * math.pi)
  f["background_seed"] = int(rng.integers(2**31))
  attractive_p = (0.62 if f["Young"] else 0.2) + (0.15 if f["Heavy_Makeup"] else 0.0)
  f["Attractive"] = _coin(rng, attractive_p)


def _hair_color_p(gray_p, male):
  blond = 0.1 if male else 0.26
  rest = 1.0 - gray_p
  weights = np.array([0.36, 0.34, blond, 0.0, 0.08])
  weights = weights / weights.sum() * rest
  weights[3] = gray_p
  return weights


FACTOR_NAMES = tuple(sample_factors(np.random.default_rng(0)))


def attribute_vector(factors):
  """The face's 40 CelebA attributes as +1/-1 ints, in ATTRIBUTE_NAMES order."""
  derived = dict(factors)
  for color, name in _HAIR_ATTRIBUTE.items():
    derived[name] = factors["hair_color"] == color
  derived["No_Beard"] = not (factors["Goatee"] or factors["Mustache"] or factors["full_beard"])
  return [1 if derived[name] else -1 for name in ATTRIBUTE_NAMES]
