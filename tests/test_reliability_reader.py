"""The reader on damaged data dirs: named errors, refusals, and skip_corrupt's loss count.

Each test damages a copy of the read-only `prepared_data_dir` fixture (train: 4 shards of 13
records; validation and test: 1 shard of 6) in one way, then reads it through make_dataset.
"""

import json
import logging
import os

import pytest
import tensorflow as tf

import data_pipeline as dp
from data_pipeline import manifest as manifest_lib
from data_pipeline import reader
from data_pipeline import records
from data_pipeline import verify
from data_pipeline.errors import DataError
from tests.damage import SHARD
from tests.damage import copy_data_dir
from tests.damage import flip_byte_of_record
from tests.damage import record_offsets

SHARD_RECORDS = 13
TRAIN_RECORDS = 52


def _count(data_dir, **kwargs):
  """Images in one pass over the train split, read as a consumer would."""
  with reader.reading(data_dir):
    return sum(int(b.shape[0]) for b in dp.make_dataset(data_dir, "train", 4, **kwargs))


@pytest.fixture
def absl_warnings(caplog):
  """The absl warnings logged while the test runs, as one string per record."""
  caplog.set_level(logging.WARNING, logger="absl")
  return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_flipped_byte_names_the_shard_and_record(prepared_data_dir, tmp_path, absl_warnings):
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  flip_byte_of_record(data_dir / SHARD, 3)
  # Same size as the manifest says: make_dataset accepts the dir, the damage shows when read.
  for shuffle in (False, True):
    with pytest.raises(DataError) as error:
      _count(data_dir, shuffle=shuffle, seed=0)
    message = str(error.value)
    assert f"shard {data_dir / SHARD}: record 3: unreadable (corrupted record" in message
    assert "tools.prepare_data" in message and "\n" not in message

  # Opt in to skipping: the pass completes and says what it lost. A CRC error ends the shard
  # (records 3..12 of it), and every pass logs it again.
  dataset = dp.make_dataset(data_dir, "train", 4, shuffle=False, skip_corrupt=True)
  for _ in range(2):
    assert sum(int(b.shape[0]) for b in dataset) == TRAIN_RECORDS - 10
  lost = [m for m in absl_warnings() if m.startswith("skip_corrupt:")]
  assert lost == 2 * [f"skip_corrupt: shard {data_dir / SHARD}: read 3 of 13 records, 10 lost "
                      "to damaged data (tools.verify_data names them)",
                      f"skip_corrupt: this pass over split 'train' of {data_dir}: read 42 of "
                      "52 records, 10 lost to damaged data (tools.verify_data names them)"]


def test_undecodable_record_is_named_and_skipped_alone(prepared_data_dir, tmp_path,
                                                       absl_warnings):
  # A record whose CRC is fine but whose image is too short: what a bug or a foreign file
  # gives. Rewritten with a consistent manifest size, so only decoding can catch it.
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  shard = data_dir / SHARD
  serialized = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
  example = tf.train.Example.FromString(serialized[2])
  image_id = example.features.feature["id"].bytes_list.value[0]
  attributes = example.features.feature["attributes"].int64_list.value
  serialized[2] = records.serialize_example(b"\x00" * 10, image_id, attributes)
  with tf.io.TFRecordWriter(str(shard)) as writer:
    for record in serialized:
      writer.write(record)
  manifest_path = data_dir / manifest_lib.MANIFEST
  manifest = json.loads(manifest_path.read_text())
  for entry in manifest["shards"]:
    if entry["file"] == SHARD:
      entry["bytes"] = os.path.getsize(shard)
  manifest_path.write_text(json.dumps(manifest))

  with pytest.raises(DataError, match=rf"shard .*{SHARD}: record 2: Input to reshape"):
    _count(data_dir, shuffle=False)
  # verify finds it too (it used to pass: its batched check pruned the decoding).
  with pytest.raises(DataError, match=rf"{SHARD}: record 2: Input to reshape"):
    verify.verify(data_dir, check_sha256=False)
  assert _count(data_dir, shuffle=False, skip_corrupt=True) == TRAIN_RECORDS - 1
  assert any(f"{SHARD}: read 12 of 13 records, 1 lost" in m for m in absl_warnings())


def test_missing_shard_is_refused_unless_skipped(prepared_data_dir, tmp_path, absl_warnings):
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  os.remove(data_dir / SHARD)
  with pytest.raises(DataError) as error:
    dp.make_dataset(data_dir, "train", 4)
  message = str(error.value)
  assert f"shard {data_dir / SHARD} is missing; the data dir no longer matches its manifest" \
         in message
  assert "tools.prepare_data" in message and "tools.verify_data" in message
  # Other splits do not read that shard.
  assert sum(int(b.shape[0]) for b in dp.make_dataset(data_dir, "validation", 4)) == 6

  assert _count(data_dir, skip_corrupt=True, seed=0) == TRAIN_RECORDS - SHARD_RECORDS
  messages = absl_warnings()
  assert any(f"{SHARD} is missing; its 13 records are lost" in m for m in messages)
  assert any("read 39 of 52 records, 13 lost" in m for m in messages)

  for name in os.listdir(data_dir):
    if name.startswith("celeba_stream-train"):
      os.remove(data_dir / name)
  with pytest.raises(DataError, match="split 'train' of .* has no readable shard left"):
    dp.make_dataset(data_dir, "train", 4, skip_corrupt=True)


@pytest.mark.parametrize("change", ["truncate", "append"])
def test_changed_size_is_refused(prepared_data_dir, tmp_path, change):
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  shard = data_dir / SHARD
  size = os.path.getsize(shard)
  if change == "truncate":
    os.truncate(shard, size - 10)
  else:
    with open(shard, "ab") as f:
      f.write(b"\x00" * 10)
  expected = size - 10 if change == "truncate" else size + 10
  with pytest.raises(DataError, match=rf"shard .*{SHARD} is {expected} bytes, the manifest says "
                                      rf"{size}; .*rerun the tools.prepare_data command"):
    dp.make_dataset(data_dir, "train", 4)
  # skip_corrupt reads what the file still holds: all but the cut record, or every record
  # (the appended bytes lie past the last record the manifest counts).
  lost = 1 if change == "truncate" else 0
  assert _count(data_dir, shuffle=False, skip_corrupt=True) == TRAIN_RECORDS - lost


def test_errors_that_are_not_the_datas_pass_through(prepared_data_dir):
  # The data checks out: an InvalidArgumentError is a bug's, and stays what it was.
  with pytest.raises(tf.errors.InvalidArgumentError, match="not about data"):
    with reader.reading(prepared_data_dir):
      raise tf.errors.InvalidArgumentError(None, None, "not about data")
  # A DataLossError is the data's even when a second read finds nothing (a flaky disk).
  with pytest.raises(DataError, match=r"failed \(CRC went away\), yet its records check out"):
    with reader.reading(prepared_data_dir, splits=["validation"]):
      raise tf.errors.DataLossError(None, None, "CRC went away")
