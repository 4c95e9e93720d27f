"""make_dataset: dtypes and shapes, seeded order, file order, subsets, caching, errors."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

import data_pipeline as dp
from data_pipeline import manifest as manifest_lib
from data_pipeline.errors import DataError


def _ids(ds):
  return [i.decode() for batch in ds for i in batch["id"].numpy()]


def test_batches_are_uint8_images(prepared_data_dir):
  ds = dp.make_dataset(prepared_data_dir, "train", 8, seed=0, drop_remainder=True)
  assert ds.element_spec == tf.TensorSpec([8, 32, 32, 3], tf.uint8)
  batches = list(ds)
  assert len(batches) == 52 // 8
  assert all(b.dtype == tf.uint8 for b in batches)


def test_dicts_with_ids_and_attributes(prepared_data_dir):
  ds = dp.make_dataset(prepared_data_dir, "validation", 4, with_ids=True, with_attributes=True)
  spec = ds.element_spec
  assert spec["image"].dtype == tf.uint8 and spec["id"].dtype == tf.string
  assert spec["attributes"].dtype == tf.int32 and spec["attributes"].shape[-1] == 40
  sizes = [b["image"].shape[0] for b in ds]
  # The remainder is kept unless drop_remainder; unseeded reading does not promise batch order.
  assert sorted(sizes) == [2, 4]


def test_same_seed_same_order_and_every_record_once(prepared_data_dir):
  make = lambda seed: dp.make_dataset(prepared_data_dir, "train", 5, seed=seed, with_ids=True)
  first, again, other = _ids(make(7)), _ids(make(7)), _ids(make(8))
  assert first == again
  assert first != other
  assert len(first) == 52 and len(set(first)) == 52
  assert first != sorted(first)  # Shuffled across shards, not file order.


def test_unshuffled_reads_in_file_order(prepared_data_dir, synthetic_celeba_dir):
  ids = _ids(dp.make_dataset(prepared_data_dir, "train", 10, shuffle=False, with_ids=True))
  assert ids == sorted(ids) and len(ids) == 52


def test_repeat_reshuffles_each_epoch(prepared_data_dir):
  ds = dp.make_dataset(prepared_data_dir, "train", 52, seed=3, repeat=True, with_ids=True)
  epochs = [sorted_and_raw for sorted_and_raw in ds.take(3)]
  orders = [list(e["id"].numpy()) for e in epochs]
  assert all(sorted(o) == sorted(orders[0]) for o in orders)
  assert orders[0] != orders[1]


def test_max_images_is_a_stable_prefix_in_file_order(prepared_data_dir):
  prefix = _ids(dp.make_dataset(prepared_data_dir, "train", 64, shuffle=False, with_ids=True))
  for seed in (1, 2):
    subset = _ids(dp.make_dataset(prepared_data_dir, "train", 4, seed=seed, max_images=20,
                                  with_ids=True))
    assert sorted(subset) == prefix[:20]


@pytest.mark.parametrize("cache", ["encoded", "decoded"])
def test_cache_gives_the_same_records(prepared_data_dir, cache):
  plain = dp.make_dataset(prepared_data_dir, "train", 8, shuffle=False, with_ids=True)
  cached = dp.make_dataset(prepared_data_dir, "train", 8, seed=1, cache=cache, with_ids=True)
  expected = {i: img for b in plain for i, img in zip(b["id"].numpy(), b["image"].numpy())}
  for _ in range(2):  # The second pass reads from the cache.
    got = {i: img for b in cached for i, img in zip(b["id"].numpy(), b["image"].numpy())}
    assert got.keys() == expected.keys()
    for key, image in got.items():
      np.testing.assert_array_equal(image, expected[key])


def test_images_only_when_no_dict_asked(prepared_data_dir):
  ds = dp.make_dataset(prepared_data_dir, "test", 6, shuffle=False, cache="decoded")
  assert ds.element_spec == tf.TensorSpec([None, 32, 32, 3], tf.uint8)
  assert next(iter(ds)).shape == (6, 32, 32, 3)


def test_options_carry_the_ram_budget_and_determinism(prepared_data_dir):
  ds = dp.make_dataset(prepared_data_dir, "train", 4, seed=0, ram_budget_mb=64)
  options = ds.options()
  assert options.autotune.ram_budget == 64 * 2**20
  assert options.deterministic is True
  assert dp.make_dataset(prepared_data_dir, "train", 4).options().deterministic is False


def test_errors_are_data_errors(prepared_data_dir, tmp_path):
  with pytest.raises(DataError, match="'valid'.*train"):
    dp.make_dataset(prepared_data_dir, "valid", 4)
  with pytest.raises(DataError, match="does not exist"):
    dp.make_dataset(tmp_path / "nowhere", "train", 4)
  with pytest.raises(DataError, match="not a prepared data dir"):
    dp.make_dataset(tmp_path, "train", 4)
  with pytest.raises(ValueError, match="batch_size"):
    dp.make_dataset(prepared_data_dir, "train", 0)
  with pytest.raises(ValueError, match="cache"):
    dp.make_dataset(prepared_data_dir, "train", 4, cache="disk")
  copy = tmp_path / "copy"
  shutil.copytree(prepared_data_dir, copy)
  (copy / "celeba_stream-train.tfrecord-00002-of-00004").unlink()
  with pytest.raises(DataError, match="00002-of-00004 is missing"):
    dp.make_dataset(copy, "train", 4)
  (copy / manifest_lib.MANIFEST).write_text("{not json")
  with pytest.raises(DataError, match="not JSON"):
    dp.make_dataset(copy, "train", 4)


def test_skip_corrupt_reads_past_a_damaged_shard(prepared_data_dir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(prepared_data_dir, copy)
  shard = copy / "celeba_stream-train.tfrecord-00001-of-00004"
  data = bytearray(shard.read_bytes())
  data[len(data) // 2] ^= 0xFF
  shard.write_bytes(bytes(data))
  with pytest.raises(tf.errors.DataLossError):
    list(dp.make_dataset(copy, "train", 4, shuffle=False))
  images = sum(b.shape[0] for b in dp.make_dataset(copy, "train", 4, shuffle=False,
                                                   skip_corrupt=True))
  assert 39 <= images < 52  # The other shards in full, the damaged one up to the bad record.
