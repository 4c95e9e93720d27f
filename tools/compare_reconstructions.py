r"""Compares how well models (e.g. an AE and a VAE) reconstruct the same images.

    python -m tools.compare_reconstructions --model_dirs=AE_RUN,VAE_RUN --data_dir=DATA \
        --output_dir=REC [--image=me.jpg] [--sharpen=1,7]

Writes reconstructions.png (the first --num_images of --split: original | each model's
reconstruction, repeated per --sharpen factor), own_images.png (the same for every --image, a
photo of any size run through the data's own transform), reconstruction.json (per model: PSNR,
SSIM and the training loss over the split, also sharpened; face figures of its reconstructions
by an independent judge with 95 % intervals and the judge's calibration; inputs, seed,
versions) and flags.txt.
"""

import os

from absl import flags
from absl import logging

from data_pipeline import locking
from evaluation import face_figures
from tools import _cli
from tools import flags_data
from tools import flags_eval
from tools import outputs

FLAGS = flags.FLAGS

flags.DEFINE_list("model_dirs", None, "Run dirs to compare (comma list), e.g. AE_RUN,VAE_RUN; "
                  "they must take the data's image size.")
flags_data.define_data_dir()
flags_eval.define_output_dir("the grids and reconstruction.json")
flags_data.define_split("Split to reconstruct.", default="test")
flags.DEFINE_integer("num_images", 8, "Rows of the grid (the split's first images).",
                     lower_bound=1, upper_bound=256)
flags_data.define_max_images("Images used for the statistics: the split's first ones; "
                             "default: the whole split.")
flags_eval.define_sharpen(["1"], "PIL sharpness factors of the reconstructions shown and "
                          "measured (1 = unchanged; the study's 7 is strong).")
flags.DEFINE_multi_string("image", [], "Your own photo (any size; repeat the flag for more), "
                          "cropped and resized like the data and reconstructed by each model.")
flags_eval.define_checkpoint("each run")
flags_data.define_seed("Seed of Keras (the reconstructions use no randomness: a VAE is "
                       "evaluated at its mean).")
flags_data.define_batch_size(64, "Images per model call.")
flags_eval.define_face_judge(1000, "Most images whose reconstructions the face judge looks "
                             "at (a --seed seeded subset of the measured ones, the same for "
                             "every model and the originals); the judge takes about 10-30 ms "
                             "per 96x96 image on a CPU core.")
flags.register_validator("model_dirs", lambda dirs: dirs is None or (
    bool(dirs) and len({os.path.abspath(d) for d in dirs}) == len(dirs)),
                         message="--model_dirs needs distinct run dirs, e.g. AE_RUN,VAE_RUN")
flags.adopt_module_key_flags(flags_data)
flags.adopt_module_key_flags(flags_eval)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  # Loads TensorFlow: imported once the flags are good (docs/ARCHITECTURE.md, Imports).
  from evaluation import reconstruction  # pylint: disable=g-import-not-at-top
  options = reconstruction.Options(
      model_dirs=tuple(FLAGS.model_dirs), data_dir=FLAGS.data_dir, split=FLAGS.split,
      num_images=FLAGS.num_images, max_images=FLAGS.max_images,
      sharpen=flags_eval.parse_floats(FLAGS.sharpen), images=tuple(FLAGS.image),
      checkpoint=FLAGS.checkpoint, seed=FLAGS.seed, batch_size=FLAGS.batch_size,
      face_judge=FLAGS.face_judge, face_judge_images=FLAGS.face_judge_images)
  # Locked before anything is written into it, until the report is complete.
  with (locking.output_dir(FLAGS.output_dir, "compare_reconstructions", "--output_dir"),
        flags_eval.flag_errors()):
    report, files = reconstruction.compare(options)
    outputs.write_report(FLAGS.output_dir, "reconstruction.json", report, files)
  for name, stats in report["models"].items():
    logging.info("%s (%s): PSNR %.2f +- %.2f dB, SSIM %.3f +- %.3f, %s loss %.1f per image, "
                 "face score %s", name, stats["kind"], stats["psnr"]["mean"] or float("inf"),
                 stats["psnr"]["std"] or 0.0, stats["ssim"]["mean"], stats["ssim"]["std"],
                 stats["loss"], stats["reconstruction_loss"]["mean"],
                 face_figures.format_interval((stats["face"] or {}).get("face_score"), "mean",
                                              ".2f"))
  logging.info("wrote %s and reconstruction.json to %s", ", ".join(files), FLAGS.output_dir)


def run():
  _cli.run(main, required=["model_dirs", "data_dir", "output_dir"])


if __name__ == "__main__":
  run()
