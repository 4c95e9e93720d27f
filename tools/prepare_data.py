"""Prepares CelebA (or the synthetic faces) as sharded TFRecords for streaming.

    python -m tools.prepare_data --source_dir=/data/celeba --output_dir=/data/celeba96

Each image is decoded, converted to RGB, cropped to --crop (CelebA's 178x218 coordinates;
default 0,40,178,218), resized to --image_size with PIL LANCZOS and stored as --encoding (raw,
png or jpeg); other sizes follow data_pipeline.transform's rule. Writes shards, manifest.json,
TFDS metadata and flags.txt. Rerunning after an interruption resumes; --overwrite starts over;
the output dir is locked while it runs. Exit codes: 0 done; 1 a problem with the files; 2 a bad
flag (docs/RELIABILITY.md).
"""

import os

from absl import flags
from absl import logging

from data_pipeline import sources
from data_pipeline.errors import DataError
from data_pipeline.manifest import NAME_PATTERN
from data_pipeline.transform import parse_crop_box
from modeling import flag_choices
from tools import _cli
from tools import flags_data

FLAGS = flags.FLAGS

_CROP_DEFAULT = "0,40,178,218"

flags.DEFINE_string("source_dir", None, "A CelebA download: a folder or a zip file in either "
                    "site's layout (img_align_celeba/ or img_align_celeba.zip with "
                    "list_eval_partition.txt, Google Drive's Img/ Anno/ Eval/, Kaggle's "
                    "archive.zip or its CSV files); optional list_attr_celeba and "
                    "identity_CelebA files. Required unless --source=tfds.")
flags_data.define_output_dir("Data dir to write the shards and manifest into.")
flags.DEFINE_enum("source", "celeba_folder", flag_choices.SOURCES, "celeba_folder: --source_dir; "
                  "tfds: a TFDS-prepared celeb_a in --tfds_data_dir.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data dir holding celeb_a (--source=tfds); "
                    "default: TFDS' own default (~/tensorflow_datasets).")
flags.DEFINE_integer("image_size", 96, "Side of the square output images, in pixels.",
                     lower_bound=8, upper_bound=1024)
flags.DEFINE_string("crop", _CROP_DEFAULT, "Crop box left,top,right,bottom in CelebA's 178x218 "
                    "pixel coordinates, applied before resizing. Images of another size: the "
                    "box is scaled onto their largest centred 178:218 region.")
flags.DEFINE_enum("encoding", "raw", flag_choices.ENCODINGS, "Image encoding in the records: "
                  "raw (lossless, fastest to read), png (lossless, ~2x smaller), jpeg (lossy, "
                  "smallest).")
flags_data.define_jpeg_quality("JPEG quality for --encoding=jpeg.")
flags_data.define_num_workers("Worker processes; default: all cores. The output does not "
                              "depend on it.")
flags.DEFINE_float("shard_mb", 64.0, "Target shard size in MiB (TFDS writes 64 MiB to 1 GiB "
                   "shards): a split gets ceil(estimated encoded size / shard_mb) shards, and at "
                   "least min(8, images // 256) so that small splits still spread over workers.")
flags.DEFINE_string("name", "celeba_stream", "Dataset name: the shard files' prefix and the "
                    "TFDS dataset name (snake_case).")
flags_data.define_overwrite("Remove an earlier preparation in --output_dir and start over "
                            "(otherwise a rerun resumes it).")
flags.DEFINE_bool("refuse_duplicates", False, "Fail instead of writing manifest.json when two "
                  "photos have the same bytes (within or across splits; they are always "
                  "counted in the log and listed in manifest.json).")
flags_data.define_max_images("Prepare only this many images: the first ones of each split, in "
                             "proportion to the split sizes (quick runs).")
flags_data.define_progress()
flags.adopt_module_key_flags(flags_data)


def _crop_is_valid(text):
  try:
    parse_crop_box(text)
  except ValueError as error:
    raise flags.ValidationError(str(error)) from None
  return True


def _name_is_valid(name):
  return bool(NAME_PATTERN.match(name or ""))


flags.register_validator("crop", _crop_is_valid)
flags.register_validator("name", _name_is_valid, message="--name must be snake_case: a "
                         "lowercase letter, then lowercase letters, digits or _")
flags.register_validator("shard_mb", lambda value: value is not None and value > 0,
                         message="--shard_mb must be a positive number of MiB")
flags.register_multi_flags_validator(
    ["source", "source_dir"], lambda f: f["source"] != "celeba_folder" or bool(f["source_dir"]),
    message="--source_dir is required (a CelebA folder) unless --source=tfds")
flags.register_multi_flags_validator(
    ["source", "tfds_data_dir"], lambda f: f["source"] == "tfds" or not f["tfds_data_dir"],
    message="--tfds_data_dir is only used with --source=tfds")


def _write_flagfile(output_dir):
  """flags.txt into the complete data dir, while prepare still holds its lock."""
  flagfile = os.path.join(output_dir, "flags.txt")
  try:
    _cli.write_flagfile(flagfile)
  except OSError as error:
    # The data dir is complete already (its manifest is written); only the flagfile is missing.
    raise DataError(f"cannot write {flagfile} ({error.strerror or error}); the data itself is "
                    "complete: free space or make --output_dir writable, then rerun the same "
                    "command to write it") from None


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  if FLAGS.source_dir and os.path.abspath(FLAGS.source_dir) == os.path.abspath(
      FLAGS.output_dir):
    raise _cli.FlagError("--output_dir must differ from --source_dir")
  source = sources.open_source(FLAGS.source, FLAGS.source_dir, FLAGS.tfds_data_dir)
  for line in getattr(source, "summary_lines", list)():
    logging.info("%s", line)
  # Loads TensorFlow: imported once the flags are good (docs/ARCHITECTURE.md, Imports).
  from data_pipeline import writer  # pylint: disable=g-import-not-at-top
  manifest = writer.prepare(
      source, FLAGS.output_dir, name=FLAGS.name, image_size=FLAGS.image_size,
      crop_box=parse_crop_box(FLAGS.crop), encoding=FLAGS.encoding,
      jpeg_quality=FLAGS.jpeg_quality, num_workers=FLAGS.num_workers, shard_mb=FLAGS.shard_mb,
      overwrite=FLAGS.overwrite, max_images=FLAGS.max_images, progress=FLAGS.progress,
      on_complete=_write_flagfile, refuse_duplicates=FLAGS.refuse_duplicates)
  counts = ", ".join(f"{split} {manifest['splits'][split]['num_examples']}"
                     for split in ("train", "validation", "test") if split in manifest["splits"])
  logging.info("%s: %d shards, %s images, %d skipped", FLAGS.output_dir,
               len(manifest["shards"]), counts, manifest["skipped_summary"]["num_skipped"])


def run():
  _cli.run(main, required=["output_dir"])


if __name__ == "__main__":
  run()
