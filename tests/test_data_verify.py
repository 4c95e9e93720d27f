"""verify(): a clean dir passes; a flipped byte, a truncation or a count mismatch is named."""

import json
import os

import pytest

from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from data_pipeline.errors import DataError
from data_pipeline.verify import verify
from tests.damage import SHARD
from tests.damage import copy_data_dir
from tests.damage import flip_byte
from tests.damage import record_offsets

def _rewrite_manifest(data_dir, change):
  path = data_dir / manifest_lib.MANIFEST
  manifest = json.loads(path.read_text())
  change(manifest)
  provenance.atomic_write_json(str(path), manifest)


def test_clean_dir_passes(prepared_data_dir):
  report = verify(prepared_data_dir)
  assert report["ok"] and report["checked_sha256"]
  assert report["num_records"] == 64 and report["num_shards"] == 6
  assert report["splits"] == {"train": 52, "validation": 6, "test": 6}


def test_one_flipped_byte_is_caught_by_sha256_and_by_crc(prepared_data_dir, tmp_path):
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  shard = data_dir / SHARD
  offset = record_offsets(shard)[3] + 100  # Inside record 3's image bytes.
  flip_byte(shard, offset)
  with pytest.raises(DataError, match=f"shard {SHARD}: sha256"):
    verify(data_dir)
  with pytest.raises(DataError, match=f"shard {SHARD}: record 3: .*corrupted record"):
    verify(data_dir, check_sha256=False)
  # Also when the manifest's hash is updated to the damaged file: the CRC still catches it.
  digest = provenance.sha256_file(shard)

  def update(manifest):
    for entry in manifest["shards"]:
      if entry["file"] == SHARD:
        entry["sha256"] = digest
  _rewrite_manifest(data_dir, update)
  with pytest.raises(DataError, match=f"{SHARD}: record 3:"):
    verify(data_dir)


def test_flipped_length_header_is_caught(prepared_data_dir, tmp_path):
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  shard = data_dir / SHARD
  flip_byte(shard, record_offsets(shard)[5] - 12)  # The length field of record 5.
  with pytest.raises(DataError, match=f"{SHARD}: record 5:"):
    verify(data_dir, check_sha256=False)


def test_truncated_missing_and_miscounted_shards(prepared_data_dir, tmp_path):
  data_dir = copy_data_dir(prepared_data_dir, tmp_path)
  with open(data_dir / SHARD, "r+b") as f:
    f.truncate(os.path.getsize(data_dir / SHARD) - 10)
  os.remove(data_dir / "celeba_stream-test.tfrecord-00000-of-00001")
  with pytest.raises(DataError, match=rf"{SHARD}: \d+ bytes, the manifest says .*and 1 more"):
    verify(data_dir)

  data_dir = copy_data_dir(prepared_data_dir, tmp_path / "again")

  def miscount(manifest):
    manifest["shards"][0]["records"] += 1
  _rewrite_manifest(data_dir, miscount)
  with pytest.raises(DataError, match="records, the manifest says"):
    verify(data_dir)


def test_unfinished_dir_is_reported(tmp_path):
  with pytest.raises(DataError, match="manifest.json not found"):
    verify(tmp_path)
