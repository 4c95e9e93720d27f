"""Writes the built-in synthetic CelebA: cartoon faces in CelebA's folder layout.

    python -m tools.make_synthetic_faces --output_dir=/data/synthetic --num_images=3000 --seed=0

The output reads like a real CelebA folder (img_align_celeba/*.jpg, list_eval_partition.txt,
list_attr_celeba.txt with the ground-truth attributes, list_landmarks_align_celeba.txt), so
`tools.prepare_data --source_dir` takes it unchanged; synthetic.json records the seed, generator
version and counts, and flags.txt the flags. The same seed gives byte-identical files; rerunning
the same command on a complete output does nothing, and on an interrupted one renders only what
is missing. The faces come from data_pipeline/synthetic/ (factors, renderer, folder writer).
"""

import os

from absl import flags
from absl import logging

from data_pipeline import synthetic
from tools import _cli
from tools import flags_data

FLAGS = flags.FLAGS

flags_data.define_output_dir("Directory to write the CelebA-layout folder into (created if "
                             "needed; must be empty or hold synthetic faces of --seed).")
flags.DEFINE_integer("num_images", None, "How many faces to draw (CelebA has 202,599).",
                     lower_bound=1, upper_bound=999_999)
flags_data.define_seed("Random seed; image k depends only on (seed, k).")
flags_data.define_num_workers("Processes that draw faces; default: all cores. The images do "
                              "not depend on it.")
flags_data.define_jpeg_quality("JPEG quality of the images (CelebA's is about 95).")
flags_data.define_overwrite("Redraw every image, also in a non-empty --output_dir that holds "
                            "something else (its img_align_celeba/NNNNNN.jpg are replaced).")
flags.adopt_module_key_flags(flags_data)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  num_workers = FLAGS.num_workers or os.cpu_count() or 1
  summary = synthetic.write_synthetic_celeba(
      FLAGS.output_dir, FLAGS.num_images, seed=FLAGS.seed, num_workers=num_workers,
      jpeg_quality=FLAGS.jpeg_quality, overwrite=FLAGS.overwrite, progress=True,
      on_complete=lambda folder: _cli.write_flagfile(os.path.join(folder, "flags.txt")))
  splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
  logging.info("%s: %d faces (%s); %d drawn now, %.1f s", FLAGS.output_dir,
               summary["num_images"], splits, summary["rendered"], summary["elapsed_s"])


def run():
  _cli.run(main, required=["output_dir", "num_images"])


if __name__ == "__main__":
  run()
