"""Generates faces from points of a model's latent space: one labelled grid per sampler setting.

    python -m tools.generate --model_dir=RUN --output_dir=GEN --data_dir=DATA

Samplers (--samplers; default: every one the inputs allow):
  normal       z ~ N(0, I), --num_images of them (the study shows 28).
  uniform      each component uniform in [-r, r], one grid per r in --r_limits (the same
               directions scaled by r, so the grids show the same points moving outwards).
  gaussian     a full-covariance Gaussian fitted to real z-points (Ledoit-Wolf shrinkage
               when they are few for their dimension).
  gmm          a Gaussian mixture (--gmm_components) fitted to real z-points (fewer components
               or diagonal covariances when they are few).
  interpolate  straight lines in z between pairs of test images (needs --data_dir).
  attribute    test faces + scale * (mean z with --attribute - mean z without), per
               --attribute_scales (needs --data_dir with CelebA attributes).
Real z-points come from --z_points (tools.encode's output) or are encoded on the fly from
--data_dir's --fit_split. Every grid shows the same images once per --sharpen factor (PIL
ImageEnhance.Sharpness; 1 = unchanged). The default 1,3,7 shows the raw output beside a mild
and the study's strong sharpening (the study used 0, 3, 6 and 7).

Writes <sampler>[_<setting>].png grids, generation.json (per setting: radius statistics,
fraction inside the data cloud, Frechet distance in the model's encoder space, notes on
regularisation; inputs with sha256, seed, versions) and flags.txt. The same inputs and --seed
give byte-identical grids and the same numbers.
"""

import os

from absl import flags
from absl import logging

from tools import _cli

FLAGS = flags.FLAGS

# The same names as evaluation.generation.SAMPLERS (tests check it); repeated here so that
# --help and flag errors answer without importing the evaluation libraries.
SAMPLERS = ("normal", "uniform", "gaussian", "gmm", "interpolate", "attribute")
_NEED_Z = ("gaussian", "gmm")
_NEED_DATA = ("interpolate", "attribute")
SPLITS = ("train", "validation", "test")

flags.DEFINE_string("model_dir", None, "Run dir written by tools.train_ae or tools.train_vae.")
flags.DEFINE_string("output_dir", None, "Directory for the grids and generation.json "
                    "(created if needed; files of an earlier run are replaced).")
flags.DEFINE_list("samplers", None, f"Samplers to run, a comma list of {', '.join(SAMPLERS)}. "
                  "Default: all that the inputs allow (gaussian and gmm need --z_points or "
                  "--data_dir; interpolate and attribute need --data_dir).")
flags.DEFINE_integer("num_images", 28, "Faces shown per grid of the normal, uniform, gaussian "
                     "and gmm samplers (7 per row).", lower_bound=1, upper_bound=1000)
flags.DEFINE_integer("num_metric_images", 500, "Points per setting for the statistics and the "
                     "Frechet distance (the grid shows the first --num_images of them), and the "
                     "most test images encoded as the real set.", lower_bound=2)
flags.DEFINE_list("r_limits", ["0.5", "1", "1.5", "2", "2.5", "3", "3.5", "5", "8"],
                  "Half-widths r of the uniform sampler, one grid each (the study's values).")
flags.DEFINE_integer("gmm_components", 10, "Components of the Gaussian mixture (reduced "
                     "automatically when the z-points are few).", lower_bound=1)
flags.DEFINE_list("sharpen", ["1", "3", "7"], "PIL sharpness factors shown side by side "
                  "(1 = unchanged, 0 = blurred; the study used 0, 3, 6, 7).")
flags.DEFINE_integer("seed", 0, "Seed of every sampler (and of Keras).", lower_bound=0)
flags.DEFINE_string("attribute", "auto", "CelebA attribute of the attribute sampler (a name "
                    "from the data dir's manifest, e.g. Smiling, Eyeglasses, Male); auto: "
                    "Smiling when the data has it, else Male, else the sampler is left out "
                    "with a note in generation.json.")
flags.DEFINE_list("attribute_scales", ["-2", "-1", "0", "1", "2"], "Multiples of the attribute "
                  "vector added to the test faces (0 = plain reconstruction).")
flags.DEFINE_integer("interpolation_steps", 8, "Points per interpolation line, both ends "
                     "included.", lower_bound=2, upper_bound=64)
flags.DEFINE_integer("interpolation_pairs", 4, "Interpolation lines shown in the grid.",
                     lower_bound=1)
flags.DEFINE_integer("attribute_faces", 6, "Test faces shown in the attribute grid.",
                     lower_bound=1)
flags.DEFINE_string("z_points", None, "z-points .npy of real images (tools.encode) for the "
                    "fitted samplers and the data cloud; default: encode --data_dir's "
                    "--fit_split.")
flags.DEFINE_string("data_dir", None, "Prepared data dir (tools.prepare_data): test images "
                    "for interpolate, attribute and the Frechet distance, and z-points when "
                    "--z_points is not given.")
flags.DEFINE_enum("fit_split", "train", SPLITS, "Split encoded for the fitted samplers, the data "
                  "cloud and the attribute vector.")
flags.DEFINE_integer("max_fit_images", 20000, "Most real z-points used for fitting (the first "
                     "ones of --fit_split, or a seeded subset of --z_points).", lower_bound=2)
flags.DEFINE_float("cloud_quantile", 0.99, "Chi-square quantile of the inside-the-data-cloud "
                   "test.", lower_bound=0.5, upper_bound=0.999999)
flags.DEFINE_enum("checkpoint", "final", ("final", "best"), "Model file of the run: final "
                  "(model.keras) or best (best.keras, lowest validation loss).")
flags.DEFINE_integer("batch_size", 64, "Images per decoder/encoder call.", lower_bound=1)


def _floats(values):
  try:
    return tuple(float(v) for v in values)
  except (TypeError, ValueError):
    return None


def _check_floats(name, minimum=None, positive=False):
  def check(values):
    parsed = _floats(values or [])
    if not parsed:
      raise flags.ValidationError(f"--{name} needs a comma list of numbers, got {values}")
    if positive and min(parsed) <= 0:
      raise flags.ValidationError(f"--{name} values must be > 0, got {values}")
    if minimum is not None and min(parsed) < minimum:
      raise flags.ValidationError(f"--{name} values must be >= {minimum}, got {values}")
    return True
  flags.register_validator(name, check)


_check_floats("r_limits", positive=True)
_check_floats("sharpen", minimum=0)
_check_floats("attribute_scales")


def _known_samplers(values):
  if values is None:  # Not given: every sampler that the inputs allow.
    return True
  unknown = [v for v in values if v not in SAMPLERS]
  if unknown or not values:
    what = f"unknown sampler(s) {', '.join(unknown)}" if unknown else "no sampler given"
    raise flags.ValidationError(f"--samplers: {what}; choose from {', '.join(SAMPLERS)}")
  return True


flags.register_validator("samplers", _known_samplers)


def _inputs_allow(f):
  wanted = f["samplers"] or ()
  if f["data_dir"]:
    return True
  needs_data = [s for s in wanted if s in _NEED_DATA]
  if needs_data:
    raise flags.ValidationError(f"--samplers {','.join(needs_data)} needs --data_dir (test "
                                "images); add --data_dir DATA or drop them from --samplers")
  needs_z = [s for s in wanted if s in _NEED_Z]
  if needs_z and not f["z_points"]:
    raise flags.ValidationError(f"--samplers {','.join(needs_z)} needs real z-points: add "
                                "--z_points Z.npy or --data_dir DATA")
  return True


flags.register_multi_flags_validator(["samplers", "data_dir", "z_points"], _inputs_allow)


def _resolve_samplers(attribute_names):
  """The samplers to run: the requested ones, or every one the inputs allow (logged)."""
  if FLAGS.samplers:
    wanted = tuple(s for s in SAMPLERS if s in FLAGS.samplers)
    if "attribute" in wanted and not attribute_names:
      raise _cli.FlagError(f"--samplers attribute needs a --data_dir with CelebA attributes; "
                           f"{FLAGS.data_dir} has none (its source had no list_attr_celeba.txt)")
    return wanted
  skipped = {}
  if not (FLAGS.z_points or FLAGS.data_dir):
    skipped.update({s: "needs --z_points or --data_dir" for s in _NEED_Z})
  if not FLAGS.data_dir:
    skipped.update({s: "needs --data_dir" for s in _NEED_DATA})
  elif not attribute_names:
    skipped["attribute"] = f"{FLAGS.data_dir} has no CelebA attributes"
  for name, why in skipped.items():
    logging.info("sampler %s skipped: %s", name, why)
  return tuple(s for s in SAMPLERS if s not in skipped)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  from data_pipeline import locking  # pylint: disable=g-import-not-at-top
  with locking.output_dir(FLAGS.output_dir, "generate", "--output_dir"):  # Until all is written.
    _generate()


def _generate():
  # Imported here so that --help and flag errors answer without loading TensorFlow.
  # pylint: disable=g-import-not-at-top
  import keras
  import tensorflow as tf
  from data_pipeline import provenance
  from data_pipeline.manifest import read_manifest
  from evaluation import encoding
  from evaluation import generation
  from evaluation.errors import EvaluationError
  from evaluation import images as images_lib
  from modeling import run_dir
  # pylint: enable=g-import-not-at-top

  keras.utils.set_random_seed(FLAGS.seed)
  tf.config.experimental.enable_op_determinism()
  manifest = read_manifest(FLAGS.data_dir) if FLAGS.data_dir else None
  attribute_names = (manifest or {}).get("attribute_names") or []
  wanted = _resolve_samplers(attribute_names)
  attribute, attribute_index, attribute_notes = FLAGS.attribute, None, []
  if "attribute" in wanted:
    try:
      attribute, note = generation.choose_attribute(FLAGS.attribute, attribute_names)
    except EvaluationError as error:
      raise _cli.FlagError(f"{error} ({FLAGS.data_dir})") from None
    attribute_notes.append(note)
    if attribute is None and FLAGS.samplers:
      raise _cli.FlagError(f"--samplers attribute: {note}; pass --attribute with one of its "
                           "attributes or drop attribute from --samplers")
    if attribute is None:
      wanted = tuple(s for s in wanted if s != "attribute")
      logging.info("%s", note)
    else:
      attribute_index = attribute_names.index(attribute)

  run = run_dir.load_run(FLAGS.model_dir, FLAGS.checkpoint)
  config = run.config
  if manifest is not None and manifest["image_size"] != config.image_size:
    raise EvaluationError(f"--model_dir {FLAGS.model_dir} takes {config.image_size}px images "
                          f"but --data_dir {FLAGS.data_dir} holds {manifest['image_size']}px "
                          "ones; use data prepared with the model's --image_size")
  options = generation.Options(
      samplers=wanted, num_images=FLAGS.num_images, num_metric_images=FLAGS.num_metric_images,
      r_limits=_floats(FLAGS.r_limits), gmm_components=FLAGS.gmm_components,
      sharpen=_floats(FLAGS.sharpen), seed=FLAGS.seed, attribute=attribute,
      attribute_index=attribute_index, attribute_scales=_floats(FLAGS.attribute_scales),
      interpolation_steps=FLAGS.interpolation_steps,
      interpolation_pairs=FLAGS.interpolation_pairs, attribute_faces=FLAGS.attribute_faces,
      cloud_quantile=FLAGS.cloud_quantile, batch_size=FLAGS.batch_size)

  encode, decode = encoding.traced(run.model.encode), encoding.traced(run.model.decode)

  inputs, input_files, data_info = generation.collect_inputs(
      options, encode, config.z_dim, z_points=FLAGS.z_points, data_dir=FLAGS.data_dir,
      fit_split=FLAGS.fit_split, max_fit_images=FLAGS.max_fit_images)
  name = os.path.basename(run.model_dir.rstrip(os.sep))
  header = f" | model {name} ({config.kind}, z_dim {config.z_dim}) | seed {FLAGS.seed}"
  groups, records, grids, notes, reference = generation.generate(
      options, decode, encode, config.z_dim, inputs, header)
  notes = attribute_notes + list(notes)

  os.makedirs(FLAGS.output_dir, exist_ok=True)
  grid_files = {}
  for group_name, image in grids.items():
    grid_files[group_name] = f"{group_name}.png"
    provenance.atomic_write_bytes(os.path.join(FLAGS.output_dir, grid_files[group_name]),
                                  images_lib.png_bytes(image))
  paths = run_dir.paths(run.model_dir)
  checkpoint_file = paths.model if FLAGS.checkpoint == "final" else paths.best
  input_files = {checkpoint_file: provenance.sha256_file(checkpoint_file),
                 paths.config: provenance.sha256_file(paths.config), **input_files}
  flag_values = {f: FLAGS[f].value for f in (
      "model_dir", "output_dir", "samplers", "num_images", "num_metric_images", "r_limits",
      "gmm_components", "sharpen", "seed", "attribute", "attribute_scales",
      "interpolation_steps", "interpolation_pairs", "attribute_faces", "z_points", "data_dir",
      "fit_split", "max_fit_images", "cloud_quantile", "checkpoint", "batch_size")}
  flag_values.update(samplers_run=list(wanted), attribute_used=attribute if "attribute" in wanted
                     else None, r_limits=list(options.r_limits),
                     sharpen=list(options.sharpen),
                     attribute_scales=list(options.attribute_scales))
  report = generation.assemble(
      groups, records, grid_files, notes,
      model={"model_dir": run.model_dir, "name": name, "kind": config.kind,
             "z_dim": config.z_dim, "image_size": config.image_size,
             "checkpoint": FLAGS.checkpoint},
      inputs_info=data_info, flags=flag_values, seed=FLAGS.seed,
      provenance=provenance.describe_run(FLAGS.seed, input_files), reference_info=reference)
  _cli.write_flagfile(os.path.join(FLAGS.output_dir, "flags.txt"))
  provenance.atomic_write_json(os.path.join(FLAGS.output_dir, "generation.json"), report)
  logging.info("wrote %d grids and generation.json to %s", len(grid_files), FLAGS.output_dir)


def run():
  _cli.run(main, required=["model_dir", "output_dir"])


if __name__ == "__main__":
  run()
