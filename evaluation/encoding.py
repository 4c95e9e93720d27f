"""Encodes a split of a prepared data dir with a trained run's encoder into z-point files.

The model sees the split in file order (no shuffling), so row k of Z.npy is the k-th record of
the split and Z.ids.npy names its image. For a VAE the z-point is the mean of q(z|x); with
`with_log_var` its log-variances go to Z.log_var.npy for the KL per dimension. The rows are
streamed into a memory-mapped file (evaluation.zpoints), so RAM does not grow with the split.

Beside Z.npy, Z.json records what produced it: the model and data files with their sha256, the
split, the number of vectors, library versions and the command line.

With a `projector_dir`, the same pass keeps the first N images as thumbnails (with their
attributes) and writes TensorBoard's embedding projector for the first N z-points there
(evaluation.projector): `tensorboard --logdir PROJECTOR_DIR` shows them as faces.
"""

import dataclasses
import os
import shutil
import tempfile

from absl import logging
import numpy as np
from PIL import Image

from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from data_pipeline import sources
from evaluation import projector
from evaluation import zpoints
from evaluation.errors import EvaluationError
from evaluation.errors import FlagValueError
from modeling import run_dir

PROJECTOR_POINTS = 1000  # Default z-points in the projector.
PROJECTOR_THUMBNAIL = 48  # Default side of a face in its sprite, in pixels.


def provenance_path(output):
  """Z.npy -> Z.json: the record of how a z-point file was made."""
  base = output[:-4] if output.endswith(".npy") else output
  return f"{base}.json"


def check_image_size(run, data_dir, manifest, flag="--model_dir"):
  """Raises EvaluationError when the run's model takes another image size than the data.

  Args:
    run: a modeling.run_dir.LoadedRun.
    data_dir: the data dir (for the message).
    manifest: its manifest dict (`image_size`: the side length in pixels).
    flag: the flag that named the run (--model_dir, --model_dirs).
  """
  if manifest["image_size"] != run.config.image_size:
    raise EvaluationError(
        f"{flag} {run.model_dir} takes {run.config.image_size}px images but --data_dir "
        f"{data_dir} holds {manifest['image_size']}px ones; use data prepared with the "
        "model's --image_size")


def run_files(model_dir, checkpoint="final"):
  """{path: sha256} of the model file that load_run(model_dir, checkpoint) loads and config.json.

  Every evaluation output records these as its model inputs.
  """
  paths = (run_dir.checkpoint_path(model_dir, checkpoint), run_dir.paths(model_dir).config)
  return {path: provenance.sha256_file(path) for path in paths}


def data_files(data_dir):
  """{path: sha256} of a data dir's manifest.json, which pins every shard by its own sha256."""
  path = os.path.join(data_dir, manifest_lib.MANIFEST)
  return {path: provenance.sha256_file(path)}


def split_size(data_dir, manifest, split, max_images=None):
  """Images the split yields (at most max_images); raises EvaluationError for an empty split."""
  info = manifest["splits"].get(split)
  if not info or not info.get("num_examples"):
    have = ", ".join(s for s, i in manifest["splits"].items() if i.get("num_examples"))
    raise EvaluationError(f"--data_dir {data_dir} has no {split!r} images (--split); it has: "
                          f"{have or 'none'}")
  total = int(info["num_examples"])
  return min(total, int(max_images)) if max_images else total


def traced(method):
  """A model method (encode, decode, ...) as a traced tf.function that returns NumPy.

  Calling a Keras model eagerly batch by batch costs about twice the time of the traced graph
  on a CPU; evaluation tools call their models through this. Traced once, at the first call,
  for every batch size; later inputs must have the first one's dtype and per-item shape.
  Tuples stay tuples.
  """
  # Local: a z-points report (analyze_latents) loads no TensorFlow (docs/ARCHITECTURE.md, Imports).
  import tensorflow as tf
  function = None

  def call(inputs):
    nonlocal function
    inputs = tf.convert_to_tensor(inputs)
    if function is None:
      # One trace: TensorFlow counts retracings per Python function, here one method shared
      # by every model compared, and warned of "excessive retracing" at three models.
      spec = tf.TensorSpec([None, *inputs.shape[1:]], inputs.dtype)
      function = tf.function(method, input_signature=[spec])
    return tf.nest.map_structure(lambda tensor: tensor.numpy(), function(inputs))
  return call


def projector_problem(points, thumbnail):
  """Why `points` z-points with `thumbnail`-px faces cannot go into a projector, or None.

  Shared by tools.encode's flag validator and encode_split, so both word it alike.
  """
  if not 1 <= thumbnail <= projector.SPRITE_LIMIT:
    return (f"--projector_thumbnail must be 1..{projector.SPRITE_LIMIT} pixels (the side of "
            f"TensorBoard's largest sprite image), got {thumbnail}")
  limit = projector.max_points(thumbnail)
  if not 1 <= points <= limit:
    return (f"--projector_points must be 1..{limit} for {thumbnail} px thumbnails (all must "
            f"fit into one sprite image), got {points}; pass fewer points or a smaller "
            "--projector_thumbnail")
  return None


class _FirstImages:
  """Keeps thumbnails and attributes of the first `count` images of batches passing through.

  Only thumbnails are kept (not the images), so memory is count x thumbnail^2 x 3 bytes.
  """

  def __init__(self, count, thumbnail):
    self.count, self.thumbnail = count, thumbnail
    self.thumbnails, self.attributes = [], []

  def watch(self, batches):
    """Yields `batches` unchanged, keeping what the projector needs of the first images."""
    for batch in batches:
      wanted = self.count - len(self.thumbnails)
      if wanted > 0:
        for image in batch["image"][:wanted]:
          face = Image.fromarray(image).resize((self.thumbnail, self.thumbnail),
                                               Image.LANCZOS)
          self.thumbnails.append(np.asarray(face, dtype=np.uint8))
        if "attributes" in batch:
          self.attributes.extend(np.asarray(batch["attributes"][:wanted], np.int8))
      yield batch


def _projector_metadata(data_dir, manifest, split, ids, attributes):
  """({column: values}, {identity file: sha256} or {}): id, split, attributes, identity."""
  metadata = {"id": list(ids), "split": [split] * len(ids)}
  for column, name in enumerate(manifest.get("attribute_names") or ()):
    metadata[name] = [int(row[column]) for row in attributes]
  identity_file = manifest.get("identity_file")
  if not identity_file:
    return metadata, {}
  path = os.path.join(data_dir, identity_file)
  if not os.path.isfile(path):
    logging.warning("%s names %s, which is missing: the projector gets no identity column",
                    manifest_lib.MANIFEST, path)
    return metadata, {}
  identities = sources.parse_identities(path)
  # An image without an identity gets an empty cell: the projector treats it as missing.
  metadata["identity"] = [identities.get(i, "") for i in ids]
  return metadata, {path: provenance.sha256_file(path)}


def _write_projector(projector_dir, output, first, metadata):
  """Writes the projector of Z.npy's first rows into projector_dir, all files or none."""
  count = len(first.thumbnails)
  vectors = np.load(output, mmap_mode="r")[:count]
  os.makedirs(projector_dir, exist_ok=True)
  # Written into a hidden folder inside, then moved into place (microseconds): an interrupted
  # write leaves no truncated file that TensorBoard would read.
  staging = tempfile.mkdtemp(prefix=".projector-", dir=projector_dir)
  try:
    info = projector.write_projector(staging, vectors, np.stack(first.thumbnails), metadata)
    for name in info["files"]:
      os.replace(os.path.join(staging, name), os.path.join(projector_dir, name))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return {"projector_dir": os.path.abspath(projector_dir), "num_points": info["num_points"],
          "thumbnail": info["thumbnail"][0], "columns": info["columns"], "files": info["files"],
          "points": "the first num_points rows of the z-point file"}


def encode_split(run, data_dir, split, output, *, max_images=None, batch_size=256,
                 with_log_var=False, checkpoint="final", projector_dir=None,
                 projector_points=PROJECTOR_POINTS, projector_thumbnail=PROJECTOR_THUMBNAIL):
  """Writes Z.npy (+ Z.ids.npy, + Z.log_var.npy) and Z.json for a split of a data dir.

  Args:
    run: a modeling.run_dir.LoadedRun.
    data_dir: a prepared data dir.
    split: "train", "validation" or "test".
    output: path of Z.npy (must end in .npy).
    max_images: encode only the split's first N images.
    batch_size: images per encoder call.
    with_log_var: also write the VAE's log-variances (an AE has none: EvaluationError).
    checkpoint: which model file of the run was loaded ("final" or "best"), for the record.
    projector_dir: also write TensorBoard's embedding projector of the first
      `projector_points` z-points here (default None: none); Z.json records it.
    projector_points: at most this many points (fewer when the split is smaller).
    projector_thumbnail: side of each face in the projector's sprite, in pixels.

  Returns:
    The record written to Z.json (num_vectors, dim, files, inputs with sha256, projector...).

  Raises:
    FlagValueError: projector points that do not fit into one sprite.
    EvaluationError: see above; DataError: an unreadable data dir.
  """
  # Local, they load TensorFlow: a z-points report (analyze_latents) loads none.
  from data_pipeline import make_dataset
  from data_pipeline import reader
  output = os.fspath(output)
  if not output.endswith(".npy"):
    raise EvaluationError(f"--output {output} must end in .npy (e.g. Z.npy)")
  if with_log_var and run.config.kind != "vae":
    raise EvaluationError(f"--with_log_var needs a VAE run, but --model_dir {run.model_dir} "
                          f"holds an {run.config.kind.upper()}; drop --with_log_var")
  problem = projector_dir is not None and projector_problem(projector_points,
                                                            projector_thumbnail)
  if problem:
    raise FlagValueError(problem)
  manifest = manifest_lib.read_manifest(data_dir)
  check_image_size(run, data_dir, manifest)
  total = split_size(data_dir, manifest, split, max_images)
  with_attributes = projector_dir is not None and bool(manifest.get("attribute_names"))
  dataset = make_dataset(data_dir, split, batch_size, shuffle=False, with_ids=True,
                         with_attributes=with_attributes, max_images=total)
  batches = dataset.as_numpy_iterator()
  if projector_dir is not None:  # Collected in the encoding pass: the split is read once.
    first = _FirstImages(min(projector_points, total), projector_thumbnail)
    batches = first.watch(batches)
  method = run.model.encode_with_log_var if with_log_var else run.model.encode
  with reader.reading(data_dir, splits=[split]):  # A damaged record is named, not a trace.
    written = zpoints.encode_to_npy(traced(method), batches, output, total,
                                    with_log_var=with_log_var, description=f"encoding {split}")
  inputs = {**run_files(run.model_dir, checkpoint), **data_files(data_dir)}
  projector_record = None
  if projector_dir is not None:
    ids = zpoints.load_ids(output)[:len(first.thumbnails)]
    metadata, identity_inputs = _projector_metadata(data_dir, manifest, split, ids,
                                                    first.attributes)
    inputs.update(identity_inputs)
    projector_record = _write_projector(projector_dir, output, first, metadata)
  record = {"num_vectors": written["num_vectors"], "dim": written["dim"],
            "files": [os.path.basename(f) for f in written["files"]],
            "model": {"model_dir": os.path.abspath(run.model_dir), "kind": run.config.kind,
                      "z_dim": run.config.z_dim, "checkpoint": checkpoint,
                      "z_point": "z_mean of q(z|x)" if run.config.kind == "vae" else "z"},
            "data": {"data_dir": os.path.abspath(data_dir), "split": split,
                     "max_images": max_images, "order": "file order of the split"},
            "with_log_var": bool(with_log_var),
            "projector": projector_record,
            "provenance": provenance.describe_run(None, inputs)}
  provenance.atomic_write_json(provenance_path(output), record)
  return record


@dataclasses.dataclass(frozen=True)
class Options:
  """What tools.encode asks for (its flags, parsed); see encode_split for each field."""

  model_dir: str
  data_dir: str
  output: str
  split: str = "train"
  max_images: int | None = None
  batch_size: int = 256
  with_log_var: bool = False
  checkpoint: str = "final"
  projector_dir: str | None = None
  projector_points: int = PROJECTOR_POINTS
  projector_thumbnail: int = PROJECTOR_THUMBNAIL


def encode(options):
  """Loads options.model_dir and writes the Z files of a split (encode_split); returns Z.json's.

  Raises:
    DataError: the data dir is missing or unreadable (before the model loads).
    ModelError, EvaluationError: see load_run and encode_split.
  """
  manifest_lib.read_manifest(options.data_dir)  # A wrong --data_dir is named before the model.
  run = run_dir.load_run(options.model_dir, options.checkpoint)
  return encode_split(run, options.data_dir, options.split, options.output,
                      max_images=options.max_images, batch_size=options.batch_size,
                      with_log_var=options.with_log_var, checkpoint=options.checkpoint,
                      projector_dir=options.projector_dir,
                      projector_points=options.projector_points,
                      projector_thumbnail=options.projector_thumbnail)
