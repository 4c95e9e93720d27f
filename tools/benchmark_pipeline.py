"""Benchmarks the ways of feeding images: the classic in-RAM recipe vs streaming shards.

    python -m tools.benchmark_pipeline --data_dir=/data/celeba96 --output_json=bench.json

Feeds the first N training images of --data_dir (N per --sizes) by each of --methods
(classic_flow, classic_tfdata, stream_raw, stream_png, stream_jpeg, jpeg_ceiling, keras_folder,
tfds_jpeg), each method and size in a fresh child process so that each peak RSS is its own. Also
times preparation, train steps fed from the shards vs a constant batch, and fit epochs vs bare
steps per --train_presets. Writes --output_json, <stem>.flags.txt and, with --output_markdown,
the tables. The classic methods hold the whole float32 array (110,592 bytes per 96x96 image):
give them the RAM, or lower --sizes. docs/benchmarks/README.md describes every method.
"""

from absl import flags

from benchmarks import pipeline
from benchmarks import pipeline_methods
from benchmarks import training
from modeling import config as config_lib
from modeling import flag_choices
from tools import _cli
from tools import flags_benchmark
from tools import flags_data
from tools import outputs

FLAGS = flags.FLAGS

# Pure Python (no TensorFlow), so the flags below can name their choices. benchmarks.pipeline
# starts no TensorFlow either (its children do), which keeps this process's own memory out of
# the numbers.
METHODS = pipeline_methods.METHODS
ENCODINGS = flag_choices.ENCODINGS

flags_data.define_data_dir("Prepared data dir (tools.prepare_data) whose training images are "
                           "fed; it needs at least max(--sizes) of them.")
flags_benchmark.define_output_json("pipeline.json")
flags_benchmark.define_work_dir("the shards of the other encodings, the preparation timing "
                                "and the children's logs", "<output_json without .json>_work "
                                "beside the report")
flags.DEFINE_list("sizes", ["10000", "40000"], "Dataset sizes N (comma list): each method is "
                  "measured on the first N training images. Two or more sizes also give the "
                  "memory growth per image.")
flags.DEFINE_list("methods", list(METHODS), f"Feeding methods (comma list of "
                  f"{', '.join(METHODS)}).")
flags.DEFINE_string("source_dir", None, "CelebA folder that --data_dir was prepared from, to "
                    "prepare the other encodings; default: the folder recorded in its manifest.")
flags_data.define_batch_size(128, "Images per batch.")
flags.DEFINE_integer("num_batches", 50, "Batches timed per method and size.", lower_bound=1)
flags.DEFINE_integer("warmup_batches", 5, "Batches drawn before the clock starts (fills "
                     "buffers and traces).", lower_bound=0)
flags_data.define_shuffle_buffer("Shuffle buffer (records) of the tf.data methods.")
flags_data.define_seed("Seed of every shuffle and of the training check.")
flags.DEFINE_integer("prepare_images", 10000, "Images prepared per timing run of the writer "
                     "(each of --prepare_encodings, with 1 and with --prepare_workers workers); "
                     "0 skips the timing. Fewer than a few thousand mostly time the worker "
                     "pool's start-up.", lower_bound=0)
flags.DEFINE_list("prepare_encodings", list(ENCODINGS), f"Encodings timed in the preparation "
                  f"(comma list of {', '.join(ENCODINGS)}).")
flags.DEFINE_integer("prepare_workers", None, "Worker processes of the writer (the timing's "
                     "'all workers' run and the preparation of missing encodings); default: "
                     "all cores.", lower_bound=1)
flags.DEFINE_enum("train_preset", "vae_fact5", sorted(config_lib.PRESETS), "Model preset of "
                  "the training check (train steps fed from the shards vs a constant batch).")
flags.DEFINE_integer("train_steps", 20, "Timed train steps per feeding mode; 0 skips the "
                     "training check.", lower_bound=0)
flags.DEFINE_integer("train_warmup_steps", 2, "Train steps per mode before timing (the first "
                     "one traces the step); also the bare steps' warm-up of --train_presets.",
                     lower_bound=1)
flags_benchmark.define_fit_flags(
    sorted(config_lib.PRESETS), training.PRESETS,
    ", ".join(f"{k} {v}" for k, v in training.PRESET_IMAGES.items()))
flags_benchmark.define_child_timeout(3600.0, "a child process (one method at one size, the "
                                     "preparation, a training check)")
flags.DEFINE_string("output_markdown", None, "Also write the Markdown tables to this file.")
flags_benchmark.register_file_path("output_markdown", "pipeline.md")
flags.adopt_module_key_flags(flags_benchmark)
flags.adopt_module_key_flags(flags_data)


def _ints(values):
  try:
    return tuple(int(v) for v in values)
  except (TypeError, ValueError):
    return None


def _check_sizes(values):
  sizes = _ints(values or [])
  if not sizes or min(sizes) < 1:
    raise flags.ValidationError(f"--sizes needs a comma list of positive integers, e.g. "
                                f"10000,40000; got {','.join(values or []) or 'nothing'}")
  if len(set(sizes)) != len(sizes):
    raise flags.ValidationError(f"--sizes lists a size twice: {','.join(values)}")
  return True


def _choices(name, allowed):
  def check(values):
    unknown = [v for v in values or [] if v not in allowed]
    if unknown or not values:
      what = f"unknown value(s) {', '.join(unknown)}" if unknown else "nothing given"
      raise flags.ValidationError(f"--{name}: {what}; choose from {', '.join(allowed)}")
    if len(set(values)) != len(values):
      raise flags.ValidationError(f"--{name} lists a value twice: {','.join(values)}")
    return True
  flags.register_validator(name, check)


def _sizes_hold_a_batch(f):
  sizes = _ints(f["sizes"] or [])
  if sizes and f["batch_size"] and min(sizes) < f["batch_size"]:
    raise flags.ValidationError(f"--sizes {min(sizes)} is smaller than --batch_size "
                                f"{f['batch_size']}; every size must hold at least one batch")
  return True


flags.register_validator("sizes", _check_sizes)
_choices("methods", METHODS)
_choices("prepare_encodings", ENCODINGS)
flags.register_multi_flags_validator(["sizes", "batch_size"], _sizes_hold_a_batch)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  options = pipeline.Options(
      data_dir=FLAGS.data_dir,
      work_dir=FLAGS.work_dir or pipeline.default_work_dir(FLAGS.output_json),
      sizes=_ints(FLAGS.sizes), methods=tuple(FLAGS.methods), source_dir=FLAGS.source_dir,
      batch_size=FLAGS.batch_size, num_batches=FLAGS.num_batches,
      warmup_batches=FLAGS.warmup_batches, shuffle_buffer=FLAGS.shuffle_buffer, seed=FLAGS.seed,
      prepare_images=FLAGS.prepare_images, prepare_encodings=tuple(FLAGS.prepare_encodings),
      prepare_workers=FLAGS.prepare_workers, train_preset=FLAGS.train_preset,
      train_steps=FLAGS.train_steps, train_warmup_steps=FLAGS.train_warmup_steps,
      train_presets=tuple(FLAGS.train_presets), train_images=FLAGS.train_images,
      train_validation_steps=FLAGS.train_validation_steps, child_timeout_s=FLAGS.child_timeout_s)
  with outputs.benchmark_locks("benchmark_pipeline", FLAGS.output_json, options.work_dir,
                               FLAGS.output_markdown):
    report = pipeline.run_benchmark(options)
    outputs.write_benchmark(FLAGS.output_json, report, FLAGS.output_markdown)


def run():
  _cli.run(main, required=["data_dir", "output_json"])


if __name__ == "__main__":
  run()
