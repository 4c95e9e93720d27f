"""Damaging copies of prepared data dirs in known ways, for the reliability tests."""

import shutil
import struct

# A train shard of conftest's `prepared_data_dir` (train: 4 shards of 13 records).
SHARD = "celeba_stream-train.tfrecord-00001-of-00004"


def copy_data_dir(prepared_data_dir, tmp_path):
  """A writable copy of a read-only data dir fixture, at tmp_path/data."""
  copy = tmp_path / "data"
  shutil.copytree(prepared_data_dir, copy)
  return copy


def record_offsets(path):
  """Byte offset of each record's data in a TFRecord file (framing: len, crc, data, crc)."""
  offsets, position, data = [], 0, path.read_bytes()
  while position < len(data):
    (length,) = struct.unpack("<Q", data[position:position + 8])
    offsets.append(position + 12)
    position += 12 + length + 4
  return offsets


def flip_byte(path, offset):
  """Flips the lowest bit of the byte at `offset` of a file."""
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x01
  path.write_bytes(bytes(data))


def flip_byte_of_record(path, index):
  """Flips one bit inside record `index`'s image bytes: its CRC no longer matches."""
  flip_byte(path, record_offsets(path)[index] + 100)
