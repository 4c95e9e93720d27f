"""Real CelebA photos, in every layout the two download sites deliver, and their broken downloads.

The photos come from `$CELEBA_REAL_DIR` (CI sets it to ../shared/celeba_real: 4,500 real
photos in CelebA's flat layout with a two-column attribute file). They are never copied into
the repository: each layout is built in a temporary folder. When the variable is unset (a
user's fresh clone) every test here skips and says why; when it is set and the folder is
missing, they fail.
"""

import gzip
import json
import logging
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from data_pipeline import sources
from data_pipeline import verify
from data_pipeline import writer
from data_pipeline.errors import DataError
import data_pipeline as dp
from tests import real_layouts
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main

SPLITS = ("train", "validation", "test")
# The layout tests use a few images per split: same records, whatever the layout.
_SUBSET_PER_SPLIT = {"train": 24, "validation": 8, "test": 8}


@pytest.fixture(scope="module")
def real_dir(celeba_real_dir):
  return celeba_real_dir


@pytest.fixture(scope="module")
def subset(real_dir):
  """A few image names per split of the real sample, in file order."""
  partition = sources.parse_partition(os.path.join(real_dir, "list_eval_partition.txt"))
  return [n for split in SPLITS for n in partition[split][:_SUBSET_PER_SPLIT[split]]]


def _prepare(source_path, output_dir, **kwargs):
  kwargs.setdefault("num_workers", 1)
  kwargs.setdefault("progress", False)
  kwargs.setdefault("image_size", 32)
  return writer.prepare(sources.CelebAFolderSource(source_path), str(output_dir), **kwargs)


def _shard_hashes(manifest):
  return {s["file"]: s["sha256"] for s in manifest["shards"]}


@pytest.fixture(scope="module")
def reference(real_dir, subset, tmp_path_factory):
  """The subset prepared from the flat layout: the records every other layout must give."""
  root = tmp_path_factory.mktemp("reference")
  source = real_layouts.flat_folder(real_dir, subset, str(root / "src"))
  return _prepare(source, root / "out")


@pytest.fixture(scope="module")
def real_96(real_dir, tmp_path_factory):
  """All 4,500 real photos prepared at the study's 96x96, raw (read-only for tests)."""
  out = tmp_path_factory.mktemp("real96") / "data"
  _prepare(real_dir, out, image_size=96)
  return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("layout, recognised", [
    ("drive_folder", "Google Drive folder"),
    ("drive_folder_image_zip", "Google Drive folder"),
    ("drive_folder_zip", "Google Drive folder"),
    ("kaggle_archive_zip", "Kaggle"),
    ("kaggle_folder", "Kaggle"),
])
def test_every_download_layout_gives_the_same_records(real_dir, subset, reference, layout,
                                                      recognised, tmp_path):
  path = real_layouts.LAYOUTS[layout](real_dir, subset, str(tmp_path / "download"))
  source = sources.CelebAFolderSource(path)
  assert recognised in source.layout.name
  assert source.attribute_names == ("Attractive", "Male")
  # Spawned workers (each loads TensorFlow) once, reading a zip; the reference used one.
  workers = 2 if layout == "kaggle_archive_zip" else 1
  manifest = _prepare(path, tmp_path / "out", num_workers=workers)
  # Same shard bytes: the same records (ids, pixels, attributes) in the same splits and order.
  assert _shard_hashes(manifest) == _shard_hashes(reference)
  assert manifest["splits"] == reference["splits"]
  assert manifest["source"]["layout"] == source.layout.name
  if "kaggle" not in layout:  # Kaggle ships no identity file.
    assert source.identities is not None and len(source.identities) == len(subset)
    assert manifest["identity_file"] == "identity_CelebA.txt"
    with open(tmp_path / "out" / "identity_CelebA.txt", encoding="utf-8") as f:
      assert [line.split()[0] for line in f] == sorted(subset)
  else:
    assert manifest["identity_file"] is None


@pytest.mark.slow
def test_prepare_log_names_the_layout_and_files(real_dir, subset, tmp_path):
  path = real_layouts.kaggle_archive(real_dir, subset, str(tmp_path / "download"))
  result = run_main("prepare_data", f"--source_dir={path}", f"--output_dir={tmp_path / 'out'}",
                    "--image_size=16", "--noprogress")
  assert result.returncode == 0, result.stderr
  assert "recognised Kaggle celeba-dataset (zip archive, CSV metadata)" in result.stderr
  assert f"partition: {path}:list_eval_partition.csv" in result.stderr
  assert f"attributes: {path}:list_attr_celeba.csv" in result.stderr
  assert f"images: {path}:img_align_celeba/img_align_celeba/" in result.stderr
  assert "recognised" in result.stderr and f"{path}:\n" not in result.stderr


@pytest.mark.slow
def test_real_pixels_match_a_pil_crop_and_lanczos_resize(real_dir, real_96):
  manifest = dp.read_manifest(real_96)
  assert {s: v["num_examples"] for s, v in manifest["splits"].items()} == {
      "train": 3420, "validation": 630, "test": 450}
  assert manifest["attribute_names"] == ["Attractive", "Male"]
  checked = 0
  for batch in dp.make_dataset(real_96, "test", 50, shuffle=False, with_ids=True,
                               with_attributes=True).take(2):
    assert batch["attributes"].shape == (50, 2)
    for image_id, image in zip(batch["id"].numpy(), batch["image"].numpy()):
      with Image.open(os.path.join(real_dir, "img_align_celeba", image_id.decode())) as img:
        assert img.size == (178, 218)
        expected = np.asarray(img.convert("RGB").crop((0, 40, 178, 218)).resize(
            (96, 96), Image.LANCZOS))
      np.testing.assert_array_equal(image, expected, err_msg=image_id.decode())
      checked += 1
  assert checked == 100


def test_real_data_verifies_and_loads_through_tfds(real_96):
  report = verify.verify(real_96)
  assert report["ok"] and report["num_records"] == 4500, report
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(real_96)
  assert builder.info.splits["validation"].num_examples == 630
  example = next(iter(builder.as_dataset(split="test", shuffle_files=False)))
  first = next(iter(dp.make_dataset(real_96, "test", 1, shuffle=False, with_ids=True)))
  assert example["id"].numpy() == first["id"].numpy()[0]
  np.testing.assert_array_equal(example["image"].numpy(), first["image"].numpy()[0])
  assert example["attributes"].shape == (2,)


def test_partial_download_is_planned_from_the_images_present(real_dir, subset, reference,
                                                            tmp_path, caplog):
  """The official 202,599-line partition with only the subset's 40 photos present."""
  source_dir = tmp_path / "partial"
  (source_dir / "img_align_celeba").mkdir(parents=True)
  for name in subset:
    os.symlink(os.path.join(real_dir, "img_align_celeba", name),
               source_dir / "img_align_celeba" / name)
  (source_dir / "list_eval_partition.txt").write_text(
      "\n".join(real_layouts.official_partition_lines()) + "\n")
  for name in ("list_attr_celeba.txt", "identity_CelebA.txt"):
    os.symlink(os.path.join(real_dir, name), source_dir / name)
  with caplog.at_level(logging.WARNING):
    manifest = _prepare(source_dir, tmp_path / "out")
  warnings = [r.getMessage() for r in caplog.records if "partial download" in r.getMessage()]
  assert len(warnings) == 1 and "40 of 202,599 listed images are present" in warnings[0]
  # One warning, not a second one about the same 202,559 missing images.
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING and
              r.getMessage().startswith("skipped")]
  # The same shards as the subset listed alone: planned from the files present, not the list.
  assert _shard_hashes(manifest) == _shard_hashes(reference)
  manifest_bytes = os.path.getsize(tmp_path / "out" / "manifest.json")
  assert manifest_bytes < 64 * 1024, manifest_bytes
  summary = manifest["skipped_summary"]
  assert summary["num_missing_from_download"] == 202_599 - len(subset)
  assert summary["num_skipped"] == 202_599 - len(subset) and len(manifest["skipped"]) == 20
  with gzip.open(tmp_path / "out" / summary["file"], "rt") as f:
    rows = f.read().splitlines()
  assert rows[0] == "split\tfile_name\tkind\treason" and len(rows) == 1 + 202_599 - len(subset)
  assert rows[1].startswith("train\t000001.jpg\tmissing\t")
  assert manifest["num_listed"] == 202_599


def _flat_with(real_dir, subset, dest, remove=(), **replace):
  """The flat layout of `subset` without the `remove`d entries and with some files replaced
  by other bytes (keyword names: `.` written as `__`)."""
  path = real_layouts.flat_folder(real_dir, subset, dest)
  for name in remove:
    shutil.rmtree(os.path.join(path, name))
  for name, data in replace.items():
    with open(os.path.join(path, name.replace("__", ".")), "wb") as f:
      f.write(data)
  return path


_HTML = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>"
         b"<body>Too many users have viewed or downloaded this file recently.</body></html>")


@pytest.mark.parametrize("broken, message", [
    ("html_image_zip", "is an HTML page, not a zip archive: Google Drive serves"),
    ("truncated_image_zip", "is truncated or damaged"),
    ("kaggle_zip_without_images", "holds no CelebA images"),
    ("html_kaggle_archive", "is an HTML page, not a zip archive"),
    ("empty_partition", "list_eval_partition.txt is empty: the download failed"),
    ("binary_partition", "list_eval_partition.txt is a binary file"),
    ("empty_attributes", "list_attr_celeba.txt is empty"),
    ("html_attributes", "list_attr_celeba.txt is an HTML page"),
    ("compressed_zip_in_zip", "unzip"),
    ("partition_of_other_images", "none of the 3 images listed"),
])
def test_broken_downloads_are_one_clear_error(real_dir, subset, tmp_path, broken, message):
  dest = str(tmp_path / "download")
  if broken == "html_image_zip":
    path = _flat_with(real_dir, subset, dest, remove=("img_align_celeba",),
                      img_align_celeba__zip=_HTML)
  elif broken == "truncated_image_zip":
    path = real_layouts.drive_folder(real_dir, subset, dest, zipped_images=True)
    zip_path = os.path.join(path, "Img", "img_align_celeba.zip")
    with open(zip_path, "rb") as f:
      data = f.read()
    with open(zip_path, "wb") as f:
      f.write(data[:len(data) // 2])
  elif broken == "kaggle_zip_without_images":
    path = real_layouts.kaggle_archive(real_dir, subset, dest, with_images=False)
  elif broken == "html_kaggle_archive":
    os.makedirs(dest)
    path = os.path.join(dest, "archive.zip")
    with open(path, "wb") as f:
      f.write(_HTML)
  elif broken == "empty_partition":
    path = _flat_with(real_dir, subset, dest, list_eval_partition__txt=b"")
  elif broken == "binary_partition":
    path = _flat_with(real_dir, subset, dest, list_eval_partition__txt=bytes(range(256)) * 4)
  elif broken == "empty_attributes":
    path = _flat_with(real_dir, subset, dest, list_attr_celeba__txt=b"\n")
  elif broken == "html_attributes":
    path = _flat_with(real_dir, subset, dest, list_attr_celeba__txt=_HTML)
  elif broken == "compressed_zip_in_zip":
    path = real_layouts.drive_folder_zip(real_dir, subset, dest,
                                         inner_compression=zipfile.ZIP_DEFLATED)
  else:
    path = _flat_with(real_dir, subset, dest, list_eval_partition__txt=(
        b"900001.jpg 0\n900002.jpg 1\n900003.jpg 2\n"))
  with pytest.raises(DataError, match=message) as error:
    sources.CelebAFolderSource(path)
  assert "\n" not in str(error.value)


def test_broken_downloads_through_the_tool_write_nothing(real_dir, subset, tmp_path):
  path = _flat_with(real_dir, subset, str(tmp_path / "download"), remove=("img_align_celeba",),
                    img_align_celeba__zip=_HTML)
  out = tmp_path / "out"
  result = run_main("prepare_data", f"--source_dir={path}", f"--output_dir={out}")
  assert_clean_error(result, "img_align_celeba.zip is an HTML page", "quota", code=1)
  assert not out.exists()


def test_trimmed_attribute_columns_travel_to_every_reader(real_dir, subset, tmp_path):
  """Any subset of CelebA's 40 columns, in any order: here Male alone, from a Kaggle CSV."""
  path = real_layouts.kaggle_folder(real_dir, subset, str(tmp_path / "download"))
  csv_path = os.path.join(path, "list_attr_celeba.csv")
  with open(csv_path, encoding="utf-8") as f:
    rows = [line.split(",") for line in f.read().splitlines()]
  with open(csv_path, "w", encoding="utf-8") as f:
    f.write("".join(f"{row[0]},{row[2]}\n" for row in rows))
  manifest = _prepare(path, tmp_path / "out")
  assert manifest["attribute_names"] == ["Male"]
  features = json.loads((tmp_path / "out" / "features.json").read_text())
  assert "attributes" in json.dumps(features)
  batch = next(iter(dp.make_dataset(str(tmp_path / "out"), "train", 8, shuffle=False,
                                    with_ids=True, with_attributes=True)))
  expected = {row[0]: int(row[2]) for row in rows[1:]}
  for image_id, attrs in zip(batch["id"].numpy(), batch["attributes"].numpy()):
    assert attrs.tolist() == [expected[image_id.decode()]]
