"""verify(): a clean dir passes; a flipped byte, a truncation or a count mismatch is named."""

import json
import os
import shutil
import struct

import pytest

from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from data_pipeline.errors import DataError
from data_pipeline.verify import verify

SHARD = "celeba_stream-train.tfrecord-00001-of-00004"


def _copy(prepared_data_dir, tmp_path):
  copy = tmp_path / "data"
  shutil.copytree(prepared_data_dir, copy)
  return copy


def _record_offsets(path):
  """Byte offset of each record's data in a TFRecord file (framing: len, crc, data, crc)."""
  offsets, position, data = [], 0, path.read_bytes()
  while position < len(data):
    (length,) = struct.unpack("<Q", data[position:position + 8])
    offsets.append(position + 12)
    position += 12 + length + 4
  return offsets


def _flip(path, offset):
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x01
  path.write_bytes(bytes(data))


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
  data_dir = _copy(prepared_data_dir, tmp_path)
  shard = data_dir / SHARD
  offset = _record_offsets(shard)[3] + 100  # Inside record 3's image bytes.
  _flip(shard, offset)
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
  data_dir = _copy(prepared_data_dir, tmp_path)
  shard = data_dir / SHARD
  _flip(shard, _record_offsets(shard)[5] - 12)  # The length field of record 5.
  with pytest.raises(DataError, match=f"{SHARD}: record 5:"):
    verify(data_dir, check_sha256=False)


def test_truncated_missing_and_miscounted_shards(prepared_data_dir, tmp_path):
  data_dir = _copy(prepared_data_dir, tmp_path)
  with open(data_dir / SHARD, "r+b") as f:
    f.truncate(os.path.getsize(data_dir / SHARD) - 10)
  os.remove(data_dir / "celeba_stream-test.tfrecord-00000-of-00001")
  with pytest.raises(DataError, match=rf"{SHARD}: \d+ bytes, the manifest says .*and 1 more"):
    verify(data_dir)

  data_dir = _copy(prepared_data_dir, tmp_path / "again")

  def miscount(manifest):
    manifest["shards"][0]["records"] += 1
  _rewrite_manifest(data_dir, miscount)
  with pytest.raises(DataError, match="records, the manifest says"):
    verify(data_dir)


def test_unfinished_dir_is_reported(tmp_path):
  with pytest.raises(DataError, match="manifest.json not found"):
    verify(tmp_path)
