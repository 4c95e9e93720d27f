"""Encodes a split of a prepared data dir with a trained run's encoder into z-point files.

The model sees the split in file order (no shuffling), so row k of Z.npy is the k-th record of
the split and Z.ids.npy names its image. For a VAE the z-point is the mean of q(z|x); with
`with_log_var` its log-variances go to Z.log_var.npy for the KL per dimension. The rows are
streamed into a memory-mapped file (evaluation.zpoints), so RAM does not grow with the split.

Beside Z.npy, Z.json records what produced it: the model and data files with their sha256, the
split, the number of vectors, library versions and the command line.
"""

import dataclasses
import os

from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from evaluation import zpoints
from evaluation.errors import EvaluationError


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
  from modeling import run_dir  # pylint: disable=g-import-not-at-top
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
  on a CPU; evaluation tools call their models through this. Tuples stay tuples.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  function = tf.function(method, reduce_retracing=True)

  def call(inputs):
    return tf.nest.map_structure(lambda tensor: tensor.numpy(), function(inputs))
  return call


def encode_split(run, data_dir, split, output, *, max_images=None, batch_size=256,
                 with_log_var=False, checkpoint="final"):
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

  Returns:
    The record written to Z.json (num_vectors, dim, files, inputs with sha256, ...).
  """
  # pylint: disable=g-import-not-at-top
  from data_pipeline import make_dataset
  from data_pipeline import reader
  # pylint: enable=g-import-not-at-top
  output = os.fspath(output)
  if not output.endswith(".npy"):
    raise EvaluationError(f"--output {output} must end in .npy (e.g. Z.npy)")
  if with_log_var and run.config.kind != "vae":
    raise EvaluationError(f"--with_log_var needs a VAE run, but --model_dir {run.model_dir} "
                          f"holds an {run.config.kind.upper()}; drop --with_log_var")
  manifest = manifest_lib.read_manifest(data_dir)
  check_image_size(run, data_dir, manifest)
  total = split_size(data_dir, manifest, split, max_images)
  dataset = make_dataset(data_dir, split, batch_size, shuffle=False, with_ids=True,
                         max_images=total)
  method = run.model.encode_with_log_var if with_log_var else run.model.encode
  with reader.reading(data_dir, splits=[split]):  # A damaged record is named, not a trace.
    written = zpoints.encode_to_npy(traced(method), dataset.as_numpy_iterator(), output, total,
                                    with_log_var=with_log_var, description=f"encoding {split}")
  inputs = {**run_files(run.model_dir, checkpoint), **data_files(data_dir)}
  record = {"num_vectors": written["num_vectors"], "dim": written["dim"],
            "files": [os.path.basename(f) for f in written["files"]],
            "model": {"model_dir": os.path.abspath(run.model_dir), "kind": run.config.kind,
                      "z_dim": run.config.z_dim, "checkpoint": checkpoint,
                      "z_point": "z_mean of q(z|x)" if run.config.kind == "vae" else "z"},
            "data": {"data_dir": os.path.abspath(data_dir), "split": split,
                     "max_images": max_images, "order": "file order of the split"},
            "with_log_var": bool(with_log_var),
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


def encode(options):
  """Loads options.model_dir and writes the Z files of a split (encode_split); returns Z.json's.

  Raises:
    DataError: the data dir is missing or unreadable (before the model loads).
    ModelError, EvaluationError: see load_run and encode_split.
  """
  from modeling import run_dir  # pylint: disable=g-import-not-at-top
  manifest_lib.read_manifest(options.data_dir)  # A wrong --data_dir is named before the model.
  run = run_dir.load_run(options.model_dir, options.checkpoint)
  return encode_split(run, options.data_dir, options.split, options.output,
                      max_images=options.max_images, batch_size=options.batch_size,
                      with_log_var=options.with_log_var, checkpoint=options.checkpoint)
