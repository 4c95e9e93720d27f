"""Benchmarks the face judge: seconds to judge --num_images images and to give their figures.

    python -m tools.benchmark_face_judge --output_json=docs/benchmarks/face_judge.json

Judges --images (a folder of .png/.jpg or a uint8 .npy; default: synthetic faces drawn in
memory), then gives the face figures of the second half against the first. Writes
--output_json (machine, inputs, seconds per stage, images/s, the target with pass/fail, the
Markdown table under "table"), <stem>.flags.txt beside it, and prints the table.
"""

from absl import flags

from tools import _cli
from tools import flags_benchmark
from tools import flags_data
from tools import outputs

FLAGS = flags.FLAGS

flags_benchmark.define_output_json("face_judge.json")
flags.DEFINE_string("images", None, "Images to judge (a folder or .npy); default: synthetic "
                    "faces.")
flags.DEFINE_integer("num_images", 1000, "Images judged (the first of --images).",
                     lower_bound=16)
flags_data.define_seed("Seed of the synthetic faces and of the bootstrap.")
flags.DEFINE_string("output_markdown", None, "Also write the table to this file.")
flags.adopt_module_key_flags(flags_benchmark)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  # Local: its synthetic faces (NumPy, PIL) would double --helpshort's time and memory.
  from benchmarks import face_judge
  options = face_judge.Options(images=FLAGS.images, num_images=FLAGS.num_images,
                               seed=FLAGS.seed)
  with outputs.benchmark_locks("benchmark_face_judge", FLAGS.output_json,
                               output_markdown=FLAGS.output_markdown):
    outputs.write_benchmark(FLAGS.output_json, face_judge.run_benchmark(options),
                            FLAGS.output_markdown)


def run():
  _cli.run(main, required=["output_json"])


if __name__ == "__main__":
  run()
