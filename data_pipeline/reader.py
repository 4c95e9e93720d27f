"""The reader: sharded TFRecords -> uint8 [B, S, S, 3] batches, streamed with bounded memory.

Pipeline (shuffle=True):

  shard list (from the manifest) -> shuffle shards (seeded) -> parallel interleave of
  TFRecordDatasets -> [cache] -> shuffle serialized records (small buffer) -> [repeat] -> batch
  -> vectorized parse (tf.io.parse_example) and decode -> prefetch(AUTOTUNE)

Raw records decode with one `decode_raw` + reshape per batch; png/jpeg map their decoder over
the batch (jpeg with INTEGER_ACCURATE, the DCT PIL uses, so pixels match PIL's). Images stay
uint8 on the host: scaling to [0, 1] happens inside the model, on the device.

Memory: the shuffle buffer holds `shuffle_buffer` serialized records, the interleave a few
read buffers per open shard and prefetch a few batches, so the peak does not grow with the
dataset. `cache` is the deliberate exception (it keeps the split in RAM).

With shuffle=False the records come in file order (shard 0 first, records in order), which is
the same order on every call. With a seed, the shuffled order is the same on every run too.
`max_images=N` keeps the first N records in file order (a stable subset), before shuffling.
"""

import os

import tensorflow as tf

from data_pipeline import manifest as manifest_lib
from data_pipeline import records
from data_pipeline.errors import DataError

CACHE_MODES = (None, "encoded", "decoded")
_MAX_PARALLEL_SHARDS = 8  # Open shards read in parallel; more adds memory, not speed.
_READ_BUFFER_BYTES = 1 << 20


def _select_shards(data_dir, manifest, split, max_images):
  """[(path, records to take)] in file order, covering the first `max_images` records."""
  shards = [s for s in manifest_lib.split_shards(manifest, split, data_dir) if s["records"]]
  selected, remaining = [], max_images
  for shard in shards:
    take = shard["records"] if remaining is None else min(shard["records"], remaining)
    if take <= 0:
      break
    if not os.path.exists(shard["path"]):
      raise DataError(f"shard {shard['path']} is missing; rerun the tools.prepare_data command "
                      "that made this data dir to rewrite it")
    selected.append((shard["path"], take))
    if remaining is not None:
      remaining -= take
  return selected


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
    skip_corrupt: skip what cannot be read instead of failing: a corrupt record ends its shard,
      an undecodable record drops its batch (each logged as a warning).

  Returns:
    A tf.data.Dataset of uint8 [B, S, S, 3] tensors, or of dicts with `image` when `with_ids`
    or `with_attributes`.

  Raises:
    DataError: missing/incomplete data dir, unknown split, missing shard, or attributes asked
      of a data dir without them.
  """
  _check_args(batch_size, cache, max_images, shuffle_buffer, ram_budget_mb)
  data_dir = os.fspath(data_dir)
  manifest = manifest_lib.read_manifest(data_dir)
  image_size, encoding = manifest["image_size"], manifest["encoding"]
  attribute_names = manifest.get("attribute_names")
  if with_attributes and not attribute_names:
    raise DataError(f"{data_dir} has no attributes (its source had no list_attr_celeba.txt); "
                    "read it without attributes")
  shards = _select_shards(data_dir, manifest, split, max_images)
  if not shards:
    raise DataError(f"split {split!r} of {data_dir} has no records")
  if deterministic is None:
    deterministic = seed is not None or not shuffle

  paths = [path for path, _ in shards]
  counts = [take for _, take in shards]
  files = tf.data.Dataset.from_tensor_slices((paths, tf.constant(counts, tf.int64)))

  def read_shard(path, take):
    shard = tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES).take(take)
    return shard.ignore_errors(log_warning=True) if skip_corrupt else shard

  if shuffle:
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(read_shard, cycle_length=min(len(paths), _MAX_PARALLEL_SHARDS),
                          block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
  else:  # File order: one shard after the other.
    ds = files.interleave(read_shard, cycle_length=1, block_length=1)

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

  if cache == "encoded":
    ds = ds.cache()
  elif cache == "decoded":
    ds = ds.map(parse_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if skip_corrupt:
      ds = ds.ignore_errors(log_warning=True)
    ds = ds.cache()
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if cache != "decoded":
    ds = ds.map(parse_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if skip_corrupt:
      ds = ds.ignore_errors(log_warning=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)

  options = tf.data.Options()
  options.deterministic = deterministic
  if ram_budget_mb is not None:
    options.autotune.ram_budget = int(ram_budget_mb * 2**20)
  return ds.with_options(options)
