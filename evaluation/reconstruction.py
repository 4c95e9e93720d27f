"""Reconstruction quality of one or more models over a data split: statistics and grids.

One pass over the split feeds every model the same batches. Per model and image it records
PSNR and SSIM (tf.image, max_val 1.0, on the decoder's float output against the uint8
original / 255) and the reconstruction loss in the training units of modeling.losses (summed
over the S*S*3 pixel values, per image), and summarises them over the split (mean, std,
percentiles). With sharpening factors other than 1 it also measures the sharpened, uint8
reconstructions, which is what the grids show.
"""

import dataclasses

import numpy as np

from evaluation import images as images_lib
from evaluation import metrics
from evaluation.errors import EvaluationError

LOSS_UNITS = {
    "bce": "binary cross-entropy summed over the S*S*3 pixel values, nats per image (as in "
           "training's reconstruction_loss)",
    "mse": "squared error summed over the S*S*3 pixel values, per image (as in training's "
           "reconstruction_loss)",
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

  def reconstruct(self, images):
    """uint8 images [B, S, S, 3] -> float32 reconstructions in [0, 1]."""
    return np.asarray(self.decode_fn(self.encode_fn(images)), np.float32)


def _loss_per_image(targets, reconstructions, kind):
  from modeling import losses  # pylint: disable=g-import-not-at-top  (loads Keras)
  return np.asarray(losses.reconstruction_per_example(targets, reconstructions, kind),
                    np.float64)


class _Accumulator:
  """Per-image values of one subject, concatenated at the end."""

  def __init__(self, factors):
    self.values = {"psnr": [], "ssim": [], "reconstruction_loss": []}
    self.sharpened = {images_lib.factor_label(f): {"psnr": [], "ssim": []}
                      for f in factors if f != 1}
    self.factors = [f for f in factors if f != 1]

  def add(self, targets, reconstructions, loss_kind):
    self.values["psnr"].append(metrics.psnr(targets, reconstructions))
    self.values["ssim"].append(metrics.ssim(targets, reconstructions))
    self.values["reconstruction_loss"].append(
        _loss_per_image(targets, reconstructions, loss_kind))
    rounded = images_lib.to_uint8(reconstructions)
    for factor in self.factors:
      sharp = images_lib.sharpen(rounded, factor).astype(np.float32) / 255.0
      entry = self.sharpened[images_lib.factor_label(factor)]
      entry["psnr"].append(metrics.psnr(targets, sharp))
      entry["ssim"].append(metrics.ssim(targets, sharp))

  def summary(self):
    out = {name: metrics.summarize(np.concatenate(v)) for name, v in self.values.items()}
    out["sharpened"] = {f: {name: metrics.summarize(np.concatenate(v)) for name, v in d.items()}
                        for f, d in self.sharpened.items()}
    return out


def split_statistics(subjects, batches, factors=(1,), num_grid=8, total=None,
                     description="reconstructing"):
  """Reconstructs every batch with every subject; returns statistics and grid material.

  Args:
    subjects: list of Subject (distinct names).
    batches: iterable of uint8 image batches [B, S, S, 3] (or dicts with "image").
    factors: sharpening factors measured besides the raw output (1 = unchanged).
    num_grid: how many of the first images to keep for the grid.
    total: number of images expected, for the progress bar.
    description: progress bar text.

  Returns:
    (stats, grid) where stats maps subject name -> {"psnr", "ssim", "reconstruction_loss",
    "sharpened"} summaries, and grid is {"originals": uint8 [n, S, S, 3], subject name:
    float reconstructions [n, S, S, 3]}.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if len({s.name for s in subjects}) != len(subjects):
    raise EvaluationError(f"models need distinct names, got {[s.name for s in subjects]}")
  accumulators = {s.name: _Accumulator(factors) for s in subjects}
  grid = {"originals": [], **{s.name: [] for s in subjects}}
  kept = 0
  count = 0
  with tqdm(total=total, desc=description, unit="img", disable=None) as progress:
    for batch in batches:
      originals = np.asarray(batch["image"] if isinstance(batch, dict) else batch)
      targets = originals.astype(np.float32) / 255.0
      take = max(0, min(num_grid - kept, len(originals)))
      if take:
        grid["originals"].append(originals[:take])
      for subject in subjects:
        reconstructions = subject.reconstruct(originals)
        accumulators[subject.name].add(targets, reconstructions, subject.loss)
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
  return stats, {name: np.concatenate(parts) for name, parts in grid.items()}


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
    suffix = "" if factor == 1 else f" sharpness {images_lib.factor_label(factor)}"
    for subject in subjects:
      rounded = images_lib.to_uint8(reconstructions[subject.name])
      columns.append((subject.label + suffix, images_lib.sharpen(rounded, factor)))
  return images_lib.panel_grid(columns, columns=1, title=title)
