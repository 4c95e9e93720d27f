r"""Benchmarks mixed precision: float32 vs bf16 training speed and test-split quality.

    python -m tools.benchmark_precision --data_dir=/data/celeba96 \
        --output_json=docs/benchmarks/precision.json

Trains every --presets preset once per --precisions mode from the same seed, each in a fresh
child process, measures each saved model's test PSNR/SSIM and its steady train step, and says
what `--mixed_precision auto` resolves to here. The target: bf16's test PSNR within 0.2 dB of
float32's, per preset. Where the CPU has no native bf16 a bf16 step is emulated and much
slower: keep --train_images small there. Writes --output_json, <stem>.flags.txt and, with
--output_markdown, the table. See benchmarks/precision.py.
"""

from absl import flags

# Pure Python: the children load TensorFlow, so --help and flag errors answer at once.
from benchmarks import precision
from evaluation.errors import EvaluationError
from modeling import config as config_lib
from modeling import flag_choices
from tools import _cli
from tools import flags_benchmark
from tools import flags_data
from tools import outputs

FLAGS = flags.FLAGS

flags_data.define_data_dir("Raw-encoded data dir (tools.prepare_data) with train and test "
                           "images, e.g. the real sample prepared at 96x96.")
flags_benchmark.define_output_json("precision.json")
flags_benchmark.define_work_dir("the run dirs and the children's logs, kept afterwards",
                                "a temporary folder, removed at the end")
flags.DEFINE_list("presets", ["ae_z256", "vae_fact5"], "Model presets (comma list of "
                  f"{', '.join(sorted(config_lib.PRESETS))}).")
flags.DEFINE_list("precisions", ["off", "bf16"], "Mixed-precision modes compared, float32 "
                  f"(off) first (comma list of {', '.join(flag_choices.PRECISION_POLICIES)}).")
flags.DEFINE_integer("epochs", 3, "Epochs of every run.", lower_bound=1)
flags.DEFINE_integer("train_images", 320, "Training images per epoch (the split's first ones, "
                     "whole batches).", lower_bound=1)
flags_data.define_batch_size(32, "Global training batch size.")
flags.DEFINE_integer("test_images", 450, "Test images measured: the split's first ones, at most "
                     "the whole split (the report says how many).", lower_bound=1)
flags_data.define_seed("Seed of every run's weights, data order and sampling noise.")
flags_data.define_shuffle_buffer("Records in the shuffle buffer.")
flags_benchmark.define_child_timeout(7200.0, "one run's child process")
flags.DEFINE_string("output_markdown", None, "Also write the Markdown table to this file.")
flags_benchmark.register_file_path("output_markdown", "precision.md")
flags.adopt_module_key_flags(flags_benchmark)
flags.adopt_module_key_flags(flags_data)


def _check_lists(values):
  try:
    precision.check_choices(values["presets"] or [], values["precisions"] or [],
                            values["train_images"], values["batch_size"])
  except EvaluationError as error:
    raise flags.ValidationError(str(error)) from None
  return True


flags.register_multi_flags_validator(["presets", "precisions", "train_images", "batch_size"],
                                     _check_lists)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  options = precision.Options(
      data_dir=FLAGS.data_dir, presets=tuple(FLAGS.presets),
      precisions=tuple(FLAGS.precisions), epochs=FLAGS.epochs,
      train_images=FLAGS.train_images, batch_size=FLAGS.batch_size,
      test_images=FLAGS.test_images, seed=FLAGS.seed, shuffle_buffer=FLAGS.shuffle_buffer,
      work_dir=FLAGS.work_dir, child_timeout_s=FLAGS.child_timeout_s)
  with outputs.benchmark_locks("benchmark_precision", FLAGS.output_json, FLAGS.work_dir,
                               FLAGS.output_markdown):
    report = precision.run_benchmark(options)
    outputs.write_benchmark(FLAGS.output_json, report, FLAGS.output_markdown)


def run():
  _cli.run(main, required=["data_dir", "output_json"])


if __name__ == "__main__":
  run()
