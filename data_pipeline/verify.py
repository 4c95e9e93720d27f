"""Verification of a prepared data dir against its manifest.

For every shard listed in manifest.json: the file exists with the recorded size and sha256,
every record passes TFRecord's CRC checks (length and data), parses as our tf.train.Example,
its image decodes to uint8 [S, S, 3], its id is non-empty and its attributes are -1/+1; the
record count matches the shard entry and the split totals match the manifest's splits.

All shards are checked; the first problem (shard file and record index) leads the DataError,
followed by how many more were found. `locate_problem` runs the same record checks up to the
first problem, for a reader that hit a TensorFlow read error and must name its record.
"""

import os
import re
import time

import tensorflow as tf
from tqdm import tqdm

from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from data_pipeline import records
from data_pipeline.errors import DataError

_BATCH = 256


def op_error_text(error):
  """The useful part of a TF error: "corrupted record at 20880", not the op plumbing."""
  lines = [line for line in error.message.splitlines() if line.strip()]
  if lines and lines[0].startswith("Graph execution error"):
    # From a tf.function: the cause follows the traceback of where the op was defined.
    causes = [line for line in lines[1:]
              if not line[0].isspace() and not line.startswith("Detected at node")]
    lines = causes[-1:] or lines
  text = re.sub(r"\{\{.*?\}\}\s*", "", lines[0] if lines else "")
  return re.sub(r"\s*\[Op:.*$", "", text).strip()


class _RecordChecker:
  """Parses and decodes batches of serialized records; names the first bad record."""

  def __init__(self, manifest):
    names = manifest.get("attribute_names")
    self._num_attributes = len(names) if names else None
    self._spec = records.feature_spec(self._num_attributes)
    self._encoding = manifest["encoding"]
    self._size = manifest["image_size"]
    # Compiled once per shape family: eager map_fn over a JPEG batch is ~6x slower.
    self._parse_and_decode = tf.function(self._parse_and_decode_eager, reduce_retracing=True)

  def _parse_and_decode_eager(self, serialized):
    parsed = tf.io.parse_example(serialized, self._spec)
    images = records.decode_images(parsed["image"], self._encoding, self._size)
    ids_ok = tf.reduce_all(tf.strings.length(parsed["id"]) > 0)
    attributes_ok = (tf.reduce_all(tf.abs(parsed["attributes"]) == 1) if self._num_attributes
                     else tf.constant(True))
    # An output computed from the pixels themselves: when the batch size is static, the shape
    # alone is a constant, and Grappler then pruned the decoding with it, passing records
    # whose image does not decode.
    brightest = tf.reduce_max(images)
    return tf.shape(images), ids_ok, attributes_ok, brightest

  def _check(self, serialized):
    shape, ids_ok, attributes_ok, _ = self._parse_and_decode(serialized)
    if tuple(shape.numpy()[1:]) != (self._size, self._size, 3):
      raise ValueError(f"image decodes to shape {tuple(shape.numpy()[1:])}")
    if not bool(ids_ok):
      raise ValueError("empty id")
    if not bool(attributes_ok):
      raise ValueError("attribute values other than -1/+1")

  def first_problem(self, serialized):
    """None if the batch is fine, else (index in batch, reason)."""
    try:
      self._check(tf.constant(serialized))
      return None
    except (tf.errors.OpError, ValueError):
      pass
    for index, record in enumerate(serialized):  # Find which record fails, and why.
      try:
        self._check(tf.constant([record]))
      except tf.errors.OpError as error:
        return index, op_error_text(error)
      except ValueError as error:
        return index, str(error)
    return 0, "batch fails to parse while each record parses alone"


def _check_records(path, checker, bar):
  """(records read, problem or None) for one shard file: fast batched pass, exact on failure."""
  count = 0
  try:
    for batch in tf.data.TFRecordDataset(path).batch(_BATCH).as_numpy_iterator():
      if checker.first_problem(batch) is not None:
        break
      count += len(batch)
      bar.update(len(batch))
    else:
      return count, None
  except tf.errors.OpError:  # CRC mismatch or truncation (DataLossError) somewhere in a batch.
    pass
  # Something failed: go again record by record to name the first bad one exactly.
  return _check_records_one_by_one(path, checker, bar, already_counted=count)


def _check_records_one_by_one(path, checker, bar, already_counted):
  count, batch = 0, []

  def flush():
    problem = checker.first_problem(batch) if batch else None
    if problem:
      return f"record {count - len(batch) + problem[0]}: {problem[1]}"
    batch.clear()
    return None

  try:
    for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
      batch.append(serialized)
      count += 1
      if count > already_counted:
        bar.update(1)
      if len(batch) == _BATCH:
        problem = flush()
        if problem:
          return count, problem
  except tf.errors.OpError as error:  # CRC mismatch or truncation: DataLossError.
    # The records before it were read fine; the failing one is the next index.
    problem = flush()
    if problem:
      return count, problem
    return count, f"record {count}: unreadable ({op_error_text(error)})"
  return count, flush()


def verify(data_dir, check_sha256=True, progress=False):
  """Checks every record of a prepared data dir; returns a report dict.

  Args:
    data_dir: a dir written by tools.prepare_data.
    check_sha256: compare each shard's sha256 with the manifest (reads every byte once more).
    progress: show a progress bar over the records.

  Raises:
    DataError: naming the first bad shard (and record), and how many problems there are.
  """
  start = time.time()
  data_dir = os.fspath(data_dir)
  manifest = manifest_lib.read_manifest(data_dir)
  checker = _RecordChecker(manifest)
  problems, per_split, num_shards = [], {}, 0
  total = sum(s["records"] for s in manifest["shards"])
  with tqdm(total=total, unit="rec", desc="verify", disable=not progress) as bar:
    for split in _ordered_splits(manifest):
      per_split[split] = 0
      for shard in manifest_lib.split_shards(manifest, split, data_dir):
        num_shards += 1
        problem = _check_shard(shard, checker, check_sha256, bar, per_split)
        if problem:
          problems.append(f"shard {shard['file']}: {problem}")
  for split, info in manifest["splits"].items():
    if per_split.get(split) != info["num_examples"] and not any(split in p for p in problems):
      problems.append(f"split {split}: {per_split.get(split)} records in its shards, the "
                      f"manifest says {info['num_examples']}")
  if problems:
    more = len(problems) - 1
    more = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    raise DataError(f"{data_dir} failed verification: {problems[0]}{more}; rerun "
                    "tools.prepare_data with the same flags to rewrite damaged shards")
  return {"data_dir": os.path.abspath(data_dir), "ok": True, "num_shards": num_shards,
          "num_records": sum(per_split.values()), "splits": per_split,
          "checked_sha256": check_sha256, "encoding": manifest["encoding"],
          "image_size": manifest["image_size"], "elapsed_seconds": round(time.time() - start, 3)}


class _NoProgress:
  """The part of a tqdm bar that _check_shard uses, showing nothing."""

  def update(self, n):
    pass


def locate_problem(data_dir, splits=None):
  """The first shard (and record) of `splits` that fails its checks, without sha256.

  What a reader calls after a read error to name the record behind it: the record-by-record
  checks of `verify`, stopping at the first problem, so a clean dir costs one read of its
  records.

  Args:
    data_dir: a prepared data dir.
    splits: the splits to scan, in the usual order; None: all of them.

  Returns:
    (shard path, problem text such as "record 3: corrupted record at 10410"), or None when
    every record of those splits checks out.
  """
  data_dir = os.fspath(data_dir)
  manifest = manifest_lib.read_manifest(data_dir)
  checker = _RecordChecker(manifest)
  per_split = {split: 0 for split in manifest["splits"]}
  for split in _ordered_splits(manifest):
    if splits is not None and split not in splits:
      continue
    for shard in manifest_lib.split_shards(manifest, split, data_dir):
      problem = _check_shard(shard, checker, False, _NoProgress(), per_split)
      if problem:
        return shard["path"], problem
  return None


def _ordered_splits(manifest):
  """The manifest's splits in the usual order (train, validation, test, then any others)."""
  known = [s for s in manifest_lib.SPLITS if s in manifest["splits"]]
  return known + sorted(set(manifest["splits"]) - set(known))


def _check_shard(shard, checker, check_sha256, bar, per_split):
  """The shard's problem as text, or None; adds its record count to per_split."""
  path = shard["path"]
  if not os.path.isfile(path):
    return "missing"
  size = os.path.getsize(path)
  if size != shard["bytes"]:
    return f"{size} bytes, the manifest says {shard['bytes']}"
  if check_sha256:
    digest = provenance.sha256_file(path)
    if digest != shard["sha256"]:
      return f"sha256 {digest[:12]}... differs from the manifest's {shard['sha256'][:12]}..."
  count, problem = _check_records(path, checker, bar)
  per_split[shard["split"]] += count
  if problem:
    return problem
  if count != shard["records"]:
    return f"{count} records, the manifest says {shard['records']}"
  return None
