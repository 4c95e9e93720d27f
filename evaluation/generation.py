"""Generation: decode the samplers' z-points, sharpen, draw grids, and measure every setting.

The work comes in groups: one group is one grid PNG (e.g. `uniform_r1.5.png`) and the z-points
decoded for it; each of its settings (e.g. one per attribute scale) gets its own numbers in
generation.json: the radius of its z-points, the fraction inside the real data's Gaussian
cloud, face figures by an independent judge (MTCNN, evaluation.face_judge) against real test
images, and the Frechet distance in the model's own encoder space (not an independent judge).
generation.json also gets the judge's calibration, every face figure in one table, and
sharpness and grid-artefact measures per sharpening factor. The model enters only as
`decode_fn` and `encode_fn`, so this module is testable with any small Keras model.
"""

import dataclasses
import os
import typing

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data_pipeline import make_dataset
from data_pipeline import provenance
from data_pipeline import reader
from data_pipeline.manifest import MANIFEST
from data_pipeline.manifest import read_manifest
from evaluation import encoding
from evaluation import face_figures
from evaluation import face_judge as face_judge_lib
from evaluation import geometry
from evaluation import image_ops
from evaluation import image_quality
from evaluation import samplers
from evaluation import zpoints
from evaluation.errors import EvaluationError
from evaluation.errors import FlagValueError
from modeling import flag_choices
from modeling import run_dir

SAMPLERS = flag_choices.SAMPLERS
FITTED = flag_choices.FITTED_SAMPLERS
NEEDS_TEST_IMAGES = flag_choices.FACE_SAMPLERS
# Fixed per-sampler streams: seeding each sampler with (seed, index) keeps its points the same
# whichever other samplers run in the same call.
_STREAMS = {name: index for index, name in enumerate(SAMPLERS)}
MEAN_FACE_IMAGES = 5000  # Training images averaged into the calibration's mean face.
GRID_COLUMNS = 7  # The study's 28 faces are 4 rows of 7.

DEFINITIONS = {
    "radius": "Euclidean norm |z| of the latent points of the setting (all points used for "
              "its statistics, not only the ones shown in the grid).",
    "inside_data_cloud": "Fraction of those points whose squared Mahalanobis distance to a "
                         "Gaussian fitted to the real z-points (mean and full covariance) is "
                         "at most the chi-square quantile `quantile` with z_dim degrees of "
                         "freedom (evaluation.geometry.GaussianCloud). For points drawn from "
                         "that Gaussian the expected fraction is `quantile`.",
    "frechet_distance_encoder_space": "Per sharpening factor: the Frechet distance "
                                      "|mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) "
                                      "between Gaussians fitted to the model's OWN encoder "
                                      "outputs (z, the mean for a VAE) of real images and of "
                                      "the generated images (decoded, rounded to uint8, "
                                      "sharpened). Lower means the generated images encode "
                                      "more like real ones. It is measured in the model's own "
                                      "encoder space, hence NOT independent of the model (a "
                                      "model is judged by its own encoder; face_rate is the "
                                      "independent measure). This is NOT the FID (which uses "
                                      "Inception-v3 features): values are comparable only "
                                      "between settings of the same model and real set, and "
                                      "are biased upwards when few images are used.",
    "face_rate": "Fraction in [0, 1] of the setting's judged images in which the independent "
                 "face judge (MTCNN) finds a face; the same as face.face_rate. null when the "
                 "judge is off (--noface_judge).",
    "face": "The face figures (evaluation.face_figures: num_images, face_rate, detection, "
            "face_score, fd_face, landmark_error, each with its bootstrap ci95 over the "
            "z-samples) of the setting's first min(num_points, "
            "face_judge.max_images_per_setting) decoded images (rounded to uint8, not "
            "sharpened), against the even rows of the real test images. Read them against "
            "face_judge.calibration; compare fd_face between sets of equal num_images. Without "
            "real test images only face_rate and detection. null when the judge is off.",
    "face_judge": "The judge (MTCNN, evaluation.face_judge) and its calibration "
                  "(evaluation.face_figures.calibration): the face figures of the odd rows of "
                  "the real test images as they are, blurred (sigma 1, 2, 4 px), of the "
                  "training split's mean face with and without pixel noise, and of uniform "
                  "noise (seeded by the run's seed), each as many images as the odd rows "
                  "(at most max_images_per_setting). "
                  "Without real test images: noise only. null when the judge is off.",
    "faces": "Every face figure of the run in one table: the calibration sets, normal, "
             "gaussian, gmm (their one setting) and uniform {r: figures}, for the samplers "
             "that ran. null when the judge is off.",
    "sharpening": "Per sharpening factor (--sharpen, keys as strings): the mean over the "
                  "normal sampler's decoded images (its num_points), sharpened with PIL "
                  "ImageEnhance.Sharpness(factor), of laplacian_variance (variance of the "
                  "4-neighbour Laplacian of the grey image, 0..255 units: higher = sharper) "
                  "and checkerboard_energy (share of the non-constant spectral energy at period "
                  "2 pixels: grid artefacts of stride-2 transposed convolutions); "
                  "evaluation.image_quality. null when the normal sampler did not run.",
    "reference": "The same Frechet distance for the reconstructions of the real images "
                 "themselves: what a perfect generator of this model's reconstructions would "
                 "score.",
    "sharpen": "PIL ImageEnhance.Sharpness factor: 1 leaves an image unchanged, 0 blurs, "
               "larger values sharpen (unsharp masking).",
}


def apply_in_batches(fn, x, batch_size):
  """Concatenates np.asarray(fn(chunk)) over chunks of `batch_size` rows of x."""
  outputs = [np.asarray(fn(x[start:start + batch_size]))
             for start in range(0, len(x), int(batch_size))]
  if not outputs:
    raise EvaluationError("nothing to process: got 0 rows")
  return np.concatenate(outputs)


def decode_to_uint8(decode_fn, z, batch_size):
  """z [N, dim] -> uint8 images [N, S, S, 3] (decoder output in [0, 1], rounded)."""
  return apply_in_batches(lambda c: image_ops.to_uint8(decode_fn(np.asarray(c, np.float32))),
                          z, batch_size)


def encode_uint8(encode_fn, images, batch_size):
  """uint8 images [N, S, S, 3] -> z [N, dim] float64."""
  return apply_in_batches(encode_fn, images, batch_size).astype(np.float64)


@dataclasses.dataclass
class Group:
  """One grid and the z-points decoded for it.

  Attributes:
    sampler: one of SAMPLERS.
    name: file stem of the grid, e.g. "uniform_r1.5".
    title: the grid's title (what the tiles are).
    z: [M, dim] every z-point decoded for this group.
    grid_rows: indices into z of the tiles, row by row.
    columns: tiles per grid row.
    settings: setting label -> indices into z of the points it is measured on.
    params: the sampler's parameters for generation.json (shared by its settings).
    setting_params: setting label -> parameters of that setting alone (e.g. {"r": 1.5}).
  """

  sampler: str
  name: str
  title: str
  z: np.ndarray
  grid_rows: np.ndarray
  columns: int
  settings: dict
  params: dict
  setting_params: dict = dataclasses.field(default_factory=dict)


def _seed(seed, sampler):
  return (int(seed), _STREAMS[sampler])


def _drawn_group(sampler, name, title, z, num_grid, setting, params, setting_params=None):
  """A group of i.i.d. draws: the grid shows the first `num_grid`, statistics use all."""
  return Group(sampler, name, title, z, np.arange(min(num_grid, len(z))), GRID_COLUMNS,
               {setting: np.arange(len(z))}, params, {setting: setting_params or {}})


def normal_group(dim, num_grid, num_metric, seed):
  z = samplers.normal(max(num_grid, num_metric), dim, _seed(seed, "normal"))
  return _drawn_group("normal", "normal", "normal: z ~ N(0, I)", z, num_grid, "N(0,I)", {})


def uniform_groups(dim, num_grid, num_metric, r_limits, seed):
  """One group per r; the expected radius in the title is sqrt(dim * r^2 / 3)."""
  by_r = samplers.uniform(max(num_grid, num_metric), dim, r_limits, _seed(seed, "uniform"))
  groups = []
  for r, z in by_r.items():
    rms = np.sqrt(samplers.expected_uniform_radius_sq(dim, r))
    groups.append(_drawn_group("uniform", f"uniform_r{image_ops.factor_label(r)}",
                               f"uniform: each z component uniform in [-{r:g}, {r:g}] "
                               f"(rms |z| = {rms:.1f})", z, num_grid, f"r={r:g}", {}, {"r": r}))
  return groups


def fitted_group(fit, num_grid, num_metric, seed):
  """The group of a FittedSampler (kind "gaussian" or "gmm")."""
  z = fit.sample(max(num_grid, num_metric), _seed(seed, fit.kind))
  what = ("full-covariance Gaussian fitted to the z-points" if fit.kind == "gaussian" else
          f"Gaussian mixture ({fit.settings['components']} components, "
          f"{fit.settings['covariance']} covariances) fitted to the z-points")
  return _drawn_group(fit.kind, fit.kind, f"{fit.kind}: {what}", z, num_grid, "fitted",
                      {"fit": fit.settings, "notes": list(fit.notes)})


def interpolate_group(face_z, steps, num_grid_pairs, num_metric=None):
  """Straight lines between test faces 2i and 2i+1; the grid shows the first pairs.

  Args:
    face_z: z-points [N, dim] of test images.
    steps: points per line, both ends included.
    num_grid_pairs: lines shown in the grid.
    num_metric: about this many points measured (num_metric // steps lines, at least the
      grid's), like the other samplers' settings; None: every pair of face_z.
  """
  pairs = len(face_z) // 2
  if pairs < 1:
    raise EvaluationError("interpolation needs at least 2 test images; the test split has "
                          f"{len(face_z)}")
  if num_metric is not None:
    pairs = min(pairs, max(num_grid_pairs, num_metric // steps))
  lines = samplers.interpolate(face_z[0:2 * pairs:2], face_z[1:2 * pairs:2], steps)
  shown = min(num_grid_pairs, pairs)
  return Group("interpolate", "interpolate",
               f"interpolate: straight lines in z between pairs of test images "
               f"(rows), {steps} steps from one end to the other (columns)",
               lines.reshape(-1, lines.shape[-1]), np.arange(shown * steps), steps,
               {f"steps={steps}": np.arange(pairs * steps)},
               {"steps": int(steps), "num_pairs": int(pairs), "num_grid_pairs": int(shown)})


def attribute_group(face_z, vector, vector_info, name, scales, num_grid_faces):
  """Test faces shifted along an attribute vector; one setting per scale."""
  shifted = samplers.shift_along(face_z, vector, scales)
  num_faces, num_scales = shifted.shape[:2]
  shown = min(num_grid_faces, num_faces)
  scale_text = ", ".join(f"{s:g}" for s in scales)
  settings = {f"scale={s:g}": np.arange(j, num_faces * num_scales, num_scales)
              for j, s in enumerate(scales)}
  setting_params = {f"scale={s:g}": {"scale": float(s)} for s in scales}
  return Group("attribute", f"attribute_{name}",
               f"attribute {name}: test face z + scale * (mean z with {name} - mean z "
               f"without), scales {scale_text} (columns)",
               shifted.reshape(-1, shifted.shape[-1]), np.arange(shown * num_scales),
               num_scales, settings,
               {"attribute": name, "scales": [float(s) for s in scales],
                "num_faces": int(num_faces), "num_grid_faces": int(shown),
                "vector": vector_info}, setting_params)


@dataclasses.dataclass
class Reference:
  """What generated images are compared with.

  Attributes:
    cloud: a geometry.GaussianCloud of real z-points, or None (no inside fraction then).
    quantile: the chi-square quantile of the inside test.
    real_moments: (mean, covariance) of the encoder outputs of real images, or None.
  """

  cloud: object = None
  quantile: float = 0.99
  real_moments: tuple = None


def frechet_by_factor(encode_fn, images, factors, reference, batch_size):
  """{factor label: Frechet distance in encoder space} of uint8 images, sharpened per factor."""
  if reference.real_moments is None or len(images) < 2:
    return None
  out = {}
  for factor in factors:
    features = encode_uint8(encode_fn, image_ops.sharpen(images, factor), batch_size)
    out[image_ops.factor_label(factor)] = image_quality.frechet_from_moments(
        *reference.real_moments, *image_quality.gaussian_moments(features))
  return out


def reconstruction_reference(decode_fn, encode_fn, real_z, factors, reference, batch_size):
  """The reference block: the Frechet distance of the real images' own reconstructions."""
  if reference.real_moments is None or len(real_z) < 2:
    return None
  images = decode_to_uint8(decode_fn, np.asarray(real_z, np.float32), batch_size)
  return {"num_images": int(len(real_z)),
          "frechet_distance_encoder_space": frechet_by_factor(encode_fn, images, factors,
                                                              reference, batch_size)}


def encode_dataset(encode_fn, batches, total=None, description="encoding", keep_images=False):
  """Encodes what a data_pipeline.make_dataset(..., with_ids=True) iterator yields.

  Args:
    encode_fn: uint8 images -> z.
    batches: iterable of dicts with "image" and optionally "attributes" (NumPy or tensors).
    total: number of images expected, for the progress bar.
    description: progress bar text.
    keep_images: also return the images (uint8; the caller caps how many are read).

  Returns:
    {"z": [N, dim] float64, "attributes": [N, A] int32 or None, "images": uint8
    [N, S, S, 3] or None (without keep_images)}.
  """
  zs, attributes, images = [], [], []
  with tqdm(total=total, desc=description, unit="img", disable=None) as progress:
    for batch in batches:
      zs.append(np.asarray(encode_fn(batch["image"]), np.float64))
      if "attributes" in batch:
        attributes.append(np.asarray(batch["attributes"], np.int32))
      if keep_images:
        images.append(np.asarray(batch["image"], np.uint8))
      progress.update(len(zs[-1]))
  if not zs:
    raise EvaluationError("the data split yielded no images")
  return {"z": np.concatenate(zs),
          "attributes": np.concatenate(attributes) if attributes else None,
          "images": np.concatenate(images) if keep_images else None}


def evaluate_group(group, images, encode_fn, factors, reference, batch_size, header="",
                   judge=None, judge_images=500, face_reference=None, seed=0):
  """Measures a decoded group; returns (grid PIL image, {setting label: record}).

  Args:
    group: the Group.
    images: uint8 [M, S, S, 3], the decoding of every z of the group (`decode_to_uint8`).
    encode_fn: uint8 images -> z, for the Frechet distance.
    factors: sharpening factors of the grid panels and the Frechet distance.
    reference: the Reference.
    batch_size: images per encoder call.
    header: text appended to the grid's title.
    judge: a face_judge.FaceJudge, or None (face_rate and face null).
    judge_images: most images judged per setting (its first ones).
    face_reference: the judge's face_figures.Reference of real photos, or None.
    seed: seed of the face figures' bootstrap.
  """
  shown = images[group.grid_rows]
  panels = [(f"sharpness {image_ops.factor_label(f)}" + (" (unchanged)" if f == 1 else ""),
             image_ops.sharpen(shown, f)) for f in factors]
  grid = image_ops.panel_grid(panels, group.columns, f"{group.title}{header}")
  records = {}
  for label, rows in group.settings.items():
    z = group.z[rows]
    inside = None
    if reference.cloud is not None:
      inside = {"quantile": reference.quantile,
                "fraction": float(reference.cloud.inside_fraction(z, reference.quantile))}
    face = (face_figures.figures(judge.judge(images[rows[:judge_images]]), face_reference, seed)
            if judge is not None else None)
    records[label] = {
        "num_points": int(len(rows)),
        "radius": geometry.radius_stats(z),
        "inside_data_cloud": inside,
        "frechet_distance_encoder_space": frechet_by_factor(encode_fn, images[rows], factors,
                                                            reference, batch_size),
        "face_rate": face["face_rate"] if face is not None else None,
        "face": face,
    }
  return grid, records


def make_judge(enabled, flag="--noface_judge"):
  """The face judge, or None when `enabled` is false.

  Raises:
    EvaluationError: the judge's package (mtcnn) is missing; the message names `flag`, which
      turns the judge off.
  """
  if not enabled:
    return None
  try:
    return face_judge_lib.shared()
  except EvaluationError as error:
    raise EvaluationError(f"{error}; or pass {flag} to leave the face figures out") from None


def judge_block(judge, real_images, mean_face, max_images, seed):
  """generation.json's "face_judge" and the reference the settings are judged against.

  Args:
    judge: a FaceJudge.
    real_images: uint8 [T, S, S, 3] real test images, or None (noise only, no reference).
    mean_face: the training split's mean image [S, S, 3] (`mean_image`), or None.
    max_images: most images judged per set: the first 2 x max_images real images are used.
    seed: the run's seed (noise and bootstrap).

  Returns:
    (face_figures.Reference or None, {**judge.describe(), "max_images_per_setting",
    "calibration"}).
  """
  describe = {**judge.describe(), "max_images_per_setting": int(max_images)}
  if real_images is not None and len(real_images) >= 2:
    reference, calibration = face_figures.calibration(judge, real_images[:2 * max_images],
                                                      mean_face, seed)
    return reference, dict(describe, calibration=calibration)
  noise = np.random.default_rng(seed).integers(
      0, 256, (max_images, face_judge_lib.SIZE, face_judge_lib.SIZE, 3), dtype=np.uint8)
  calibration = {"reference_images": 0, "sets": {"noise": face_figures.figures(
      judge.judge(noise), None, seed)}, "note": "no real test images (--data_dir): only noise, "
      "and no face_score, fd_face or landmark_error"}
  return None, dict(describe, calibration=calibration)


def sharpening_block(images, factors):
  """{factor label: {"laplacian_variance", "checkerboard_energy"}} of uint8 images sharpened.

  Args:
    images: uint8 [N, S, S, 3] (S even), e.g. the normal sampler's metric images.
    factors: PIL sharpness factors (1 = unchanged).

  Returns:
    The means over the images per factor (evaluation.image_quality.summarize_by_factor),
    keyed by images.factor_label ("0", "3", "7") so that the JSON is stable.
  """
  summary = image_quality.summarize_by_factor(
      {float(f): image_ops.sharpen(images, f) for f in factors})
  return {image_ops.factor_label(f): values for f, values in summary.items()}


def faces_summary(groups, records, face_judge):
  """generation.json's "faces": the calibration's and the drawn samplers' figures, or None.

  Args:
    groups: the evaluated Groups.
    records: group name -> {setting label: record}.
    face_judge: the "face_judge" block, or None (judge off: the summary is None).

  Returns:
    {calibration set: figures, "normal", "gaussian", "gmm": figures, "uniform": {r label:
    figures}}, with only the samplers that ran.
  """
  if face_judge is None:
    return None
  summary = dict(face_judge["calibration"]["sets"])
  for group in groups:
    if group.sampler in flag_choices.DRAWN_SAMPLERS:
      (record,) = records[group.name].values()  # Drawn samplers have one setting.
      summary[group.sampler] = record["face"]
    elif group.sampler == "uniform":
      for label, record in records[group.name].items():
        r = group.setting_params[label]["r"]
        summary.setdefault("uniform", {})[image_ops.factor_label(r)] = record["face"]
  return summary


@dataclasses.dataclass(frozen=True)
class Options:
  """What tools.generate asks for (its flags, parsed).

  `generate` and `build_groups` take the samplers to run (`samplers`, with `attribute` and
  `attribute_index` for the attribute sampler); `run` first decides them from the inputs
  (`resolve`): samplers None means every one they allow, attribute "auto" the first of
  ATTRIBUTE_PREFERENCE that the data has. model_dir, checkpoint, z_points, data_dir, fit_split
  and max_fit_images are the inputs that `run` reads. face_judge False leaves the face rates
  out (null); face_judge_images caps the images judged per setting (and per calibration set).
  """

  samplers: tuple | None = None
  num_images: int = 28
  num_metric_images: int = 500
  r_limits: tuple = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 5.0, 8.0)
  gmm_components: int = 10
  sharpen: tuple = (1.0, 3.0, 7.0)
  seed: int = 0
  attribute: str = "Smiling"
  attribute_index: int = None
  attribute_scales: tuple = (-2.0, -1.0, 0.0, 1.0, 2.0)
  interpolation_steps: int = 8
  interpolation_pairs: int = 4
  attribute_faces: int = 6
  cloud_quantile: float = 0.99
  batch_size: int = 64
  face_judge: bool = True
  face_judge_images: int = 500
  model_dir: str | None = None
  checkpoint: str = "final"
  z_points: str | None = None
  data_dir: str | None = None
  fit_split: str = "train"
  max_fit_images: int = 20000


# The attribute sampler's choice when --attribute=auto: the study's smile where the data has
# it; else Male, which both real CelebA and every trimmed sample in use keep; else none.
ATTRIBUTE_PREFERENCE = ("Smiling", "Male")


def choose_attribute(requested, attribute_names):
  """The attribute the attribute sampler uses, or None with the reason it is left out.

  Args:
    requested: a name, or "auto" (the first of ATTRIBUTE_PREFERENCE that the data has).
    attribute_names: the data dir's attribute names (manifest `attribute_names`; may be empty).

  Returns:
    (name or None, note): note says what was chosen or why the sampler is left out.

  Raises:
    EvaluationError: an explicit name that the data does not have.
  """
  names = list(attribute_names or [])
  if requested != "auto":
    if requested not in names:
      raise EvaluationError(f"--attribute {requested!r} is not an attribute of the data; choose "
                            f"one of {', '.join(names) or '(none)'} or auto")
    return requested, f"attribute sampler: {requested}"
  for name in ATTRIBUTE_PREFERENCE:
    if name in names:
      fallback = "" if name == ATTRIBUTE_PREFERENCE[0] else (
          f" ({ATTRIBUTE_PREFERENCE[0]} is not among the data's attributes)")
      return name, f"attribute sampler: {name}{fallback}"
  return None, ("attribute sampler left out: the data has none of "
                f"{', '.join(ATTRIBUTE_PREFERENCE)} (its attributes: {', '.join(names) or 'none'})")


def resolve(options, attribute_names):
  """Decides the samplers and the attribute from the inputs; returns (Options, notes).

  Args:
    options: the Options as asked for; samplers None: every sampler the inputs allow (those
      left out are logged); attribute "auto" or a name.
    attribute_names: the data dir's attribute names (manifest `attribute_names`; may be empty).

  Returns:
    The Options with `samplers` (in SAMPLERS order), `attribute` and `attribute_index` filled
    in, and notes on the attribute chosen or left out.

  Raises:
    FlagValueError: samplers asked for that the inputs cannot serve, or an --attribute that
      the data does not have.
  """
  names = list(attribute_names or [])
  if options.samplers:
    wanted = tuple(s for s in SAMPLERS if s in options.samplers)
    if "attribute" in wanted and not names:
      raise FlagValueError(f"--samplers attribute needs a --data_dir with CelebA attributes; "
                           f"{options.data_dir} has none (its source had no "
                           "list_attr_celeba.txt)")
  else:
    skipped = {}
    if not (options.z_points or options.data_dir):
      skipped.update({s: "needs --z_points or --data_dir" for s in FITTED})
    if not options.data_dir:
      skipped.update({s: "needs --data_dir" for s in NEEDS_TEST_IMAGES})
    elif not names:
      skipped["attribute"] = f"{options.data_dir} has no CelebA attributes"
    for name, why in skipped.items():
      logging.info("sampler %s skipped: %s", name, why)
    wanted = tuple(s for s in SAMPLERS if s not in skipped)
  attribute, index, notes = options.attribute, None, []
  if "attribute" in wanted:
    try:
      attribute, note = choose_attribute(options.attribute, names)
    except EvaluationError as error:
      raise FlagValueError(f"{error} ({options.data_dir})") from None
    notes.append(note)
    if attribute is None and options.samplers:
      raise FlagValueError(f"--samplers attribute: {note}; pass --attribute with one of its "
                           "attributes or drop attribute from --samplers")
    if attribute is None:
      wanted = tuple(s for s in wanted if s != "attribute")
      logging.info("%s", note)
    else:
      index = names.index(attribute)
  return dataclasses.replace(options, samplers=wanted, attribute=attribute,
                             attribute_index=index), notes


@dataclasses.dataclass
class Inputs:
  """The real z-points a run of the samplers uses (None where the user gave no source).

  Attributes:
    fit_z: [N, dim] z-points of real images: the fitted samplers' data and the data cloud.
    attribute_z: [N', dim] z-points with `attribute_values` [N', 40] (+-1), for the vector.
    test_z: [T, dim] encodings of real test images: the faces that are interpolated and
      shifted, and the real set of the Frechet distance.
    test_images: uint8 [T, S, S, 3] those test images themselves: the face judge's real set.
    notes: remarks about where these came from.
  """

  fit_z: np.ndarray = None
  attribute_z: np.ndarray = None
  attribute_values: np.ndarray = None
  test_z: np.ndarray = None
  test_images: np.ndarray = None
  mean_face: np.ndarray = None
  notes: list = dataclasses.field(default_factory=list)


def _encode_split(encode_fn, data_dir, split, max_images, batch_size, with_attributes,
                  keep_images=False):
  split_info = read_manifest(data_dir)["splits"].get(split) or {}
  total = min(int(split_info.get("num_examples", 0)) or max_images, max_images)
  dataset = make_dataset(data_dir, split, batch_size, shuffle=False, with_ids=True,
                         with_attributes=with_attributes, max_images=max_images)
  with reader.reading(data_dir, splits=[split]):  # A damaged record is named, not a trace.
    return encode_dataset(encode_fn, dataset.as_numpy_iterator(), total,
                          f"encoding {split} images", keep_images=keep_images)


def mean_image(data_dir, split, batch_size, max_images=MEAN_FACE_IMAGES):
  """float64 [S, S, 3]: the mean of the split's first max_images images (the mean face)."""
  total, count = None, 0
  dataset = make_dataset(data_dir, split, batch_size, shuffle=False, max_images=max_images)
  with reader.reading(data_dir, splits=[split]):
    for batch in dataset.as_numpy_iterator():
      images = np.asarray(batch["image"] if isinstance(batch, dict) else batch, np.float64)
      total = images.sum(axis=0) + (0.0 if total is None else total)
      count += len(images)
  if not count:
    raise EvaluationError(f"the {split} split of {data_dir} yielded no images")
  return total / count


def collect_inputs(options, encode_fn, dim, *, z_points=None, data_dir=None, fit_split="train",
                   max_fit_images=20000):
  """Gathers the real z-points that `generate` compares with and fits to.

  Args:
    options: the Options (samplers, seed, num_metric_images, batch_size).
    encode_fn: uint8 images -> z of the model.
    dim: the model's z_dim.
    z_points: path of a z-points .npy (tools.encode), or None.
    data_dir: a prepared data dir, or None.
    fit_split: the split encoded for fitting when no z_points are given.
    max_fit_images: most real z-points used for fitting.

  Returns:
    (Inputs, {input file path: sha256}, a JSON-able description of the sources).
  """
  inputs, files, info = Inputs(), {}, {}
  want_attribute = "attribute" in options.samplers
  if z_points:
    z = zpoints.load_z_points(z_points)
    if z.shape[1] != dim:
      raise EvaluationError(f"--z_points {z_points} has {z.shape[1]} dimensions but the model's "
                            f"z_dim is {dim}; encode the data with this model (tools.encode)")
    files[z_points] = provenance.sha256_file(z_points)
    if len(z) > max_fit_images:
      rng = np.random.default_rng((int(options.seed), len(SAMPLERS)))
      rows = np.sort(rng.choice(len(z), size=max_fit_images, replace=False))
      inputs.notes.append(f"fits use a seeded random subset of {max_fit_images} of the "
                          f"{len(z)} z-points (--max_fit_images)")
      z = z[rows]
    inputs.fit_z = np.asarray(z, np.float64)
    info["fit"] = {"source": "z_points", "path": z_points, "num_points": int(len(z))}
  if data_dir:
    files[os.path.join(data_dir, MANIFEST)] = provenance.sha256_file(
        os.path.join(data_dir, MANIFEST))
    if inputs.fit_z is None or want_attribute:
      encoded = _encode_split(encode_fn, data_dir, fit_split, max_fit_images,
                              options.batch_size, with_attributes=want_attribute)
      if inputs.fit_z is None:
        inputs.fit_z = encoded["z"]
        info["fit"] = {"source": "data_dir", "path": data_dir, "split": fit_split,
                       "num_points": int(len(encoded["z"]))}
      if want_attribute:
        inputs.attribute_z, inputs.attribute_values = encoded["z"], encoded["attributes"]
        info["attribute"] = {"source": "data_dir", "path": data_dir, "split": fit_split,
                             "num_points": int(len(encoded["z"]))}
    # The real test images stay (uint8, at most num_metric_images): the face judge's
    # calibration needs the images themselves, not their encodings.
    test = _encode_split(encode_fn, data_dir, "test", options.num_metric_images,
                         options.batch_size, with_attributes=False, keep_images=True)
    inputs.test_z, inputs.test_images = test["z"], test["images"]
    if options.face_judge:
      inputs.mean_face = mean_image(data_dir, fit_split, options.batch_size)
    info["real"] = {"source": "data_dir", "path": data_dir, "split": "test",
                    "num_images": int(len(inputs.test_z))}
  return inputs, files, info


def build_groups(options, dim, inputs):
  """The groups of every requested sampler, in the order of SAMPLERS; plus fit notes."""
  notes, groups = [], []
  n, m, seed = options.num_images, options.num_metric_images, options.seed
  for sampler in SAMPLERS:
    if sampler not in options.samplers:
      continue
    if sampler in FITTED or sampler in NEEDS_TEST_IMAGES:
      needed = inputs.fit_z if sampler in FITTED else inputs.test_z
      if needed is None:
        raise EvaluationError(f"sampler {sampler} needs real z-points, and none were given")
    if sampler == "normal":
      groups.append(normal_group(dim, n, m, seed))
    elif sampler == "uniform":
      groups.extend(uniform_groups(dim, n, m, options.r_limits, seed))
    elif sampler in FITTED:
      fit = (samplers.fit_gaussian(inputs.fit_z) if sampler == "gaussian" else
             samplers.fit_gmm(inputs.fit_z, options.gmm_components, seed=seed))
      notes.extend(fit.notes)
      groups.append(fitted_group(fit, n, m, seed))
    elif sampler == "interpolate":
      groups.append(interpolate_group(inputs.test_z, options.interpolation_steps,
                                      options.interpolation_pairs, m))
    elif sampler == "attribute":
      if inputs.attribute_z is None or options.attribute_index is None:
        raise EvaluationError("sampler attribute needs z-points with CelebA attributes")
      vector, info = samplers.attribute_vector(inputs.attribute_z, inputs.attribute_values,
                                               options.attribute_index, options.attribute)
      groups.append(attribute_group(inputs.test_z, vector, info, options.attribute,
                                    options.attribute_scales, options.attribute_faces))
  return groups, notes


def make_reference(options, inputs):
  """The data cloud (fit z-points) and the real set of the Frechet distance; plus notes."""
  notes = []
  cloud = None
  if inputs.fit_z is not None:
    cloud = geometry.GaussianCloud.fit(inputs.fit_z)
  else:
    notes.append("no real z-points (--z_points or --data_dir): inside_data_cloud is null")
  real = inputs.test_z
  if real is None and inputs.fit_z is not None:
    real = inputs.fit_z
    notes.append("no test images (--data_dir): the Frechet distance compares with the "
                 "z-points instead, which are the encoder outputs of their images")
  if real is None:
    notes.append("no real images or z-points: frechet_distance_encoder_space is null")
  moments = image_quality.gaussian_moments(real) if real is not None and len(real) >= 2 else None
  return Reference(cloud, options.cloud_quantile, moments), real, notes


class Generated(typing.NamedTuple):
  """What `generate` returns; `assemble` turns it into generation.json.

  Attributes:
    groups: the evaluated Groups, in SAMPLERS order.
    records: group name -> {setting label: record}.
    grids: group name -> grid (PIL image).
    notes: remarks (regularisation, fallbacks, what is null and why).
    reference: the reconstructions' Frechet block (`reconstruction_reference`), or None.
    face_judge: the judge's description and calibration (`judge_block`), or None (judge off).
    sharpening: `sharpening_block` of the normal sampler's images, or None (it did not run).
  """

  groups: list
  records: dict
  grids: dict
  notes: list
  reference: dict | None
  face_judge: dict | None
  sharpening: dict | None


def generate(options, decode_fn, encode_fn, dim, inputs, header="", judge=None):
  """Runs every requested sampler and measures every setting.

  Args:
    options: the Options (samplers resolved).
    decode_fn: z float32 [B, dim] -> float images [B, S, S, 3] in [0, 1].
    encode_fn: uint8 images [B, S, S, 3] -> z [B, dim].
    dim: z_dim.
    inputs: the Inputs (real z-points and test images; any may be None).
    header: text appended to every grid's title.
    judge: a FaceJudge to use; None: one is made when options.face_judge (`make_judge`).
      Ignored when options.face_judge is false.

  Returns:
    A Generated. The caller writes the grids and assembles generation.json (`assemble`).

  Raises:
    EvaluationError: a sampler without the real z-points it needs, or options.face_judge
      without OpenCV.
  """
  if judge is None:
    judge = make_judge(options.face_judge)  # Before any decoding: a missing OpenCV fails fast.
  elif not options.face_judge:
    judge = None
  reference, real, notes = make_reference(options, inputs)
  notes = list(inputs.notes) + notes
  groups, fit_notes = build_groups(options, dim, inputs)
  notes.extend(fit_notes)
  if judge is None:
    notes.append("face judge off (--noface_judge): face_rate, face, face_judge and faces are "
                 "null")
  if "normal" not in options.samplers:
    notes.append("sharpening is null: it measures the normal sampler's images")
  for note in notes:
    logging.info("note: %s", note)
  face_reference, judged = None, None
  if judge is not None:
    logging.info("calibrating the face judge")
    face_reference, judged = judge_block(judge, inputs.test_images, inputs.mean_face,
                                         options.face_judge_images, options.seed)
  records, grids, sharpening = {}, {}, None
  for group in groups:
    logging.info("sampler %s: decoding %d z-points for %s.png", group.sampler, len(group.z),
                 group.name)
    # Decoded once: the grid, the Frechet distance, the judge and the sharpening measures
    # all read these images.
    images = decode_to_uint8(decode_fn, group.z, options.batch_size)
    grids[group.name], records[group.name] = evaluate_group(
        group, images, encode_fn, options.sharpen, reference, options.batch_size, header,
        judge, options.face_judge_images, face_reference, options.seed)
    if group.sampler == "normal":
      (rows,) = group.settings.values()
      sharpening = sharpening_block(images[rows], options.sharpen)
  reference_block = None
  if real is not None:
    # Capped like the generated sets, so that both sides of the comparison have similar sizes.
    reference_block = reconstruction_reference(decode_fn, encode_fn,
                                               real[:options.num_metric_images],
                                               options.sharpen, reference, options.batch_size)
  return Generated(groups, records, grids, notes, reference_block, judged, sharpening)


def assemble(groups, records, grids, notes, *, model, inputs_info, flags, seed, provenance,
             reference_info, face_judge=None, sharpening=None):
  """The generation.json dict.

  Args:
    groups: the evaluated Groups, in order.
    records: group name -> {setting label: record} (from evaluate_group).
    grids: group name -> grid file name.
    notes: remarks (regularisation, skipped samplers, fallbacks), also logged.
    model: {"model_dir", "kind", "z_dim", "image_size"}.
    inputs_info: what the reference sets are (z-points source, real images).
    flags: the resolved flag values.
    seed: the seed.
    provenance: data_pipeline.provenance.describe_run(...).
    reference_info: the reference block (reconstructions' Frechet distance), or None.
    face_judge: the judge block (`judge_block`), or None (judge off).
    sharpening: the sharpening block (`sharpening_block`), or None.
  """
  by_sampler = {}
  for group in groups:
    entry = by_sampler.setdefault(group.sampler, {"params": {}, "settings": {}})
    entry["params"].update(group.params)
    for label, record in records[group.name].items():
      entry["settings"][label] = dict(record, grid=grids[group.name],
                                      **group.setting_params.get(label, {}))
  return {
      "model": model,
      "seed": int(seed),
      "samplers": by_sampler,
      "reference": reference_info,
      "face_judge": face_judge,
      "faces": faces_summary(groups, records, face_judge),
      "sharpening": sharpening,
      "data": inputs_info,
      "notes": list(notes),
      "definitions": DEFINITIONS,
      "flags": flags,
      "provenance": provenance,
  }


def run(options, flags=None):
  """tools.generate: every sampler the options ask for, decoded by options.model_dir's model.

  Args:
    options: the Options as asked for (see `resolve`), with model_dir and the real inputs.
    flags: the resolved flag values, recorded in the report (with the samplers run and the
      attribute used added).

  Returns:
    (report, files): generation.json's dict (`assemble`, with the model files' and the inputs'
    sha256) and {"<group>.png": PNG bytes} of every grid.

  Raises:
    FlagValueError: samplers or an attribute that the inputs cannot serve.
    DataError, ModelError, EvaluationError: unusable data, run dir or z-points, or a model of
      another image size than the data.
  """
  keras.utils.set_random_seed(options.seed)
  tf.config.experimental.enable_op_determinism()
  manifest = read_manifest(options.data_dir) if options.data_dir else None
  options, attribute_notes = resolve(options, (manifest or {}).get("attribute_names"))
  run = run_dir.load_run(options.model_dir, options.checkpoint)
  config = run.config
  if manifest is not None:
    encoding.check_image_size(run, options.data_dir, manifest)
  encode, decode = encoding.traced(run.model.encode), encoding.traced(run.model.decode)
  judge = make_judge(options.face_judge)  # Before the data is encoded: fails fast.
  inputs, input_files, data_info = collect_inputs(
      options, encode, config.z_dim, z_points=options.z_points, data_dir=options.data_dir,
      fit_split=options.fit_split, max_fit_images=options.max_fit_images)
  name = os.path.basename(run.model_dir.rstrip(os.sep))
  header = f" | model {name} ({config.kind}, z_dim {config.z_dim}) | seed {options.seed}"
  result = generate(options, decode, encode, config.z_dim, inputs, header, judge)
  used = dict(flags or {}, samplers_run=list(options.samplers),
              attribute_used=options.attribute if "attribute" in options.samplers else None,
              r_limits=list(options.r_limits), sharpen=list(options.sharpen),
              attribute_scales=list(options.attribute_scales))
  report = assemble(
      result.groups, result.records, {group: f"{group}.png" for group in result.grids},
      attribute_notes + result.notes,
      model={"model_dir": run.model_dir, "name": name, "kind": config.kind,
             "z_dim": config.z_dim, "image_size": config.image_size,
             "checkpoint": options.checkpoint},
      inputs_info=data_info, flags=used, seed=options.seed,
      provenance=provenance.describe_run(options.seed, {
          **encoding.run_files(run.model_dir, options.checkpoint), **input_files}),
      reference_info=result.reference, face_judge=result.face_judge,
      sharpening=result.sharpening)
  return report, {f"{group}.png": image_ops.png_bytes(image)
                  for group, image in result.grids.items()}
