r"""The study trained to convergence: the demo's chain over seeds, and the KL-factor sweep.

    python -m tools.study --celeba_dir /data/celeba --workspace ws_study \
        --seeds 0,1 --kl_factors 0.5,1,2,5,10 --max_epochs 40 --patience 3
    python -m tools.study --data_dir data96 --workspace ws_study --time_budget_minutes 120

For every seed, the demo's chain (workflows.demo), each model trained with early stopping on
its validation loss; then the VAE at every --kl_factors value (first seed). The report
(WORKSPACE/study.md, study.json, tradeoff.png; workflows/study.py) gives each run's
convergence, the claims per seed and over seeds, and the sweep. A complete step is skipped, so a
study stopped by --time_budget_minutes or killed resumes where it stopped. WORKSPACE is locked.
"""

import os
import sys
import time

from absl import flags

from data_pipeline import locking
from tools import _cli
from tools import flags_data
from workflows import demo
from workflows import study

FLAGS = flags.FLAGS

flags.DEFINE_string("workspace", None, "Folder that receives every output of the study.")
flags.DEFINE_string("data_dir", None, "Prepared shards (tools.prepare_data) to train on.")
flags.DEFINE_string("celeba_dir", None, "Or a CelebA download to prepare into "
                    "WORKSPACE/data first (see prepare_data --source_dir).")
flags.DEFINE_integer("num_images", 0, "With --celeba_dir: the images to prepare (0 = all).",
                     lower_bound=0)
flags.DEFINE_integer("image_size", 96, "With --celeba_dir: side of the prepared images.",
                     lower_bound=8)
flags.DEFINE_integer("max_epochs", 40, "Most epochs of each model.", lower_bound=1)
flags.DEFINE_integer("patience", 3, "Early stopping: epochs without improvement of the "
                     "validation loss by --min_delta after which a model stops.", lower_bound=1)
flags.DEFINE_float("min_delta", 0.002, "Early stopping: the relative improvement that counts "
                   "(0.002: 0.2 percent below the best so far).", lower_bound=0.0,
                   upper_bound=0.5)
flags.DEFINE_integer("min_epochs", 1, "Early stopping: the fewest epochs of each model.",
                     lower_bound=1)
flags.DEFINE_list("seeds", ["0"], "Training seeds; the demo's chain runs once per seed.")
flags.DEFINE_list("kl_factors", ["1", "5", "20"], "KL factors of the trade-off sweep (the "
                  "VAE trained at each, first seed; 5 is the study's and reuses that run).")
flags.DEFINE_float("time_budget_minutes", None, "Start no epoch after this many minutes of the "
                   "study (the models then stand where they are, and the report says so); "
                   "rerun to train on.", lower_bound=0.0)
flags_data.define_batch_size(64, "Global training batch size.")
flags.DEFINE_integer("num_metric_images", 200, "Samples the face judge looks at per sampler "
                     "setting (the intervals narrow with more).", lower_bound=2)
flags.DEFINE_bool("force", False, "Rerun every step even when its outputs are complete.")


def _one_source(values):
  return (values["data_dir"] is None) != (values["celeba_dir"] is None)


flags.register_multi_flags_validator(
    ["data_dir", "celeba_dir"], _one_source,
    message="give exactly one of --data_dir (prepared shards) and --celeba_dir (a CelebA "
    "download)")


def _distinct_numbers(kind):
  """A validator: the list parses as `kind` values, distinct and non-negative."""
  def check(values):
    try:
      parsed = [kind(v) for v in values]
    except ValueError:
      return False
    return bool(parsed) and len(set(parsed)) == len(parsed) and min(parsed) >= 0
  return check


flags.register_validator("seeds", _distinct_numbers(int), message="--seeds must be a list of "
                         "numbers, distinct non-negative integers such as 0,1")
flags.register_validator("kl_factors", _distinct_numbers(float), message="--kl_factors must be "
                         "a list of numbers, distinct and non-negative such as 1,5,20")


def main(argv):
  del argv
  for name in ("data_dir", "celeba_dir"):
    if FLAGS[name].value and not os.path.exists(FLAGS[name].value):
      raise _cli.FlagError(f"--{name}={FLAGS[name].value} does not exist")
  workspace = os.path.abspath(FLAGS.workspace)
  plan = study.Plan(
      workspace=workspace, celeba_dir=FLAGS.celeba_dir,
      data_dir=os.path.abspath(FLAGS.data_dir) if FLAGS.data_dir else None,
      num_images=FLAGS.num_images, image_size=FLAGS.image_size,
      max_epochs=FLAGS.max_epochs, patience=FLAGS.patience, min_delta=FLAGS.min_delta,
      seeds=tuple(int(seed) for seed in FLAGS.seeds),
      kl_factors=tuple(float(factor) for factor in FLAGS.kl_factors),
      batch_size=FLAGS.batch_size, time_budget_minutes=FLAGS.time_budget_minutes,
      metric_images=FLAGS.num_metric_images, min_epochs=FLAGS.min_epochs)
  deadline = (None if plan.time_budget_minutes is None
              else time.time() + 60.0 * plan.time_budget_minutes)
  with locking.output_dir(workspace, "study", "--workspace"):
    results = []
    for group in study.step_groups(plan, deadline):
      results += demo.run_steps(group, workspace, sys.executable, force=FLAGS.force,
                                tool="study")
    path = study.write(plan, results, deadline)
  print(f"study complete: {path}")


def run():
  _cli.run(main, required=["workspace"])


if __name__ == "__main__":
  run()
