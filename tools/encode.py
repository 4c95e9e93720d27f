"""Encodes a split of a prepared data dir into z-points: N x z_dim float32 in a .npy file.

    python -m tools.encode --model_dir=RUN --data_dir=DATA --split=train --output=Z.npy

Writes, all or nothing (an interrupted run leaves no file that looks finished):
  Z.npy          [N, z_dim] float32 z-points, row k = the split's k-th image in file order
                 (the mean of q(z|x) for a VAE); memory-mapped while written, so RAM does not
                 grow with N.
  Z.ids.npy      [N] the CelebA file names of the rows.
  Z.log_var.npy  [N, z_dim] the VAE's log-variances (--with_log_var), for the KL per dimension.
  Z.json         the model and data files with sha256, split, count, versions, command line.
An existing Z.npy is replaced. Z.npy's folder is locked while they are written (FOLDER/.lock,
removed at the end): a second tool writing there is refused with one line naming this one.
"""

from absl import flags
from absl import logging

from tools import _cli

FLAGS = flags.FLAGS

SPLITS = ("train", "validation", "test")

flags.DEFINE_string("model_dir", None, "Run dir written by tools.train_ae or tools.train_vae.")
flags.DEFINE_string("data_dir", None, "Prepared data dir (tools.prepare_data).")
flags.DEFINE_string("output", None, "Path of the z-point file to write; must end in .npy.")
flags.DEFINE_enum("split", "train", SPLITS, "Split to encode.")
flags.DEFINE_integer("max_images", None, "Encode only the split's first N images (default: "
                     "all).", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Images per encoder call.", lower_bound=1)
flags.DEFINE_bool("with_log_var", False, "VAE only: also write Z.log_var.npy.")
flags.DEFINE_enum("checkpoint", "final", ("final", "best"), "Model file of the run: final "
                  "(model.keras) or best (best.keras, lowest validation loss).")
flags.register_validator("output", lambda path: path is None or path.endswith(".npy"),
                         message="--output must name a .npy file, e.g. --output=Z.npy")


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  from data_pipeline import locking  # pylint: disable=g-import-not-at-top
  # The Z files' folder is locked while they are written: two encodes into one folder refuse
  # each other instead of replacing each other's files.
  with locking.output_dirs("encode", [locking.file_folder(FLAGS.output, "--output")]):
    _encode()


def _encode():
  # Imported here so that --help and flag errors answer without loading TensorFlow.
  # pylint: disable=g-import-not-at-top
  from data_pipeline.manifest import read_manifest
  from evaluation import encoding
  from modeling import run_dir
  # pylint: enable=g-import-not-at-top
  read_manifest(FLAGS.data_dir)  # A wrong --data_dir is named before the model loads.
  run = run_dir.load_run(FLAGS.model_dir, FLAGS.checkpoint)
  record = encoding.encode_split(
      run, FLAGS.data_dir, FLAGS.split, FLAGS.output, max_images=FLAGS.max_images,
      batch_size=FLAGS.batch_size, with_log_var=FLAGS.with_log_var,
      checkpoint=FLAGS.checkpoint)
  logging.info("wrote %d x %d z-points of %s's %s split to %s", record["num_vectors"],
               record["dim"], FLAGS.data_dir, FLAGS.split, FLAGS.output)


def run():
  _cli.run(main, required=["model_dir", "data_dir", "output"])


if __name__ == "__main__":
  run()
