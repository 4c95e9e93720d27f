"""Preparing shards: pixel round trips, bad files, resume, determinism, zip and TFDS sources."""

import io
import json
import logging
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from data_pipeline import manifest as manifest_lib
from data_pipeline import records
from data_pipeline import sources
from data_pipeline import writer
from data_pipeline.errors import DataError
import data_pipeline as dp
from tests.toolrun import assert_clean_error, run_main

SPLITS = ("train", "validation", "test")


def _prepare(source_dir, output_dir, **kwargs):
  kwargs.setdefault("num_workers", 1)
  kwargs.setdefault("progress", False)
  return writer.prepare(sources.CelebAFolderSource(source_dir), str(output_dir), **kwargs)


def _records(data_dir, split):
  """{id: uint8 pixels} of a split, read through make_dataset in file order."""
  out = {}
  for batch in dp.make_dataset(data_dir, split, 16, shuffle=False, with_ids=True):
    for image_id, image in zip(batch["id"].numpy(), batch["image"].numpy()):
      out[image_id.decode()] = image
  return out


def _reference(source_dir, file_name, size, box=(0, 40, 178, 218)):
  with Image.open(os.path.join(source_dir, "img_align_celeba", file_name)) as img:
    return np.asarray(img.convert("RGB").crop(box).resize((size, size), Image.LANCZOS))


def _shard_hashes(manifest):
  return {s["file"]: s["sha256"] for s in manifest["shards"]}


def test_raw_and_png_round_trip_exactly(synthetic_celeba_dir, prepared_data_dir, tmp_path):
  png_dir = tmp_path / "png"
  _prepare(synthetic_celeba_dir, png_dir, image_size=32, encoding="png")
  for data_dir in (prepared_data_dir, str(png_dir)):
    seen = 0
    for split in SPLITS:
      for file_name, pixels in _records(data_dir, split).items():
        np.testing.assert_array_equal(pixels, _reference(synthetic_celeba_dir, file_name, 32),
                                      err_msg=f"{data_dir} {file_name}")
        seen += 1
    assert seen == 64


def test_jpeg_round_trip_within_tolerance_and_tf_decoding_matches_pil(synthetic_celeba_dir,
                                                                      tmp_path):
  # Stated tolerance at quality 95 (4:4:4): mean |error| < 3, max < 40 levels. Measured on the
  # synthetic faces: 32x32 mean 2.3, max 20; 96x96 mean 1.2, max 21.
  data_dir = tmp_path / "jpeg"
  manifest = _prepare(synthetic_celeba_dir, data_dir, image_size=32, encoding="jpeg",
                      jpeg_quality=95)
  assert manifest["jpeg_quality"] == 95
  decoded = _records(str(data_dir), "train")
  errors = [np.abs(pixels.astype(int) - _reference(synthetic_celeba_dir, name, 32))
            for name, pixels in decoded.items()]
  assert np.mean([e.mean() for e in errors]) < 3.0
  assert max(e.max() for e in errors) < 40
  # TF's INTEGER_ACCURATE decoder gives PIL's pixels for the stored JPEG bytes.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shard = manifest_lib.split_shards(manifest, "train", data_dir)[0]["path"]
  for serialized in tf.data.TFRecordDataset(shard).take(5).as_numpy_iterator():
    parsed = tf.io.parse_single_example(serialized, records.feature_spec(40))
    pil = records.decode_image_np(parsed["image"].numpy(), "jpeg", 32)
    np.testing.assert_array_equal(decoded[parsed["id"].numpy().decode()], pil)


def test_manifest_contents(prepared_data_dir, synthetic_celeba_dir):
  manifest = dp.read_manifest(prepared_data_dir)
  assert manifest["name"] == "celeba_stream"
  assert manifest["image_size"] == 32 and manifest["encoding"] == "raw"
  assert manifest["crop"] == [0, 40, 178, 218] and manifest["jpeg_quality"] is None
  assert {s: v["num_examples"] for s, v in manifest["splits"].items()} == {
      "train": 52, "validation": 6, "test": 6}
  assert manifest["splits"]["train"]["num_shards"] == 4
  assert len(manifest["attribute_names"]) == 40
  assert manifest["skipped"] == []
  assert len(manifest["source"]["fingerprint"]) == 64
  assert manifest["provenance"]["versions"]["numpy"]
  for shard in manifest["shards"]:
    path = os.path.join(prepared_data_dir, shard["file"])
    assert os.path.getsize(path) == shard["bytes"]
    assert shard["file"] == manifest_lib.shard_name("celeba_stream", shard["split"],
                                                    shard["index"], len(
                                                        manifest_lib.split_shards(
                                                            manifest, shard["split"])))
  assert "celeba_stream-train.tfrecord-00003-of-00004" in _shard_hashes(manifest)
  assert not os.path.exists(os.path.join(prepared_data_dir, manifest_lib.PROGRESS))
  assert dp.num_examples(prepared_data_dir, "validation") == 6
  # Attributes travel with the images, in list_attr_celeba.txt's order.
  _, rows, values = sources.parse_attributes(
      os.path.join(synthetic_celeba_dir, "list_attr_celeba.txt"))
  batch = next(iter(dp.make_dataset(prepared_data_dir, "test", 6, shuffle=False, with_ids=True,
                                    with_attributes=True)))
  for image_id, attrs in zip(batch["id"].numpy(), batch["attributes"].numpy()):
    assert tuple(attrs) == tuple(values[rows[image_id.decode()]])


def test_tfds_loads_every_split(prepared_data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(prepared_data_dir)
  for split in SPLITS:
    ours = _records(prepared_data_dir, split)
    theirs = list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
    assert len(theirs) == len(ours) == builder.info.splits[split].num_examples
    for example in theirs:
      np.testing.assert_array_equal(example["image"], ours[example["id"].decode()])
      assert example["attributes"].shape == (40,)


def _break_source(source_dir, tmp_path):
  """A copy of the synthetic folder with every kind of odd and bad file."""
  broken = tmp_path / "broken"
  shutil.copytree(source_dir, broken)
  images = broken / "img_align_celeba"
  (images / "000002.jpg").write_bytes(b"")                                     # empty
  data = (images / "000003.jpg").read_bytes()
  (images / "000003.jpg").write_bytes(data[:len(data) // 3])                   # truncated
  (images / "000004.jpg").write_bytes(b"<html>not a face</html>")              # not an image
  os.remove(images / "000005.jpg")                                             # missing
  with Image.open(images / "000006.jpg") as img:
    img.convert("L").save(images / "000006.jpg", format="JPEG", quality=95)    # grayscale
    img_cmyk = img.convert("CMYK")
  img_cmyk.save(images / "000007.jpg", format="JPEG", quality=95)              # CMYK
  with Image.open(images / "000008.jpg") as img:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
  (images / "000008.jpg").write_bytes(buffer.getvalue())                       # PNG in .jpg
  with Image.open(images / "000009.jpg") as img:
    big = img.resize((356, 436), Image.LANCZOS)
  big.save(images / "000009.jpg", format="JPEG", quality=95)                   # 2x size
  return broken


@pytest.mark.slow
def test_bad_files_are_skipped_and_reported(synthetic_celeba_dir, tmp_path, caplog):
  broken = _break_source(synthetic_celeba_dir, tmp_path)
  with caplog.at_level(logging.WARNING):
    manifest = _prepare(broken, tmp_path / "out", image_size=32, shard_mb=0.05, num_workers=2)
  skipped = {item["file_name"]: item for item in manifest["skipped"]}
  assert {name: item["kind"] for name, item in skipped.items()} == {
      "000002.jpg": "empty", "000003.jpg": "unreadable", "000004.jpg": "unreadable",
      "000005.jpg": "missing"}
  assert all(item["reason"] and item["split"] == "train" for item in skipped.values())
  assert manifest["splits"]["train"]["num_skipped"] == 4
  assert manifest["splits"]["train"]["num_examples"] == 52 - 4
  assert manifest["num_other_size"] == 1
  summary = [r.getMessage() for r in caplog.records if "skipped 4 of 64" in r.getMessage()]
  assert len(summary) == 1 and "1 empty" in summary[0] and "1 missing" in summary[0]
  decoded = _records(str(tmp_path / "out"), "train")
  assert not set(skipped) & set(decoded)
  gray = decoded["000006.jpg"]
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  np.testing.assert_array_equal(decoded["000008.jpg"],
                                _reference(synthetic_celeba_dir, "000008.jpg", 32))
  # The 2x image goes through the scaled box: close to the original's crop.
  original = _reference(synthetic_celeba_dir, "000009.jpg", 32).astype(int)
  assert np.abs(decoded["000009.jpg"].astype(int) - original).mean() < 4


@pytest.mark.slow
def test_rerun_resumes_and_reproduces_identical_shards(synthetic_celeba_dir, prepared_data_dir,
                                                       tmp_path, monkeypatch):
  reference = _shard_hashes(dp.read_manifest(prepared_data_dir))
  out = tmp_path / "out"
  # An interrupted run: the third shard task dies (num_workers=1 runs tasks in this process).
  real_write_shard = writer._write_shard
  calls = []

  def dying_write_shard(task):
    calls.append(task.index)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real_write_shard(task)

  monkeypatch.setattr(writer, "_write_shard", dying_write_shard)
  with pytest.raises(KeyboardInterrupt):
    _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  monkeypatch.undo()
  assert not os.path.exists(out / manifest_lib.MANIFEST)
  assert os.path.exists(out / manifest_lib.PROGRESS)
  with pytest.raises(DataError, match="did not finish"):
    dp.make_dataset(str(out), "train", 4)
  (out / "celeba_stream-train.tfrecord-00003-of-00004.tmp").write_bytes(b"partial")
  kept = out / "celeba_stream-train.tfrecord-00000-of-00004"
  kept_mtime = os.stat(kept).st_mtime_ns

  # In this process again: a pool resuming is the SIGKILL test's (test_reliability_writer).
  manifest = _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  assert _shard_hashes(manifest) == reference
  assert os.stat(kept).st_mtime_ns == kept_mtime  # Complete shards were not rewritten.
  assert not [f for f in os.listdir(out) if f.endswith(".tmp")]

  # Damage after completion: a deleted and a truncated shard are rewritten identically.
  os.remove(out / "celeba_stream-train.tfrecord-00001-of-00004")
  with open(out / "celeba_stream-test.tfrecord-00000-of-00001", "r+b") as f:
    f.truncate(100)
  manifest = _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  assert _shard_hashes(manifest) == reference
  # A complete dir is left alone.
  before = os.stat(out / manifest_lib.MANIFEST).st_mtime_ns
  _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  assert os.stat(out / manifest_lib.MANIFEST).st_mtime_ns == before


@pytest.mark.slow
def test_a_shard_listed_but_not_yet_renamed_is_kept_by_the_rerun(synthetic_celeba_dir,
                                                                 prepared_data_dir, tmp_path,
                                                                 monkeypatch):
  out = tmp_path / "out"
  real_replace, renames = os.replace, []

  def interrupted_rename(source, target):
    if str(source).endswith(manifest_lib.TMP_SUFFIX):
      renames.append(target)
      if len(renames) == 2:
        raise KeyboardInterrupt  # Ctrl-C after the second shard was listed as complete.
    return real_replace(source, target)

  monkeypatch.setattr(writer.os, "replace", interrupted_rename)
  with pytest.raises(KeyboardInterrupt):
    _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  monkeypatch.undo()
  listed = json.loads((out / manifest_lib.PROGRESS).read_text())["shards"]
  assert [entry["shard"]["file"] for entry in listed] == [os.path.basename(r) for r in renames]
  assert not os.path.exists(renames[1])

  written = []
  real_write_shard = writer._write_shard
  monkeypatch.setattr(writer, "_write_shard",
                      lambda task: written.append(task.path) or real_write_shard(task))
  manifest = _prepare(synthetic_celeba_dir, out, image_size=32, shard_mb=0.05)
  assert not set(written) & set(renames)  # Both listed shards kept, neither written again.
  assert _shard_hashes(manifest) == _shard_hashes(dp.read_manifest(prepared_data_dir))


@pytest.mark.slow
def test_two_spawned_workers_write_the_same_shards(synthetic_celeba_dir, prepared_data_dir,
                                                   tmp_path):
  # The source and settings are pickled to spawned workers (data_pipeline.pool), never forked.
  manifest = _prepare(synthetic_celeba_dir, tmp_path / "out", image_size=32, shard_mb=0.05,
                      num_workers=2)
  assert _shard_hashes(manifest) == _shard_hashes(dp.read_manifest(prepared_data_dir))


def test_other_settings_are_refused_unless_overwrite(synthetic_celeba_dir, prepared_data_dir,
                                                     tmp_path):
  out = tmp_path / "out"
  shutil.copytree(prepared_data_dir, out)
  (out / "notes.txt").write_text("mine")
  with pytest.raises(DataError, match="image_size") as info:
    _prepare(synthetic_celeba_dir, out, image_size=16, shard_mb=0.05)
  assert "--overwrite" in str(info.value)
  manifest = _prepare(synthetic_celeba_dir, out, image_size=16, shard_mb=0.05, overwrite=True,
                      name="faces16")
  assert manifest["image_size"] == 16
  names = os.listdir(out)
  assert "notes.txt" in names  # Only our own files are removed.
  assert not [n for n in names if n.startswith("celeba_stream-")]
  assert dp.read_manifest(str(out))["name"] == "faces16"


def test_stray_shards_without_a_record_are_refused(synthetic_celeba_dir, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "celeba_stream-train.tfrecord-00000-of-00002").write_bytes(b"?")
  with pytest.raises(DataError, match="no manifest describes"):
    _prepare(synthetic_celeba_dir, out, image_size=32)


@pytest.mark.slow
def test_zip_source_gives_the_same_shards(synthetic_celeba_dir, prepared_data_dir, tmp_path):
  zipped = tmp_path / "zipped"
  zipped.mkdir()
  for name in ("list_eval_partition.txt", "list_attr_celeba.txt"):
    shutil.copy(os.path.join(synthetic_celeba_dir, name), zipped / name)
  image_dir = os.path.join(synthetic_celeba_dir, "img_align_celeba")
  with zipfile.ZipFile(zipped / "img_align_celeba.zip", "w") as archive:
    for name in sorted(os.listdir(image_dir)):
      archive.write(os.path.join(image_dir, name), f"img_align_celeba/{name}")
  # One worker: spawned workers reading a zip are tested on the real photos' Kaggle archive.
  manifest = _prepare(zipped, tmp_path / "out", image_size=32, shard_mb=0.05)
  assert _shard_hashes(manifest) == _shard_hashes(dp.read_manifest(prepared_data_dir))
  assert manifest["source"]["images"].endswith("img_align_celeba.zip")


def test_max_images_takes_a_proportional_prefix_of_each_split(synthetic_celeba_dir, tmp_path):
  manifest = _prepare(synthetic_celeba_dir, tmp_path / "out", image_size=16, max_images=10)
  counts = {s: v["num_examples"] for s, v in manifest["splits"].items()}
  assert sum(counts.values()) == 10 and counts["train"] == 8
  partition = sources.parse_partition(
      os.path.join(synthetic_celeba_dir, "list_eval_partition.txt"))
  assert sorted(_records(str(tmp_path / "out"), "train")) == partition["train"][:8]


def test_no_attribute_file_means_no_attributes(synthetic_celeba_dir, tmp_path):
  source_dir = tmp_path / "noattr"
  shutil.copytree(synthetic_celeba_dir, source_dir)
  os.remove(source_dir / "list_attr_celeba.txt")
  manifest = _prepare(source_dir, tmp_path / "out", image_size=16)
  assert manifest["attribute_names"] is None
  with pytest.raises(DataError, match="no attributes"):
    dp.make_dataset(str(tmp_path / "out"), "train", 4, with_attributes=True)
  features = json.loads((tmp_path / "out" / "features.json").read_text())
  assert "attributes" not in json.dumps(features)


def test_missing_source_parts_are_clear_errors(synthetic_celeba_dir, tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    sources.CelebAFolderSource(tmp_path / "nowhere")
  source_dir = tmp_path / "src"
  shutil.copytree(synthetic_celeba_dir, source_dir)
  os.remove(source_dir / "list_eval_partition.txt")
  with pytest.raises(DataError, match="list_eval_partition.txt not found"):
    sources.CelebAFolderSource(source_dir)
  shutil.copy(os.path.join(synthetic_celeba_dir, "list_eval_partition.txt"), source_dir)
  shutil.rmtree(source_dir / "img_align_celeba")
  with pytest.raises(DataError, match="neither img_align_celeba/ with images nor "
                     "img_align_celeba.zip"):
    sources.CelebAFolderSource(source_dir)


@pytest.mark.parametrize("text, message", [
    ("000001.jpg 7\n", "line 1"),
    ("000001.jpg\n", "line 1"),
    ("000001.jpg 0\n000001.jpg 1\n", "listed twice"),
    ("\n", "is empty: the download failed"),
    ("000001.jpg 3\n", "line 1"),
])
def test_malformed_partition_files(tmp_path, text, message):
  path = tmp_path / "list_eval_partition.txt"
  path.write_text(text)
  with pytest.raises(DataError, match=message):
    sources.parse_partition(str(path))


def test_kaggle_csv_metadata(tmp_path):
  partition = tmp_path / "list_eval_partition.csv"
  partition.write_text("image_id,partition\n000002.jpg,1\n000001.jpg,0\n")
  assert sources.parse_partition(str(partition)) == {
      "train": ["000001.jpg"], "validation": ["000002.jpg"], "test": []}
  attrs = tmp_path / "list_attr_celeba.csv"
  attrs.write_text("image_id,Smiling,Young\n000001.jpg,1,-1\n")
  names, rows, values = sources.parse_attributes(str(attrs))
  assert names == ("Smiling", "Young") and rows == {"000001.jpg": 0}
  assert values.tolist() == [[1, -1]]


@pytest.mark.slow
def test_tfds_source_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.open_source("tfds", tfds_data_dir=str(tmp_path / "tfds"))
    # Two workers: the records (with their bytes) stream from this process to the pool.
    manifest = writer.prepare(source, str(tmp_path / "out"), image_size=24, num_workers=2,
                              progress=False)
  assert {s: v["num_examples"] for s, v in manifest["splits"].items()} == {
      "train": 5, "validation": 5, "test": 5}
  assert manifest["source"]["kind"] == "tfds"
  assert manifest["attribute_names"][0] == "5_o_Clock_Shadow"
  batch = next(iter(dp.make_dataset(str(tmp_path / "out"), "validation", 5, shuffle=False,
                                    with_ids=True, with_attributes=True)))
  assert batch["image"].shape == (5, 24, 24, 3)
  assert set(np.unique(batch["attributes"].numpy())) <= {-1, 1}
  assert batch["id"].numpy()[0].startswith(b"celeb_a-validation")


def test_unprepared_tfds_source_is_a_clear_error(tmp_path):
  source = sources.open_source("tfds", tfds_data_dir=str(tmp_path / "empty"))
  with pytest.raises(DataError, match="not prepared"):
    source.split_sizes()


def _prepared_tfds_celeb_a(data_dir):
  """A tiny celeb_a as `tfds build` leaves it (6/3/3 random images, celeb_a's features)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = tfds.builder("celeb_a", data_dir=str(data_dir)).info.features
  version_dir = os.path.join(data_dir, "celeb_a", "2.1.0")
  os.makedirs(version_dir)
  rng = np.random.default_rng(0)
  for split, count in (("train", 6), ("validation", 3), ("test", 3)):
    path = os.path.join(version_dir, f"celeb_a-{split}.tfrecord-00000-of-00001")
    with tf.io.TFRecordWriter(path) as records:
      for i in range(count):
        records.write(features.serialize_example({
            "image": rng.integers(0, 256, (218, 178, 3), np.uint8),
            "landmarks": {name: 1 for name in features["landmarks"].keys()},
            "attributes": {name: bool(i % 2) for name in features["attributes"].keys()},
            "identity": {"Identity_No": i}}))
  tfds.folder_dataset.write_metadata(data_dir=version_dir, features=features)
  return version_dir


def _truncate_train(version_dir):
  path = os.path.join(version_dir, "celeb_a-train.tfrecord-00000-of-00001")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 1000)  # Inside the last of its 6 records.
  return (path, "cannot be read after 5 records", "truncated record")


def _remove_validation(version_dir):
  path = os.path.join(version_dir, "celeb_a-validation.tfrecord-00000-of-00001")
  os.remove(path)
  return (path, "(validation split) is missing")


def _html_dataset_info(version_dir):
  path = os.path.join(version_dir, "dataset_info.json")
  with open(path, "w", encoding="utf-8") as f:
    f.write("<html><body>Google Drive - quota exceeded</body></html>")
  return (f"(read from {path})", "Failed to load JSON")


@pytest.mark.slow
def test_a_prepared_tfds_celeb_a_and_its_damages_named_in_one_line(tmp_path):
  tfds_dir = tmp_path / "tfds"
  version_dir = _prepared_tfds_celeb_a(tfds_dir)
  result = run_main("prepare_data", "--source=tfds", f"--tfds_data_dir={tfds_dir}",
                    f"--output_dir={tmp_path / 'whole'}", "--image_size=24", "--num_workers=1")
  assert result.returncode == 0, result.stderr[-2000:]
  assert {s: v["num_examples"] for s, v in dp.read_manifest(str(tmp_path / "whole"))["splits"]
          .items()} == {"train": 6, "validation": 3, "test": 3}
  for damage in (_truncate_train, _remove_validation, _html_dataset_info):
    damaged = tmp_path / damage.__name__
    shutil.copytree(tfds_dir, damaged)
    expected = damage(str(damaged / os.path.relpath(version_dir, tfds_dir)))
    out = tmp_path / f"out{damage.__name__}"
    result = run_main("prepare_data", "--source=tfds", f"--tfds_data_dir={damaged}",
                      f"--output_dir={out}", "--image_size=24", "--num_workers=1")
    assert_clean_error(result, *expected, f"rebuild it with `tfds build celeb_a --data_dir "
                       f"{damaged}`", "or give the CelebA folder as --source_dir", code=1)
    assert not out.exists()  # Refused before writing anything: no folder left behind.
  empty = tmp_path / "empty_output"
  empty.mkdir()  # A folder made beforehand stays, empty: no lone .prepare.lock in it.
  assert run_main("prepare_data", "--source=tfds", f"--tfds_data_dir={tmp_path / 'none'}",
                  f"--output_dir={empty}").returncode == 1
  assert empty.is_dir() and not os.listdir(empty)


@pytest.mark.slow
def test_content_duplicates_are_counted_listed_and_refused_on_request(synthetic_celeba_dir,
                                                                      tmp_path):
  source = tmp_path / "source"
  shutil.copytree(synthetic_celeba_dir, source)
  partition = sources.parse_partition(str(source / "list_eval_partition.txt"))
  images = source / "img_align_celeba"
  train, test = partition["train"], partition["test"]
  shutil.copyfile(images / train[0], images / test[0])  # The same photo in train and test.
  shutil.copyfile(images / train[1], images / train[2])  # Twice within train.
  common = (f"--source_dir={source}", "--image_size=16", "--num_workers=1", "--noprogress")

  refused = run_main("prepare_data", *common, f"--output_dir={tmp_path / 'out'}",
                     "--refuse_duplicates")
  assert_clean_error(refused, "2 photo(s) are byte-identical copies of another (1 group(s) "
                     "across splits, 1 within a split", "rerun without --refuse_duplicates",
                     code=1)
  assert not (tmp_path / "out" / manifest_lib.MANIFEST).exists()

  kept = run_main("prepare_data", *common, f"--output_dir={tmp_path / 'out'}")
  assert kept.returncode == 0, kept.stderr[-2000:]
  assert "2 photo(s) are byte-identical copies of another" in kept.stderr  # The log's warning.
  copies = dp.read_manifest(str(tmp_path / "out"))["duplicates"]
  assert {k: copies[k] for k in ("num_groups", "num_copies", "across_splits",
                                  "within_split")} == {"num_groups": 2, "num_copies": 2,
                                                       "across_splits": 1, "within_split": 1}
  assert copies["num_checked"] == sum(len(ids) for ids in partition.values())
  assert sorted(copies["groups"]) == sorted([[f"test/{test[0]}", f"train/{train[0]}"],
                                             [f"train/{train[1]}", f"train/{train[2]}"]])
  verified = run_main("verify_data", f"--data_dir={tmp_path / 'out'}", "--noprogress")
  assert verified.returncode == 0, verified.stderr
  assert ("content duplicates as prepared: 2 (1 group(s) across splits, 1 within a split"
          in verified.stdout)
