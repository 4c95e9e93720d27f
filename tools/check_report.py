"""Checks that a demo's report holds the PSNR/SSIM of every model on a split (used by .ci/run).

    python -m tools.check_report --workspace ws --models ae,vae,ae_z1600 --num_images 450

Prints one line and exits 0 when WORKSPACE/report.md and eval/reconstruction/reconstruction.json
hold every number (workflows.demo_report.missing_numbers); otherwise one error line naming what is
missing, and exits 1.
"""

from absl import flags

from tools import _cli
from tools import flags_data
from workflows import demo_report

FLAGS = flags.FLAGS

flags.DEFINE_string("workspace", None, "The demo's workspace (tools.demo --workspace).")
flags_data.define_split("The split the numbers must be on.", default="test")
flags.DEFINE_list("models", ["ae", "vae"], "The models that need a PSNR and SSIM row.")
flags.DEFINE_integer("num_images", None, "The split's image count the numbers must cover "
                     "(default: any).", lower_bound=1)
flags.adopt_module_key_flags(flags_data)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  found = demo_report.missing_numbers(FLAGS.workspace, FLAGS.split, FLAGS.models,
                                      FLAGS.num_images)
  if found:
    _cli.fail("; ".join(found))
  print(f"{FLAGS.workspace}/report.md holds the {FLAGS.split} split's PSNR and SSIM of "
        f"{','.join(FLAGS.models)}")


def run():
  _cli.run(main, required=["workspace"])


if __name__ == "__main__":
  run()
