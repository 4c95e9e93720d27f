"""Face figures of image sets against real photos, with 95 % intervals.

    python -m tools.judge_faces --images=A[,B,...] --reference=R --output_json=J

Each of A, B, R is a folder of .png/.jpg files (any size) or a uint8 .npy [N, H, W, 3]. The
judge (evaluation.face_judge, MTCNN) scores every image, and J holds per set, keyed by the path
as given: num_images, face_rate, detection, face_score, fd_face and landmark_error, each with
its bootstrap ci95 (evaluation.face_figures defines them), measured against the even rows of R;
the calibration (R's odd rows as they are, blurred, R's mean face, noise); the judge's
description and versions; the inputs' sha256, seed and command line. Compare FD-face between
sets of equal size.
"""

import os

from absl import flags
from absl import logging

from data_pipeline import locking
from data_pipeline import provenance
from evaluation import face_figures
from evaluation import face_judge
from evaluation import image_sets
from evaluation.errors import EvaluationError
from tools import _cli
from tools import flags_data

FLAGS = flags.FLAGS
MIN_REFERENCE = 8  # 4 reference photos (the realism score's 3 neighbours + 1), 4 judged.

flags.DEFINE_list("images", None, "Image sets to judge: folders of .png/.jpg files or uint8 "
                  ".npy arrays [N, H, W, 3], comma-separated.")
flags.DEFINE_string("reference", None, "Real photos (a folder or .npy, as --images), at least "
                    "8: the even rows are the reference, the odd ones the calibration's.")
flags.DEFINE_string("output_json", None, "The report (its folder is created if needed).")
flags.DEFINE_bool("calibration", True, "Also judge the calibration sets (real, blurred, mean "
                  "face, noise), which every figure is read against.")
flags_data.define_seed("Seed of the bootstrap resampling and the calibration's noise.")
flags.register_validator("images", lambda paths: paths is None or (paths and all(paths)),
                         message="--images needs one or more paths, comma-separated")


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  with locking.output_dirs("judge_faces", [locking.file_folder(FLAGS.output_json,
                                                               "--output_json")]):
    sets, inputs = {}, {}
    for path in FLAGS.images:
      sets[path], inputs[path] = image_sets.load(path, "--images")
    reference, inputs[FLAGS.reference] = image_sets.load(FLAGS.reference, "--reference")
    if len(reference) < MIN_REFERENCE:
      raise EvaluationError(f"--reference {FLAGS.reference} has {len(reference)} images; it "
                            f"needs at least {MIN_REFERENCE} (its even rows are the reference, "
                            "its odd rows the calibration's real set)")
    judge = face_judge.shared()
    try:
      report = face_figures.judge_sets(judge, sets, reference, FLAGS.seed, FLAGS.calibration)
    except EvaluationError as error:
      raise EvaluationError(f"--reference {FLAGS.reference}: {error}") from None
    report["reference"] = FLAGS.reference
    report["provenance"] = provenance.describe_run(FLAGS.seed, inputs)
    stem = os.path.splitext(FLAGS.output_json)[0]
    _cli.write_flagfile(f"{stem}.flags.txt")
    provenance.atomic_write_json(FLAGS.output_json, report)
  for path, figures in report["sets"].items():
    logging.info("%s: %d images, face rate %.2f, face score %s, FD-face %s", path,
                 figures["num_images"], figures["face_rate"],
                 face_figures.format_interval(figures["face_score"], "mean"),
                 face_figures.format_interval(figures["fd_face"], "value"))
  logging.info("wrote %s (reference: %d of %s's images)", FLAGS.output_json,
               report["reference_images"], FLAGS.reference)


def run():
  _cli.run(main, required=["images", "reference", "output_json"])


if __name__ == "__main__":
  run()
