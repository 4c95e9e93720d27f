"""Generates faces from points of a model's latent space: one labelled grid per sampler setting.

    python -m tools.generate --model_dir=RUN --output_dir=GEN --data_dir=DATA

Samplers (--samplers; default: every one the inputs allow): normal (z ~ N(0, I)), uniform (in
[-r, r] per --r_limits), gaussian and gmm (fitted to real z-points), interpolate (between test
images) and attribute (test faces shifted along an attribute vector). Real z-points come from
--z_points or are encoded from --data_dir. Every grid shows the images once per --sharpen
factor. Writes <sampler>[_<setting>].png grids, generation.json (per setting: radius, fraction
inside the data cloud, Frechet distance in the model's encoder space, face figures by an
independent judge; the judge's calibration; sharpening measures; inputs, seed, versions) and
flags.txt. The same inputs and --seed give byte-identical grids. docs/TOOLS.md has more.
"""

from absl import flags
from absl import logging

from data_pipeline import locking
from modeling import flag_choices
from tools import _cli
from tools import flags_data
from tools import flags_eval
from tools import outputs

FLAGS = flags.FLAGS

SAMPLERS = flag_choices.SAMPLERS

flags_eval.define_model_dir()
flags_eval.define_output_dir("the grids and generation.json")
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
flags_eval.define_sharpen(["1", "3", "7"], "PIL sharpness factors shown side by side "
                          "(1 = unchanged, 0 = blurred; the study used 0, 3, 6, 7).")
flags_data.define_seed("Seed of every sampler (and of Keras).")
flags.DEFINE_string("attribute", "auto", "CelebA attribute of the attribute sampler (a name "
                    "from the data dir's manifest, e.g. Smiling, Eyeglasses, Male); auto: "
                    "Smiling when the data has it, else Male, else the sampler is left out "
                    "with a note in generation.json.")
flags.DEFINE_list("attribute_scales", ["-2", "-1", "0", "1", "2"], "Multiples of the attribute "
                  "vector added to the test faces (0 = plain reconstruction).")
flags.DEFINE_integer("interpolation_steps", 8, "Points per interpolation line, both ends "
                     "included.", lower_bound=2, upper_bound=64)
flags.DEFINE_integer("interpolation_pairs", 4, "Interpolation lines shown in the grid; "
                     "num_metric_images // interpolation_steps lines (at least these) are "
                     "measured.",
                     lower_bound=1)
flags.DEFINE_integer("attribute_faces", 6, "Test faces shown in the attribute grid.",
                     lower_bound=1)
flags.DEFINE_string("z_points", None, "z-points .npy of real images (tools.encode) for the "
                    "fitted samplers and the data cloud; default: encode --data_dir's "
                    "--fit_split.")
flags_data.define_data_dir("Prepared data dir (tools.prepare_data): test images for "
                           "interpolate, attribute and the Frechet distance, and z-points when "
                           "--z_points is not given.")
flags_data.define_split("Split encoded for the fitted samplers, the data cloud and the "
                        "attribute vector.", name="fit_split")
flags.DEFINE_integer("max_fit_images", 20000, "Most real z-points used for fitting (the first "
                     "ones of --fit_split, or a seeded subset of --z_points).", lower_bound=2)
flags.DEFINE_float("cloud_quantile", 0.99, "Chi-square quantile of the inside-the-data-cloud "
                   "test.", lower_bound=0.5, upper_bound=0.999999)
flags_eval.define_checkpoint()
flags_data.define_batch_size(64, "Images per decoder/encoder call.")
flags_eval.define_face_judge(500, "Most images the face judge looks at per sampler setting "
                             "(the setting's first ones) and per calibration set; the judge "
                             "takes about 10-30 ms per 96x96 image on a CPU core.")
flags.adopt_module_key_flags(flags_data)
flags.adopt_module_key_flags(flags_eval)

flags_eval.register_float_list("r_limits", "numbers > 0, e.g. 1,2.5,8", lambda v: v > 0)
flags_eval.register_float_list("attribute_scales", "numbers, e.g. -2,0,2")


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
  needs_data = [s for s in wanted if s in flag_choices.FACE_SAMPLERS]
  if needs_data:
    raise flags.ValidationError(f"--samplers {','.join(needs_data)} needs --data_dir (test "
                                "images); add --data_dir DATA or drop them from --samplers")
  needs_z = [s for s in wanted if s in flag_choices.FITTED_SAMPLERS]
  if needs_z and not f["z_points"]:
    raise flags.ValidationError(f"--samplers {','.join(needs_z)} needs real z-points: add "
                                "--z_points Z.npy or --data_dir DATA")
  return True


flags.register_multi_flags_validator(["samplers", "data_dir", "z_points"], _inputs_allow)

# Recorded in generation.json as given (the report adds the samplers run and the parsed lists).
_RECORDED = ("model_dir", "output_dir", "samplers", "num_images", "num_metric_images",
             "r_limits", "gmm_components", "sharpen", "seed", "attribute", "attribute_scales",
             "interpolation_steps", "interpolation_pairs", "attribute_faces", "z_points",
             "data_dir", "fit_split", "max_fit_images", "cloud_quantile", "checkpoint",
             "batch_size", "face_judge", "face_judge_images")
_OPTIONS = ("model_dir", "num_images", "num_metric_images", "gmm_components", "seed",
            "attribute", "interpolation_steps", "interpolation_pairs", "attribute_faces",
            "z_points", "data_dir", "fit_split", "max_fit_images", "cloud_quantile",
            "checkpoint", "batch_size", "face_judge", "face_judge_images")


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  # Loads TensorFlow: imported once the flags are good (docs/ARCHITECTURE.md, Imports).
  from evaluation import generation  # pylint: disable=g-import-not-at-top
  options = generation.Options(
      **flags_eval.flag_values(_OPTIONS),
      samplers=tuple(FLAGS.samplers) if FLAGS.samplers else None,
      r_limits=flags_eval.parse_floats(FLAGS.r_limits),
      sharpen=flags_eval.parse_floats(FLAGS.sharpen),
      attribute_scales=flags_eval.parse_floats(FLAGS.attribute_scales))
  # Locked before anything is written into it, until the report is complete.
  with (locking.output_dir(FLAGS.output_dir, "generate", "--output_dir"),
        flags_eval.flag_errors()):
    report, files = generation.run(options, flags=flags_eval.flag_values(_RECORDED))
    outputs.write_report(FLAGS.output_dir, "generation.json", report, files)
  logging.info("wrote %d grids and generation.json to %s", len(files), FLAGS.output_dir)


def run():
  _cli.run(main, required=["model_dir", "output_dir"])


if __name__ == "__main__":
  run()
