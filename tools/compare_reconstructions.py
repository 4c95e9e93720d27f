"""Compares how well models (e.g. an AE and a VAE) reconstruct the same images.

    python -m tools.compare_reconstructions --model_dirs=AE_RUN,VAE_RUN --data_dir=DATA \\
        --output_dir=REC [--image=me.jpg] [--sharpen=1,7]

Writes:
  reconstructions.png  the first --num_images images of --split: original | each model's
                       reconstruction (labelled with the run dir's name and kind), repeated
                       per --sharpen factor other than 1.
  own_images.png       the same for every --image (a photo of any size, cropped and resized
                       by the data's own transform, as in the study's "image of myself").
  reconstruction.json  per model, over the split (or its first --max_images): mean, std and
                       percentiles of PSNR and SSIM (tf.image, max_val 1.0) and of the
                       reconstruction loss in training units; also for the sharpened output;
                       plus the inputs (sha256), seed and versions.
  flags.txt            the resolved flags.
"""

import os

from absl import flags
from absl import logging

from tools import _cli

FLAGS = flags.FLAGS

SPLITS = ("train", "validation", "test")

flags.DEFINE_list("model_dirs", None, "Run dirs to compare (comma list), e.g. AE_RUN,VAE_RUN; "
                  "they must take the data's image size.")
flags.DEFINE_string("data_dir", None, "Prepared data dir (tools.prepare_data).")
flags.DEFINE_string("output_dir", None, "Directory for the grids and reconstruction.json "
                    "(created if needed; files of an earlier run are replaced).")
flags.DEFINE_enum("split", "test", SPLITS, "Split to reconstruct.")
flags.DEFINE_integer("num_images", 8, "Rows of the grid (the split's first images).",
                     lower_bound=1, upper_bound=256)
flags.DEFINE_integer("max_images", None, "Images used for the statistics: the split's first "
                     "ones; default: the whole split.", lower_bound=1)
flags.DEFINE_list("sharpen", ["1"], "PIL sharpness factors of the reconstructions shown and "
                  "measured (1 = unchanged; the study's 7 is strong).")
flags.DEFINE_multi_string("image", [], "Your own photo (any size; repeat the flag for more), "
                          "cropped and resized like the data and reconstructed by each model.")
flags.DEFINE_enum("checkpoint", "final", ("final", "best"), "Model file of each run: final "
                  "(model.keras) or best (best.keras).")
flags.DEFINE_integer("seed", 0, "Seed of Keras (the reconstructions use no randomness: a "
                     "VAE is evaluated at its mean).", lower_bound=0)
flags.DEFINE_integer("batch_size", 64, "Images per model call.", lower_bound=1)


def _sharpen_factors(values):
  try:
    factors = [float(v) for v in values]
  except (TypeError, ValueError):
    return False
  return bool(factors) and min(factors) >= 0


flags.register_validator("sharpen", _sharpen_factors, message="--sharpen needs a comma list of "
                         "factors >= 0, e.g. 1,7")
flags.register_validator("model_dirs", lambda dirs: dirs is None or (
    bool(dirs) and len({os.path.abspath(d) for d in dirs}) == len(dirs)),
                         message="--model_dirs needs distinct run dirs, e.g. AE_RUN,VAE_RUN")


def _names(model_dirs):
  """Run dir names, made unique with their parent's name when two runs share a name."""
  names = [os.path.basename(os.path.abspath(d)) for d in model_dirs]
  if len(set(names)) < len(names):
    names = [os.path.join(os.path.basename(os.path.dirname(os.path.abspath(d))), n)
             for d, n in zip(model_dirs, names)]
  return names


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  from data_pipeline import locking  # pylint: disable=g-import-not-at-top
  # Locked before anything is written into it, until the report is complete.
  with locking.output_dir(FLAGS.output_dir, "compare_reconstructions", "--output_dir"):
    _compare()


def _compare():
  # Imported here so that --help and flag errors answer without loading TensorFlow.
  # pylint: disable=g-import-not-at-top
  import keras
  import numpy as np
  import tensorflow as tf
  from data_pipeline import make_dataset
  from data_pipeline import provenance
  from data_pipeline import reader
  from data_pipeline import transform
  from data_pipeline.errors import DataError
  from data_pipeline.manifest import MANIFEST, read_manifest
  from evaluation import encoding
  from evaluation import images as images_lib
  from evaluation import reconstruction
  from evaluation.errors import EvaluationError
  from modeling import run_dir
  # pylint: enable=g-import-not-at-top

  keras.utils.set_random_seed(FLAGS.seed)
  tf.config.experimental.enable_op_determinism()
  factors = [float(v) for v in FLAGS.sharpen]
  manifest = read_manifest(FLAGS.data_dir)
  if FLAGS.split not in manifest["splits"]:
    raise _cli.FlagError(f"--split {FLAGS.split}: {FLAGS.data_dir} has only the splits "
                         f"{', '.join(manifest['splits'])}")
  size = manifest["image_size"]
  # The user's photos first: a bad --image fails before any model is loaded.
  own = []
  for path in FLAGS.image:
    try:
      own.append(transform.transform_file(path, tuple(manifest["crop"]), size))
    except DataError as error:
      raise DataError(f"--image: {error}; give a readable photo (JPEG, PNG, ...)") from None

  subjects, input_files = [], {}
  for model_dir, name in zip(FLAGS.model_dirs, _names(FLAGS.model_dirs)):
    run = run_dir.load_run(model_dir, FLAGS.checkpoint)
    if run.config.image_size != size:
      raise EvaluationError(f"--model_dirs {model_dir} takes {run.config.image_size}px images "
                            f"but --data_dir {FLAGS.data_dir} holds {size}px ones; compare "
                            "models trained on data of one image size")
    subjects.append(reconstruction.Subject(name, run.config.kind, run.config.loss,
                                           encoding.traced(run.model.encode),
                                           encoding.traced(run.model.decode)))
    paths = run_dir.paths(model_dir)
    model_file = paths.model if FLAGS.checkpoint == "final" else paths.best
    input_files[model_file] = provenance.sha256_file(model_file)
    input_files[paths.config] = provenance.sha256_file(paths.config)
  manifest_path = os.path.join(FLAGS.data_dir, MANIFEST)
  input_files[manifest_path] = provenance.sha256_file(manifest_path)
  for path in FLAGS.image:
    input_files[path] = provenance.sha256_file(path)

  split_size = manifest["splits"][FLAGS.split]["num_examples"]
  max_images = min(FLAGS.max_images or split_size, split_size)
  dataset = make_dataset(FLAGS.data_dir, FLAGS.split, FLAGS.batch_size, shuffle=False,
                         max_images=max_images)
  with reader.reading(FLAGS.data_dir, splits=[FLAGS.split]):  # Damage -> shard + record named.
    stats, grid = reconstruction.split_statistics(
        subjects, dataset.as_numpy_iterator(), factors, FLAGS.num_images, total=max_images)

  os.makedirs(FLAGS.output_dir, exist_ok=True)
  columns = ", ".join(s.label for s in subjects)
  title = (f"{FLAGS.split} images of {os.path.basename(os.path.abspath(FLAGS.data_dir))}: "
           f"original | {columns}")
  reconstructions = {s.name: grid[s.name] for s in subjects}
  files = {"grid": "reconstructions.png"}
  provenance.atomic_write_bytes(
      os.path.join(FLAGS.output_dir, files["grid"]), images_lib.png_bytes(
          reconstruction.comparison_grid(grid["originals"], reconstructions, subjects, factors,
                                         title)))
  if own:
    own = np.stack(own)
    own_recs = {s.name: s.reconstruct(own) for s in subjects}
    rows = "; ".join(f"{i + 1}: {os.path.basename(p)}" for i, p in enumerate(FLAGS.image))
    files["own_images"] = "own_images.png"
    provenance.atomic_write_bytes(
        os.path.join(FLAGS.output_dir, files["own_images"]), images_lib.png_bytes(
            reconstruction.comparison_grid(own, own_recs, subjects, factors,
                                           f"your images (rows {rows}): original | {columns}")))
  report = {
      "split": FLAGS.split,
      "num_images": int(stats[subjects[0].name]["psnr"]["count"]),
      "models": {s.name: dict(stats[s.name], model_dir=os.path.abspath(d))
                 for s, d in zip(subjects, FLAGS.model_dirs)},
      "sharpen": factors,
      "own_images": list(FLAGS.image),
      "files": files,
      "definitions": {
          "psnr": "tf.image.psnr(original / 255, reconstruction, max_val=1.0) in dB per image; "
                  "exact reconstructions (infinite PSNR) are counted in num_infinite and left "
                  "out of the statistics",
          "ssim": "tf.image.ssim(original / 255, reconstruction, max_val=1.0) per image "
                  "(11x11 Gaussian window)",
          "reconstruction_loss": "the model's training reconstruction loss per image (see "
                                 "loss_units); a VAE is evaluated at its mean z",
          "sharpened": "PSNR and SSIM of the reconstructions rounded to uint8 and sharpened "
                       "with PIL ImageEnhance.Sharpness(factor)",
      },
      "data": {"data_dir": os.path.abspath(FLAGS.data_dir), "image_size": size},
      "provenance": provenance.describe_run(FLAGS.seed, input_files),
  }
  _cli.write_flagfile(os.path.join(FLAGS.output_dir, "flags.txt"))
  provenance.atomic_write_json(os.path.join(FLAGS.output_dir, "reconstruction.json"), report)
  for subject in subjects:
    s = stats[subject.name]
    logging.info("%s: PSNR %.2f +- %.2f dB, SSIM %.3f +- %.3f, %s loss %.1f per image",
                 subject.label, s["psnr"]["mean"] or float("inf"), s["psnr"]["std"] or 0.0,
                 s["ssim"]["mean"], s["ssim"]["std"], subject.loss,
                 s["reconstruction_loss"]["mean"])
  logging.info("wrote %s and reconstruction.json to %s", ", ".join(files.values()),
               FLAGS.output_dir)


def run():
  _cli.run(main, required=["model_dirs", "data_dir", "output_dir"])


if __name__ == "__main__":
  run()
