"""Encodes a split of a prepared data dir into z-points: N x z_dim float32 in a .npy file.

    python -m tools.encode --model_dir=RUN --data_dir=DATA --split=train --output=Z.npy

Writes, all or nothing: Z.npy (row k = the split's k-th image in file order; the mean of q(z|x)
for a VAE; memory-mapped while written), Z.ids.npy (the CelebA file names), Z.log_var.npy (a
VAE's log-variances, --with_log_var) and Z.json (inputs with sha256, split, count, versions).
With --projector_dir=DIR, also TensorBoard's embedding projector of the first
--projector_points z-points as faces (`tensorboard --logdir DIR`). An existing Z.npy is
replaced; its folder (and DIR) is locked while written.
"""

from absl import flags
from absl import logging

from data_pipeline import locking
from evaluation import encoding
from tools import _cli
from tools import flags_data
from tools import flags_eval

FLAGS = flags.FLAGS

flags_eval.define_model_dir()
flags_data.define_data_dir()
flags.DEFINE_string("output", None, "Path of the z-point file to write; must end in .npy.")
flags_data.define_split("Split to encode.")
flags_data.define_max_images("Encode only the split's first N images (default: all).")
flags_data.define_batch_size(256, "Images per encoder call.")
flags.DEFINE_bool("with_log_var", False, "VAE only: also write Z.log_var.npy.")
flags_eval.define_checkpoint()
flags.DEFINE_string("projector_dir", None, "Also write TensorBoard's embedding projector of the "
                    "first --projector_points z-points here (tensorboard --logdir DIR).")
flags.DEFINE_integer("projector_points", 1000, "Z-points in the projector: the split's first N "
                     "(at most what one sprite holds at --projector_thumbnail).", lower_bound=1)
flags.DEFINE_integer("projector_thumbnail", 48, "Side of each face in the projector's sprite, "
                     "in pixels.", lower_bound=1)
flags.register_validator("output", lambda path: path is None or path.endswith(".npy"),
                         message="--output must name a .npy file, e.g. --output=Z.npy")


def _projector_fits(f):
  problem = encoding.projector_problem(f["projector_points"], f["projector_thumbnail"])
  if problem:
    raise flags.ValidationError(problem)
  return True


flags.register_multi_flags_validator(["projector_points", "projector_thumbnail"],
                                     _projector_fits)
flags.adopt_module_key_flags(flags_data)
flags.adopt_module_key_flags(flags_eval)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  options = encoding.Options(
      model_dir=FLAGS.model_dir, data_dir=FLAGS.data_dir, output=FLAGS.output, split=FLAGS.split,
      max_images=FLAGS.max_images, batch_size=FLAGS.batch_size,
      with_log_var=FLAGS.with_log_var, checkpoint=FLAGS.checkpoint,
      projector_dir=FLAGS.projector_dir, projector_points=FLAGS.projector_points,
      projector_thumbnail=FLAGS.projector_thumbnail)
  # The Z files' folder (and the projector's) is locked while they are written: two encodes
  # into one folder refuse each other instead of replacing each other's files.
  folders = [locking.file_folder(FLAGS.output, "--output")]
  if FLAGS.projector_dir:
    folders.append((FLAGS.projector_dir, "--projector_dir", None))
  with locking.output_dirs("encode", folders), flags_eval.flag_errors():
    record = encoding.encode(options)
  logging.info("wrote %d x %d z-points of %s's %s split to %s", record["num_vectors"],
               record["dim"], FLAGS.data_dir, FLAGS.split, FLAGS.output)
  if record["projector"]:
    logging.info("wrote the projector of the first %d z-points to %s: tensorboard --logdir %s",
                 record["projector"]["num_points"], FLAGS.projector_dir, FLAGS.projector_dir)


def run():
  _cli.run(main, required=["model_dir", "data_dir", "output"])


if __name__ == "__main__":
  run()
