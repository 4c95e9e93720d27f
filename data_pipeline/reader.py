"""The reader: sharded TFRecords -> uint8 [B, S, S, 3] batches, streamed with bounded memory.

  shard list (from the manifest) -> shuffle shards (seeded) -> parallel interleave -> [cache]
  -> shuffle serialized records -> [repeat] -> batch -> parse and decode -> prefetch

Memory does not grow with the dataset: the shuffle buffer holds serialized records, and only a
few read buffers and batches are in flight (`cache` is the deliberate exception). Images stay
uint8 on the host; the model scales them on the device. `make_dataset` refuses shard files that
disagree with the manifest; a record damaged in place is found only when read, so consumers
iterate inside `reading(data_dir)`, which names the shard and record, or pass `skip_corrupt`,
which drops unreadable records and logs how many were lost.
"""

import contextlib
import os

import tensorflow as tf
from absl import logging

from data_pipeline import manifest as manifest_lib
from data_pipeline import records
from data_pipeline import verify
from data_pipeline.errors import DataError

CACHE_MODES = (None, "encoded", "decoded")
_MAX_PARALLEL_SHARDS = 8  # Open shards read in parallel; more adds memory, not speed.
_READ_BUFFER_BYTES = 1 << 20


def _rewrite_hint(data_dir):
  return (f"the data dir no longer matches its manifest: rerun the tools.prepare_data command "
          f"that made {data_dir} to rewrite it (tools.verify_data --data_dir={data_dir} checks "
          "every shard)")


def _select_shards(data_dir, manifest, split, max_images, skip_corrupt):
  """([(path, records to take)] in file order, records lost to missing shards).

  The shards cover the first `max_images` records. A shard file that disagrees with the
  manifest raises DataError; with `skip_corrupt` it is logged instead, and a missing one is
  left out (its records count as lost).
  """
  shards = [s for s in manifest_lib.split_shards(manifest, split, data_dir) if s["records"]]
  selected, remaining, lost = [], max_images, 0
  for shard in shards:
    take = shard["records"] if remaining is None else min(shard["records"], remaining)
    if take <= 0:
      break
    if remaining is not None:
      remaining -= take
    problem = manifest_lib.shard_file_problem(shard)
    if problem and not skip_corrupt:
      raise DataError(f"shard {shard['path']} {problem}; {_rewrite_hint(data_dir)}")
    if problem:
      readable = os.path.isfile(shard["path"])
      logging.warning("skip_corrupt: shard %s %s; %s", shard["path"], problem,
                      "reading the records it still holds" if readable
                      else f"its {take} records are lost")
      if not readable:
        lost += take
        continue
    selected.append((shard["path"], take))
  return selected, lost


def _log_loss(what, read, expected):
  """py_function body: one warning per shard or pass that lost records."""
  read, expected = int(read), int(expected)
  logging.warning("skip_corrupt: %s: read %d of %d records, %d lost to damaged data "
                  "(tools.verify_data names them)", what.numpy().decode("utf-8"), read,
                  expected, expected - read)
  return True


def _placeholder(spec):
  """A dummy tensor of `spec` (fully defined shape), for the end marker of _count_losses."""
  if spec.dtype == tf.string:
    return tf.fill(spec.shape, "")
  return tf.zeros(spec.shape, spec.dtype)


def _count_losses(elements, expected, what):
  """`elements` unchanged, logging at their end when there were fewer than `expected`.

  tf.data has no end-of-iteration hook, so a marked dummy element goes after the last one: a
  scan counts the elements before it, and the marker triggers the warning and is dropped.
  This happens once per pass (per read of a shard, or per pass over the split).
  """
  end = tf.data.Dataset.from_tensors(
      (tf.nest.map_structure(_placeholder, elements.element_spec), True))
  marked = elements.map(lambda element: (element, False)).concatenate(end)

  def count(read, marked_element):
    element, is_end = marked_element
    read += tf.cast(tf.logical_not(is_end), tf.int64)
    return read, (element, is_end, read)

  def keep(element, is_end, read):
    del element  # Only the marker decides.
    lost = tf.logical_and(is_end, read < tf.cast(expected, tf.int64))
    logged = tf.cond(lost, lambda: tf.py_function(_log_loss, [what, read, expected], tf.bool),
                     lambda: tf.constant(True))
    with tf.control_dependencies([logged]):
      return tf.logical_not(is_end)

  counted = marked.scan(tf.constant(0, tf.int64), count).filter(keep)
  return counted.map(lambda element, is_end, read: element)


def _check_args(batch_size, cache, max_images, shuffle_buffer, ram_budget_mb):
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  if cache not in CACHE_MODES:
    raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
  if max_images is not None and max_images < 1:
    raise ValueError(f"max_images must be positive, got {max_images}")
  if shuffle_buffer < 1:
    raise ValueError(f"shuffle_buffer must be positive, got {shuffle_buffer}")
  if ram_budget_mb is not None and ram_budget_mb <= 0:
    raise ValueError(f"ram_budget_mb must be positive, got {ram_budget_mb}")


def _open_split(data_dir, split, with_attributes, max_images, skip_corrupt):
  """(manifest, [(shard path, records to take)], records lost to missing shards)."""
  manifest = manifest_lib.read_manifest(data_dir)
  if with_attributes and not manifest.get("attribute_names"):
    raise DataError(f"{data_dir} has no attributes (its source had no list_attr_celeba.txt); "
                    "read it without attributes")
  shards, lost_missing = _select_shards(data_dir, manifest, split, max_images, skip_corrupt)
  if not shards:
    if lost_missing:
      raise DataError(f"split {split!r} of {data_dir} has no readable shard left; "
                      f"{_rewrite_hint(data_dir)}")
    raise DataError(f"split {split!r} of {data_dir} has no records")
  return manifest, shards, lost_missing


def _parsers(manifest, with_ids, with_attributes):
  """(parse_batch, parse_one): serialized records -> what make_dataset yields, per batch or one."""
  image_size, encoding = manifest["image_size"], manifest["encoding"]
  attribute_names = manifest.get("attribute_names")
  spec = records.feature_spec(len(attribute_names) if attribute_names else None)

  def to_output(parsed, images):
    if not (with_ids or with_attributes):
      return images
    out = {"image": images}
    if with_ids:
      out["id"] = parsed["id"]
    if with_attributes:
      out["attributes"] = tf.cast(parsed["attributes"], tf.int32)
    return out

  def parse_batch(serialized):
    parsed = tf.io.parse_example(serialized, spec)
    return to_output(parsed, records.decode_images(parsed["image"], encoding, image_size))

  def parse_one(serialized):
    parsed = tf.io.parse_single_example(serialized, spec)
    image = records.decode_images(parsed["image"][tf.newaxis], encoding, image_size)[0]
    return to_output(parsed, image)

  return parse_batch, parse_one


def _interleave_shards(shards, parse_one, shuffle, seed, deterministic, skip_corrupt):
  """The shards' records, interleaved (shuffled) or one shard after the other (file order).

  Serialized records; with `skip_corrupt`, decoded ones, each shard's losses counted.
  """
  paths = [path for path, _ in shards]
  counts = [take for _, take in shards]
  files = tf.data.Dataset.from_tensor_slices((paths, tf.constant(counts, tf.int64)))

  def read_shard(path, take):
    shard = tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES).take(take)
    if not skip_corrupt:
      return shard
    # A CRC or length error ends the shard (the reader cannot find the next record's start).
    # Records are decoded here, one by one, so that an undecodable one goes alone instead of
    # taking its batch down later. The count below says how many either way lost.
    shard = shard.ignore_errors(log_warning=True)
    shard = shard.map(parse_one, num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=deterministic).ignore_errors(log_warning=True)
    return _count_losses(shard, take, tf.strings.join(["shard ", path]))

  if shuffle:
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return files.interleave(read_shard, cycle_length=min(len(paths), _MAX_PARALLEL_SHARDS),
                            block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=deterministic)
  return files.interleave(read_shard, cycle_length=1, block_length=1)


def make_dataset(data_dir, split, batch_size, *, shuffle=True, seed=None, deterministic=None,
                 repeat=False, drop_remainder=False, with_ids=False, with_attributes=False,
                 max_images=None, cache=None, shuffle_buffer=1024, ram_budget_mb=None,
                 skip_corrupt=False):
  """Streams a split of a prepared data dir as uint8 batches.

  Args:
    data_dir: a dir written by tools.prepare_data.
    split: "train", "validation" or "test".
    batch_size: images per batch.
    shuffle: shuffle the shard order and the records (buffer `shuffle_buffer`).
    seed: makes the shuffled order reproducible.
    deterministic: keep element order through parallel stages; None means "when seeded or
      not shuffled" (unseeded shuffling gains a little speed from sloppy order).
    repeat: repeat forever (reshuffled every epoch).
    drop_remainder: drop the last partial batch (static batch dimension).
    with_ids: yield dicts that include `id` (tf.string [B], CelebA file names).
    with_attributes: yield dicts that include `attributes` (int32 [B, 40], -1/+1).
    max_images: use only the first N records of the split in file order.
    cache: None, "encoded" (serialized records in RAM) or "decoded" (uint8 images in RAM).
    shuffle_buffer: records in the shuffle buffer.
    ram_budget_mb: RAM budget for tf.data's autotuning of buffers (tf.data.Options).
    skip_corrupt: drop what cannot be read instead of failing, and log how many records each
      pass lost (per shard and for the split; absl warnings). A corrupt record ends its
      shard (TFRecord cannot resynchronize), an undecodable record goes alone, a missing
      shard is left out and a shard of another size is read as far as it goes. Records are
      then decoded one by one as they are read (slower than per batch for raw), so the
      shuffle buffer and an "encoded" cache hold decoded images.

  Returns:
    A tf.data.Dataset of uint8 [B, S, S, 3] tensors, or of dicts with `image` when `with_ids`
    or `with_attributes`.

  Raises:
    DataError: missing/incomplete data dir, unknown split, a shard file missing or of another
      size than the manifest says (unless skip_corrupt), or attributes asked of a data dir
      without them. Records damaged in place raise TensorFlow errors while iterating; see
      `reading`.
  """
  _check_args(batch_size, cache, max_images, shuffle_buffer, ram_budget_mb)
  data_dir = os.fspath(data_dir)
  manifest, shards, lost_missing = _open_split(data_dir, split, with_attributes, max_images,
                                               skip_corrupt)
  if deterministic is None:
    deterministic = seed is not None or not shuffle
  parse_batch, parse_one = _parsers(manifest, with_ids, with_attributes)
  ds = _interleave_shards(shards, parse_one, shuffle, seed, deterministic, skip_corrupt)
  if skip_corrupt:
    ds = _count_losses(ds, sum(take for _, take in shards) + lost_missing,
                       tf.constant(f"this pass over split {split!r} of {data_dir}"))

  # From here on nothing drops records: with skip_corrupt they arrive decoded already.
  decoded = skip_corrupt or cache == "decoded"
  if cache == "decoded" and not skip_corrupt:
    ds = ds.map(parse_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  if cache is not None:
    ds = ds.cache()
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if not decoded:
    ds = ds.map(parse_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  ds = ds.prefetch(tf.data.AUTOTUNE)

  options = tf.data.Options()
  options.deterministic = deterministic
  if ram_budget_mb is not None:
    options.autotune.ram_budget = int(ram_budget_mb * 2**20)
  return ds.with_options(options)


# What a damaged record raises from an iterator: DataLossError for a CRC or length mismatch,
# InvalidArgumentError when it does not parse or decode (which a bug can raise too).
READ_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError)


def explain_read_error(data_dir, error, splits=None, alternative=None):
  """A DataError naming the shard and record behind a TensorFlow read error, or None.

  TensorFlow's errors name a byte offset at best, and not the file: this scans the shards
  again, record by record (data_pipeline.verify's checks, without sha256), and names the
  first bad one. That costs one more read of the data, on the failure path only.

  Args:
    data_dir: the data dir that was being read.
    error: the tf.errors.OpError an iterator over make_dataset raised.
    splits: the splits that were being read (None: all), scanned in the usual order.
    alternative: another way out, added to the advice to rewrite the data dir (e.g. a tool's
      flag that skips damaged records).

  Returns:
    DataError, or None when every record checks out (then the error is not the data's: an
    InvalidArgumentError from a bug, say) and the caller should re-raise `error`.
  """
  data_dir = os.fspath(data_dir)
  hint = (f"rerun the tools.prepare_data command that made {data_dir} to rewrite it "
          f"(tools.verify_data --data_dir={data_dir} checks every shard)")
  if alternative:
    hint += f", or {alternative}"
  logging.info("reading %s failed (%s); locating the damaged record", data_dir,
               type(error).__name__)
  try:
    found = verify.locate_problem(data_dir, splits)
  except DataError as gone:  # The manifest itself went away or broke meanwhile.
    return gone
  if found:
    path, problem = found
    return DataError(f"shard {path}: {problem}; {hint}")
  if isinstance(error, tf.errors.DataLossError):  # Data, but no longer reproducible.
    text = verify.op_error_text(error)
    return DataError(f"reading {data_dir} failed ({text}), yet its records check out now: a "
                     f"flaky disk or a file that changed while read; {hint}")
  return None


@contextlib.contextmanager
def reading(data_dir, splits=None, alternative=None):
  """Turns read errors of damaged data inside the block into a DataError naming the record.

      with reader.reading(data_dir):
        for batch in make_dataset(data_dir, "train", 64): ...

  Other errors, and InvalidArgumentErrors whose data checks out, pass through unchanged.
  Arguments: see `explain_read_error`.
  """
  try:
    yield
  except READ_ERRORS as error:
    explained = explain_read_error(data_dir, error, splits=splits, alternative=alternative)
    if explained is None:
      raise
    raise explained from None
