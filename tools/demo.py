"""The main job end to end: synthetic (or real) faces -> shards -> AE + VAE -> evaluation -> report.

    python -m tools.demo --workspace workspace --num_images 2000 --epochs 2
    python -m tools.demo --workspace ws_celeba --celeba_dir /data/celeba --epochs 24 --num_images 0

Each step runs as its own tool process, exactly as a user would type it, and the report lists
those command lines. A step is skipped when its outputs exist and were made by the same command
(recorded in WORKSPACE/.demo/), so rerunning the demo reuses everything that is complete.
While it runs, the workspace is locked (WORKSPACE/.lock): a second demo there is refused.
"""

import os
import sys

from absl import flags

from data_pipeline import locking
from tools import _cli
from tools import flags_data
from workflows import demo

FLAGS = flags.FLAGS

flags.DEFINE_string("workspace", "workspace", "Folder that receives every output (WORKSPACE.md).")
flags.DEFINE_string("celeba_dir", None,
                    "A real CelebA download, a folder or a zip in either site's layout (see "
                    "prepare_data --source_dir); when unset, synthetic faces are generated into "
                    "WORKSPACE/celeba_synthetic.")
flags.DEFINE_integer("num_images", 2000,
                     "Synthetic faces to generate, or with --celeba_dir the images to prepare "
                     "(0 = all).", lower_bound=0)
flags.DEFINE_integer("epochs", 2, "Training epochs of each model.", lower_bound=1)
flags_data.define_batch_size(64, "Global training batch size.")
flags.DEFINE_integer("image_size", 96, "Side of the prepared square images.", lower_bound=8)
flags_data.define_seed("Seed of every step.")
flags.DEFINE_bool("force", False, "Rerun every step even when its outputs are complete.")
flags.DEFINE_bool("upsampling_variant", False, "Also train the VAE with upsampling layers "
                  "instead of Conv2DTranspose and compare their checkerboard artefacts (claim 12 "
                  "of the report; one more training run).")
flags.DEFINE_string("stop_after", None, "Run the chain only up to this step (e.g. train_vae); "
                    "`--stop_after=list` prints the step names.")
flags.adopt_module_key_flags(flags_data)


def _validate_num_images(values):
  return values["celeba_dir"] is not None or values["num_images"] >= 50


flags.register_multi_flags_validator(
    ["celeba_dir", "num_images"], _validate_num_images,
    message="--num_images must be at least 50 for synthetic faces (a split needs images)")


def main(argv):
  del argv
  if FLAGS.celeba_dir and not os.path.exists(FLAGS.celeba_dir):
    raise _cli.FlagError(f"--celeba_dir={FLAGS.celeba_dir} does not exist; point it at the "
                         "CelebA download (a folder, or Kaggle's archive.zip)")
  settings = demo.DemoSettings(
      workspace=os.path.abspath(FLAGS.workspace), celeba_dir=FLAGS.celeba_dir,
      num_images=FLAGS.num_images, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
      image_size=FLAGS.image_size, seed=FLAGS.seed,
      upsampling_variant=FLAGS.upsampling_variant)
  if FLAGS.stop_after == "list":
    print("\n".join(step.name for step in demo.build_steps(settings)))
    return
  try:
    demo.select_steps(settings, FLAGS.stop_after)
  except ValueError as e:
    raise _cli.FlagError(f"--stop_after: {e}") from None
  # A second demo in the same workspace is refused at once: two would run the same steps
  # into the same folders. Each step's tool locks its own output folder inside it as well.
  with locking.output_dir(settings.workspace, "demo", "--workspace"):
    results = demo.run_all(settings, python=sys.executable, force=FLAGS.force,
                           stop_after=FLAGS.stop_after)
    report_path = demo.write_report(settings, results)
  print(f"demo complete: {report_path}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
