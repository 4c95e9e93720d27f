"""Reconstruction quality of one or more models over a data split: statistics and grids.

One pass over the split feeds every model the same batches. Per model and image it records PSNR and
SSIM (tf.image, max_val 1.0, on the decoder's float output against the uint8 original / 255) and the
reconstruction loss in the training units of modeling.losses (the study's: averaged over the 3
channels, summed over the S*S pixels, per image), and summarises them over the split (mean, std,
percentiles). With sharpening factors other than 1 it also measures the sharpened, uint8
reconstructions, which is what the grids show. With a face judge (evaluation.face_judge, MTCNN,
independent of the models) it also gives the face figures (evaluation.face_figures) of the
reconstructions (rounded to uint8, not sharpened) of the judged images' odd rows, against the
originals of their even rows, and the judge's calibration on the same originals.
"""

import dataclasses
import os
import typing

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data_pipeline import make_dataset
from data_pipeline import provenance
from data_pipeline import reader
from data_pipeline import transform
from data_pipeline.errors import DataError
from data_pipeline.manifest import read_manifest
from evaluation import encoding
from evaluation import face_figures
from evaluation import generation
from evaluation import image_ops
from evaluation import image_quality
from evaluation.errors import EvaluationError
from evaluation.errors import FlagValueError
from modeling import losses
from modeling import run_dir

LOSS_UNITS = {
    "bce": "binary cross-entropy averaged over the 3 channels and summed over the S*S pixels, "
           "nats per image (as in training's reconstruction_loss; its floor is the targets' "
           "entropy, ~4,440 on real 96x96 CelebA crops)",
    "mse": "squared error averaged over the 3 channels and summed over the S*S pixels, per "
           "image (as in training's reconstruction_loss)",
}


@dataclasses.dataclass
class Subject:
  """A model under comparison.

  Attributes:
    name: how grids and JSON call it (the run dir's name).
    kind: "ae" or "vae".
    loss: the reconstruction loss it was trained with ("bce" or "mse").
    encode_fn: uint8 images -> z (the mean for a VAE).
    decode_fn: z -> float images in [0, 1].
  """

  name: str
  kind: str
  loss: str
  encode_fn: object
  decode_fn: object

  @property
  def label(self):
    return f"{self.name} ({self.kind})"

  @classmethod
  def from_run(cls, name, run):
    """The model of a loaded run (modeling.run_dir.load_run), called through traced functions."""
    return cls(name, run.config.kind, run.config.loss, encoding.traced(run.model.encode),
               encoding.traced(run.model.decode))

  def reconstruct(self, images):
    """uint8 images [B, S, S, 3] -> float32 reconstructions in [0, 1]."""
    return np.asarray(self.decode_fn(self.encode_fn(images)), np.float32)


def _loss_per_image(targets, reconstructions, kind):
  return np.asarray(losses.reconstruction_per_example(targets, reconstructions, kind),
                    np.float64)


class _Accumulator:
  """Per-image values of one subject, concatenated at the end."""

  def __init__(self, factors):
    self.values = {"psnr": [], "ssim": [], "reconstruction_loss": []}
    self.sharpened = {image_ops.factor_label(f): {"psnr": [], "ssim": []}
                      for f in factors if f != 1}
    self.factors = [f for f in factors if f != 1]

  def add(self, targets, reconstructions, loss_kind):
    self.values["psnr"].append(image_quality.psnr(targets, reconstructions))
    self.values["ssim"].append(image_quality.ssim(targets, reconstructions))
    self.values["reconstruction_loss"].append(
        _loss_per_image(targets, reconstructions, loss_kind))
    rounded = image_ops.to_uint8(reconstructions)
    for factor in self.factors:
      sharp = image_ops.sharpen(rounded, factor).astype(np.float32) / 255.0
      entry = self.sharpened[image_ops.factor_label(factor)]
      entry["psnr"].append(image_quality.psnr(targets, sharp))
      entry["ssim"].append(image_quality.ssim(targets, sharp))

  def summary(self):
    out = {name: image_quality.summarize(np.concatenate(v)) for name, v in self.values.items()}
    out["sharpened"] = {f: {name: image_quality.summarize(np.concatenate(v))
                            for name, v in d.items()}
                        for f, d in self.sharpened.items()}
    return out


class SplitResult(typing.NamedTuple):
  """What `split_statistics` returns.

  Attributes:
    stats: subject name -> {"psnr", "ssim", "reconstruction_loss", "sharpened", "kind",
      "loss", "loss_units"}.
    grid: {"originals": uint8 [n, S, S, 3], subject name: float reconstructions [n, S, S, 3]}.
    judged: uint8 [k, S, S, 3] the originals of the images to judge, or None without
      judge_rows.
    reconstructions: subject name -> uint8 [k, S, S, 3] their reconstructions (rounded, not
      sharpened: as the grids show them), or None without judge_rows.
  """

  stats: dict
  grid: dict
  judged: np.ndarray | None
  reconstructions: dict | None


def judged_rows(num_images, max_images, seed):
  """Which of the split's first num_images images the face judge looks at.

  Args:
    num_images: images measured.
    max_images: most images judged.
    seed: seed of the subset (numpy.random.default_rng((seed, 1))).

  Returns:
    (sorted int64 indices, or None for all of them; a description of the choice).
  """
  if max_images >= num_images:
    return None, f"all {num_images} images"
  rows = np.random.default_rng((int(seed), 1)).choice(num_images, size=max_images,
                                                      replace=False)
  return np.sort(rows), (f"a seeded random subset of {max_images} of the {num_images} images "
                         "(--face_judge_images, --seed)")


def split_statistics(subjects, batches, factors=(1,), num_grid=8, total=None,
                     description="reconstructing", judge_rows=False):
  """Reconstructs every batch with every subject; returns statistics and grid material.

  Args:
    subjects: list of Subject (distinct names).
    batches: iterable of uint8 image batches [B, S, S, 3] (or dicts with "image").
    factors: sharpening factors measured besides the raw output (1 = unchanged).
    num_grid: how many of the first images to keep for the grid.
    total: number of images expected, for the progress bar.
    description: progress bar text.
    judge_rows: sorted indices (in batch order) of the images kept for the face judge; None:
      all of them; False: none.

  Returns:
    A SplitResult.

  Raises:
    EvaluationError: subjects with the same name, or no images.
  """
  if len({s.name for s in subjects}) != len(subjects):
    raise EvaluationError(f"models need distinct names, got {[s.name for s in subjects]}")
  accumulators = {s.name: _Accumulator(factors) for s in subjects}
  grid = {"originals": [], **{s.name: [] for s in subjects}}
  keep = judge_rows is not False
  judged, rounded = [], {s.name: [] for s in subjects}
  kept = 0
  count = 0
  with tqdm(total=total, desc=description, unit="img", disable=None) as progress:
    for batch in batches:
      originals = np.asarray(batch["image"] if isinstance(batch, dict) else batch)
      targets = originals.astype(np.float32) / 255.0
      take = max(0, min(num_grid - kept, len(originals)))
      if take:
        grid["originals"].append(originals[:take])
      look = None
      if keep:
        look = (np.arange(len(originals)) if judge_rows is None else
                judge_rows[(judge_rows >= count) & (judge_rows < count + len(originals))] - count)
        judged.append(originals[look])
      for subject in subjects:
        reconstructions = subject.reconstruct(originals)
        accumulators[subject.name].add(targets, reconstructions, subject.loss)
        if look is not None:
          rounded[subject.name].append(image_ops.to_uint8(reconstructions[look]))
        if take:
          grid[subject.name].append(reconstructions[:take])
      kept += take
      count += len(originals)
      progress.update(len(originals))
  if count == 0:
    raise EvaluationError("the data split yielded no images")
  stats = {}
  for subject in subjects:
    stats[subject.name] = dict(accumulators[subject.name].summary(), kind=subject.kind,
                               loss=subject.loss, loss_units=LOSS_UNITS[subject.loss])
  return SplitResult(stats, {name: np.concatenate(parts) for name, parts in grid.items()},
                     np.concatenate(judged) if keep else None,
                     {name: np.concatenate(parts) for name, parts in rounded.items()}
                     if keep else None)


def comparison_grid(originals, reconstructions, subjects, factors, title=""):
  """original | each subject's reconstruction (per sharpening factor): a PIL image.

  Args:
    originals: uint8 [n, S, S, 3].
    reconstructions: subject name -> float [n, S, S, 3] in [0, 1].
    subjects: the Subjects, in column order.
    factors: sharpening factors; factor 1 gives the raw reconstructions.
    title: text above the grid.
  """
  columns = [("original", np.asarray(originals, np.uint8))]
  for factor in factors:
    suffix = "" if factor == 1 else f" sharpness {image_ops.factor_label(factor)}"
    for subject in subjects:
      rounded = image_ops.to_uint8(reconstructions[subject.name])
      columns.append((subject.label + suffix, image_ops.sharpen(rounded, factor)))
  return image_ops.panel_grid(columns, columns=1, title=title)


DEFINITIONS = {
    "psnr": "tf.image.psnr(original / 255, reconstruction, max_val=1.0) in dB per image; "
            "exact reconstructions (infinite PSNR) are counted in num_infinite and left "
            "out of the statistics",
    "ssim": "tf.image.ssim(original / 255, reconstruction, max_val=1.0) per image "
            "(11x11 Gaussian window)",
    "reconstruction_loss": "the model's training reconstruction loss per image (see "
                           "loss_units); a VAE is evaluated at its mean z",
    "sharpened": "PSNR and SSIM of the reconstructions rounded to uint8 and sharpened "
                 "with PIL ImageEnhance.Sharpness(factor)",
    "face_rate": "fraction in [0, 1] of the reconstructions judged (face.num_images) in which "
                 "the independent face judge finds a face; the same as face.face_rate. null "
                 "when the judge is off (--noface_judge)",
    "face": "face figures (evaluation.face_figures: face_rate, detection, face_score, fd_face, "
            "landmark_error, each with its bootstrap ci95) of the model's reconstructions "
            "(rounded to uint8, not sharpened) of the odd rows of the images judged, against "
            "the originals of the even rows (face_judge.images_judged); read them against "
            "face_judge.calibration. null when the judge is off",
    "face_judge": "the judge (MTCNN, evaluation.face_judge), which images it looked at "
                  "(images_judged) and its calibration (evaluation.face_figures.calibration): "
                  "the face figures of the odd rows' originals as they are, blurred, of the "
                  "training split's mean face with and without pixel noise, and of uniform "
                  "noise, against the even rows' originals. null when the judge is off",
}
GRID_FILE = "reconstructions.png"
OWN_IMAGES_FILE = "own_images.png"


@dataclasses.dataclass(frozen=True)
class Options:
  """What tools.compare_reconstructions asks for (its flags, parsed).

  Attributes:
    model_dirs: the run dirs compared (distinct), all of the data's image size.
    data_dir: the prepared data dir.
    split: the split reconstructed.
    num_images: rows of the grid (the split's first images).
    max_images: images measured (the split's first ones); None: the whole split.
    sharpen: PIL sharpness factors shown and measured (1 = unchanged).
    images: the user's own photos (any size), cropped and resized like the data.
    checkpoint: the model file of each run ("final" or "best").
    seed: Keras' seed (the reconstructions use no randomness: a VAE at its mean), and the
      seed of the face judge's subset and noise.
    batch_size: images per model call.
    face_judge: measure face rates with the independent judge (needs OpenCV).
    face_judge_images: most images judged per model (a seeded subset of the measured ones).
  """

  model_dirs: tuple
  data_dir: str
  split: str = "test"
  num_images: int = 8
  max_images: int | None = None
  sharpen: tuple = (1.0,)
  images: tuple = ()
  checkpoint: str = "final"
  seed: int = 0
  batch_size: int = 64
  face_judge: bool = True
  face_judge_images: int = 1000


def run_names(model_dirs):
  """Run dir names, made unique with their parent's name when two runs share a name."""
  names = [os.path.basename(os.path.abspath(d)) for d in model_dirs]
  if len(set(names)) < len(names):
    names = [os.path.join(os.path.basename(os.path.dirname(os.path.abspath(d))), n)
             for d, n in zip(model_dirs, names)]
  return names


def _own_images(options, manifest):
  """The user's photos, cropped and resized like the data: uint8 [n, S, S, 3] or None."""
  own = []
  for path in options.images:
    try:
      own.append(transform.transform_file(path, tuple(manifest["crop"]),
                                          manifest["image_size"]))
    except DataError as error:
      raise DataError(f"--image: {error}; give a readable photo (JPEG, PNG, ...)") from None
  return np.stack(own) if own else None


def _subjects(options, manifest):
  """The runs as Subjects (traced model calls) and {path: sha256} of their files."""
  subjects, files = [], {}
  for model_dir, name in zip(options.model_dirs, run_names(options.model_dirs)):
    run = run_dir.load_run(model_dir, options.checkpoint)
    encoding.check_image_size(run, options.data_dir, manifest, flag="--model_dirs")
    subjects.append(Subject.from_run(name, run))
    files.update(encoding.run_files(model_dir, options.checkpoint))
  return subjects, files


def _measure_split(options, manifest, subjects, judging):
  """split_statistics over the split's first images; (its result, the rows the judge sees)."""
  split_size = manifest["splits"][options.split]["num_examples"]
  max_images = min(options.max_images or split_size, split_size)
  look_at, chosen = judged_rows(max_images, options.face_judge_images, options.seed)
  dataset = make_dataset(options.data_dir, options.split, options.batch_size, shuffle=False,
                         max_images=max_images)
  with reader.reading(options.data_dir, splits=[options.split]):  # Damage: shard + record named.
    result = split_statistics(subjects, dataset.as_numpy_iterator(), options.sharpen,
                              options.num_images, total=max_images,
                              judge_rows=look_at if judging else False)
  return result, chosen


def _judge_faces(judge, result, chosen, options):
  """Adds each model's face figures to result.stats; (reconstruction.json's face_judge, notes)."""
  stats = result.stats
  if judge is None:
    for name in stats:
      stats[name].update(face_rate=None, face=None)
    return None, ["face judge off (--noface_judge): face_rate, face and face_judge are null"]
  mean_face = generation.mean_image(options.data_dir, "train", options.batch_size)
  reference, calibration = face_figures.calibration(judge, result.judged, mean_face,
                                                    options.seed)
  judge_info = {**judge.describe(), "images_judged": chosen, "calibration": calibration}
  for name, reconstructions in result.reconstructions.items():
    held_out = face_figures.split_real(reconstructions)[1]
    stats[name]["face"] = face_figures.figures(judge.judge(held_out), reference, options.seed)
    stats[name]["face_rate"] = stats[name]["face"]["face_rate"]
  return judge_info, []


def _grid_files(options, grid, subjects, own):
  """{GRID_FILE: PNG bytes} of the split's grid, and OWN_IMAGES_FILE's with own images."""
  columns = ", ".join(s.label for s in subjects)
  title = (f"{options.split} images of {os.path.basename(os.path.abspath(options.data_dir))}: "
           f"original | {columns}")
  files = {GRID_FILE: image_ops.png_bytes(comparison_grid(
      grid["originals"], {s.name: grid[s.name] for s in subjects}, subjects, options.sharpen,
      title))}
  if own is not None:
    rows = "; ".join(f"{i + 1}: {os.path.basename(p)}" for i, p in enumerate(options.images))
    files[OWN_IMAGES_FILE] = image_ops.png_bytes(comparison_grid(
        own, {s.name: s.reconstruct(own) for s in subjects}, subjects, options.sharpen,
        f"your images (rows {rows}): original | {columns}"))
  return files


def compare(options):
  """Reconstructs the split's images with every run: tools.compare_reconstructions' outputs.

  Args:
    options: the Options.

  Returns:
    (report, files): reconstruction.json's dict (per model the PSNR, SSIM and loss summaries
    over the split and the face rate; the face judge's description and calibration;
    definitions, data, provenance with every input's sha256) and
    {file name: PNG bytes} of the grid (GRID_FILE) and, with own images, OWN_IMAGES_FILE.

  Raises:
    FlagValueError: a split the data dir does not have.
    DataError, ModelError, EvaluationError: an unreadable photo, data dir or run dir, runs
      of another image size than the data, or options.face_judge without OpenCV.
  """
  keras.utils.set_random_seed(options.seed)
  tf.config.experimental.enable_op_determinism()
  manifest = read_manifest(options.data_dir)
  if options.split not in manifest["splits"]:
    raise FlagValueError(f"--split {options.split}: {options.data_dir} has only the splits "
                         f"{', '.join(manifest['splits'])}")
  own = _own_images(options, manifest)  # A bad --image fails before any model is loaded.
  judge = generation.make_judge(options.face_judge)
  subjects, input_files = _subjects(options, manifest)
  input_files.update(encoding.data_files(options.data_dir))
  input_files.update({path: provenance.sha256_file(path) for path in options.images})

  result, chosen = _measure_split(options, manifest, subjects, judge is not None)
  stats = result.stats
  judge_info, notes = _judge_faces(judge, result, chosen, options)
  files = _grid_files(options, result.grid, subjects, own)
  report = {
      "split": options.split,
      "num_images": int(stats[subjects[0].name]["psnr"]["count"]),
      "models": {s.name: dict(stats[s.name], model_dir=os.path.abspath(d))
                 for s, d in zip(subjects, options.model_dirs)},
      "sharpen": list(options.sharpen),
      "own_images": list(options.images),
      "files": {"grid": GRID_FILE, **({"own_images": OWN_IMAGES_FILE} if own is not None
                                      else {})},
      "face_judge": judge_info,
      "notes": notes,
      "definitions": DEFINITIONS,
      "data": {"data_dir": os.path.abspath(options.data_dir),
               "image_size": manifest["image_size"]},
      "provenance": provenance.describe_run(options.seed, input_files),
  }
  return report, files
