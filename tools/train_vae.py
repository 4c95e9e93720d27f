"""Trains a convolutional Variational Autoencoder on a prepared data dir.

    python -m tools.train_vae --data_dir=/data/celeba96 --model_dir=runs/vae_fact5
    python -m tools.train_vae --data_dir=/data/celeba96 --model_dir=runs/kl2 --kl_factor=2

--preset picks the study's architecture (vae_fact5: KL weighted by 5) and the
architecture flags override single fields. Writes the run dir described in WORKSPACE.md;
rerunning the same command after an interruption resumes from the last backup, and a larger
--epochs continues a finished run. Flags: tools/flags_train.py (python -m tools.train_vae
--helpfull).
"""

from absl import flags

from data_pipeline.manifest import read_manifest
from tools import _cli
from tools import flags_data
from tools import flags_eval
from tools import flags_train

FLAGS = flags.FLAGS

flags_train.define_train_flags("vae")
# --helpshort lists the trainer flags, defined in flags_train and the shared definers.
flags.adopt_module_key_flags(flags_train)
flags.adopt_module_key_flags(flags_data)
flags.adopt_module_key_flags(flags_eval)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  read_manifest(FLAGS.data_dir)  # A wrong --data_dir is named before TensorFlow loads.
  # Loads TensorFlow: imported once the flags are good (docs/ARCHITECTURE.md, Imports).
  from tools import train_common  # pylint: disable=g-import-not-at-top
  train_common.run_training("vae")


def run():
  _cli.run(main, required=["data_dir", "model_dir"])


if __name__ == "__main__":
  run()
