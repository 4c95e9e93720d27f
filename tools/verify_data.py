"""Verifies a prepared data dir: every record's CRC, parsing, decoding, counts and sha256.

    python -m tools.verify_data --data_dir=/data/celeba96

Prints one summary line and exits 0 when everything matches manifest.json; otherwise prints
one error line naming the shard and record, and exits 1.
"""

from absl import flags

from data_pipeline.manifest import read_manifest
from tools import _cli
from tools import flags_data

FLAGS = flags.FLAGS

flags_data.define_data_dir("Data dir written by tools.prepare_data.")
flags.DEFINE_boolean("check_sha256", True, "Also compare each shard's sha256 with the manifest "
                     "(--nocheck_sha256 still checks every record's CRC).")
flags_data.define_progress()
flags.adopt_module_key_flags(flags_data)


def main(argv):
  del argv  # Unused; _cli rejects positional arguments.
  copies = read_manifest(FLAGS.data_dir).get("duplicates")
  # Loads TensorFlow: imported once the flags are good (docs/ARCHITECTURE.md, Imports).
  from data_pipeline.verify import verify  # pylint: disable=g-import-not-at-top
  report = verify(FLAGS.data_dir, check_sha256=FLAGS.check_sha256, progress=FLAGS.progress)
  splits = ", ".join(f"{split} {count}" for split, count in report["splits"].items())
  hashes = "sha256 and CRCs" if report["checked_sha256"] else "CRCs"
  print(f"OK {report['data_dir']}: {report['num_records']} records in {report['num_shards']} "
        f"shards ({splits}), {report['encoding']} {report['image_size']}x"
        f"{report['image_size']}; {hashes} match, in {report['elapsed_seconds']:.1f} s"
        + ("" if not copies else f"; content duplicates as prepared: {copies['num_copies']} "
           f"({copies['across_splits']} group(s) across splits, {copies['within_split']} "
           "within a split; manifest.json 'duplicates')"))


def run():
  _cli.run(main, required=["data_dir"])


if __name__ == "__main__":
  run()
