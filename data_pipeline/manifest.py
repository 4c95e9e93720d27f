"""manifest.json: what a prepared data dir holds, how it was made, and how to check it.

A data dir is complete exactly when `manifest.json` exists: the writer renames it into place
last. It holds the settings that determine the shard bytes (image size, crop, encoding, ...),
per split the counts, one entry per shard file (records, bytes, sha256), the source images
that could not be used (the first 20 here, every one in `skipped.tsv.gz` beside it, so a
partial download keeps the manifest small), the source's fingerprint and the provenance.
WORKSPACE.md lists its keys. While the writer runs, `prepare_progress.json` holds the same
shard entries for the shards already complete, so that a rerun skips them.
"""

import json
import os
import re

from data_pipeline.errors import DataError

MANIFEST = "manifest.json"
PROGRESS = "prepare_progress.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
DEFAULT_NAME = "celeba_stream"
# TFDS dataset names are snake_case; shard names embed the name, so it must be file-safe too.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
TFRECORD_TEMPLATE = "{name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}"
# TFDS' own file template, so that tfds.builder_from_directory finds the shards.
TFDS_FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
TMP_SUFFIX = ".tmp"


def shard_name(name, split, index, num_shards):
  """`<name>-<split>.tfrecord-00000-of-000NN`, the TFDS naming scheme."""
  return TFRECORD_TEMPLATE.format(name=name, split=split, index=index, num_shards=num_shards)


def shard_pattern(name):
  """A regex matching every shard file (and its temporary name) of dataset `name`."""
  return re.compile(rf"^{re.escape(name)}-[a-z_]+\.tfrecord-\d{{5}}-of-\d{{5}}"
                    rf"({re.escape(TMP_SUFFIX)}.*)?$")


def read_json(path, what):
  """Reads a JSON object file, raising DataError (naming the file) when missing or broken."""
  try:
    with open(path, "r", encoding="utf-8") as f:
      value = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{what} {path} not found") from None
  except (OSError, ValueError) as error:
    raise DataError(f"{what} {path} is unreadable or not JSON ({error}); prepare the data dir "
                    "again with tools.prepare_data --overwrite") from None
  if not isinstance(value, dict):
    raise DataError(f"{what} {path} is not a JSON object")
  return value


def read_manifest(data_dir):
  """Reads and sanity-checks `data_dir/manifest.json`.

  Its main keys: `name`, `version`, `format_version`, `image_size`, `crop` [left, top, right,
  bottom], `encoding` (raw | png | jpeg), `jpeg_quality` (null unless jpeg), `attribute_names`
  (null when the source had none); `splits`: split -> `num_examples`, `num_shards`,
  `num_bytes`, `num_skipped`; `shards`: per file `split`, `index`, `file`, `records`, `bytes`,
  `sha256`; `skipped` ({split, file_name, kind, reason} for the first 20 unusable images) and
  `skipped_summary` (counts by kind, how many the download lacks, and `file`: skipped.tsv.gz);
  `num_listed`; `duplicates` (photos with the same bytes: counts across and within splits,
  the groups' "split/file_name" ids; data_pipeline.duplicates.summarize); `source` (kind,
  path, fingerprint: sha256 over the listed image names and sizes plus the metadata files'
  hashes, counts); `settings`; `provenance`; `elapsed_seconds`.

  Raises:
    DataError: the dir or manifest is missing (e.g. a preparation that never finished) or
      malformed.
  """
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(f"data dir {data_dir} does not exist; create it with "
                    "`python -m tools.prepare_data --source_dir CELEBA --output_dir DATA`")
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.exists(path):
    hint = ("its preparation did not finish: rerun the same tools.prepare_data command"
            if os.path.exists(os.path.join(data_dir, PROGRESS))
            else "it is not a prepared data dir (run tools.prepare_data first)")
    raise DataError(f"{path} not found; {hint}")
  manifest = read_json(path, "manifest")
  required = ("name", "image_size", "encoding", "splits", "shards")
  missing = [key for key in required if key not in manifest]
  if missing:
    raise DataError(f"manifest {path} lacks {', '.join(missing)}; prepare the data again")
  if manifest.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
    raise DataError(f"manifest {path} has format_version {manifest['format_version']}, newer "
                    "than this code understands; update celeba-stream")
  return manifest


def split_shards(manifest, split, data_dir=None):
  """The split's shard entries in file order; with `data_dir`, each gains a `path`.

  Raises:
    DataError: the data dir has no such split.
  """
  if split not in manifest["splits"]:
    raise DataError(f"split {split!r} is not in this data dir; it has "
                    f"{', '.join(sorted(manifest['splits'])) or 'no splits'}")
  shards = sorted((s for s in manifest["shards"] if s["split"] == split),
                  key=lambda s: s["index"])
  if data_dir is not None:
    shards = [dict(s, path=os.path.join(os.fspath(data_dir), s["file"])) for s in shards]
  return shards


def shard_file_problem(shard):
  """Why a shard file disagrees with its manifest entry ("missing", a changed size), or None.

  A stat, not a read: cheap enough for every make_dataset call. Takes an entry of
  `split_shards(..., data_dir)` (with `path`).
  """
  try:
    size = os.stat(shard["path"]).st_size
  except FileNotFoundError:
    return "is missing"
  except OSError as error:
    return f"cannot be read ({error.strerror})"
  if size != shard["bytes"]:
    return f"is {size} bytes, the manifest says {shard['bytes']}"
  return None


def num_examples(data_dir, split):
  """Number of records in `split` of a prepared data dir."""
  manifest = read_manifest(data_dir)
  split_shards(manifest, split)  # Raises for an unknown split.
  return manifest["splits"][split]["num_examples"]
