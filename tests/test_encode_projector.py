"""tools.encode --projector_dir: TensorBoard's embedding projector of the first N z-points.

The files are checked here (vectors, metadata columns and rows, sprite); that TensorBoard serves
such a folder is tests/test_projector.py's real-server test. Models are conftest's tiny untrained
runs: what matters is which rows, ids, attributes and faces land where.
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from data_pipeline import locking
from evaluation import projector
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main
from tests.toolrun import run_tool

FILES = (projector.CONFIG_FILE, projector.VECTORS_FILE, projector.METADATA_FILE,
         projector.SPRITE_FILE)


def _metadata(folder):
  """(header, rows) of metadata.tsv; rows as lists of cells."""
  lines = (folder / projector.METADATA_FILE).read_text(encoding="utf-8").splitlines()
  return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def _vectors(folder):
  rows = (folder / projector.VECTORS_FILE).read_text(encoding="utf-8").splitlines()
  return np.array([row.split("\t") for row in rows], dtype=np.float64)


def test_encode_writes_a_projector_of_the_first_points(tiny_runs, prepared_data_dir, tmp_path):
  from data_pipeline import make_dataset  # pylint: disable=g-import-not-at-top
  z_path, folder = tmp_path / "z" / "Z.npy", tmp_path / "cloud"
  # Batches of 4: the 10 points end inside the third batch.
  result = run_main("encode", "--model_dir", tiny_runs["ae"], "--data_dir", prepared_data_dir,
                    "--output", z_path, "--batch_size", "4", "--projector_dir", folder,
                    "--projector_points", "10", "--projector_thumbnail", "16")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(folder)) == sorted(FILES)  # No lock or staging folder left.

  with open(prepared_data_dir + "/manifest.json", encoding="utf-8") as f:
    names = json.load(f)["attribute_names"]
  header, rows = _metadata(folder)
  assert header == ["id", "split", *names] and len(names) == 40  # No identity file here.
  assert len(rows) == 10 and {row[1] for row in rows} == {"train"}
  ids = np.load(tmp_path / "z" / "Z.ids.npy")
  assert [row[0] for row in rows] == list(ids[:10])
  batch = next(make_dataset(prepared_data_dir, "train", 10, shuffle=False, with_ids=True,
                            with_attributes=True, max_images=10).as_numpy_iterator())
  assert [row[0] for row in rows] == [i.decode() for i in batch["id"]]
  np.testing.assert_array_equal(np.array([row[2:] for row in rows], int), batch["attributes"])
  np.testing.assert_allclose(_vectors(folder), np.load(z_path)[:10], rtol=1e-5, atol=1e-6)

  with Image.open(folder / projector.SPRITE_FILE) as sprite:
    assert sprite.size == (4 * 16, 4 * 16)  # ceil(sqrt(10)) faces a side.
    pixels = np.asarray(sprite)
  first = Image.fromarray(batch["image"][5]).resize((16, 16), Image.LANCZOS)
  np.testing.assert_array_equal(pixels[16:32, 16:32], np.asarray(first))  # Row 1, column 1.
  assert (folder / projector.CONFIG_FILE).read_text().count("single_image_dim: 16") == 2

  with open(tmp_path / "z" / "Z.json", encoding="utf-8") as f:
    record = json.load(f)["projector"]
  assert record["projector_dir"] == str(folder) and record["num_points"] == 10
  assert record["columns"] == header and record["thumbnail"] == 16


def _source_with_identities(synthetic_celeba_dir, path):
  """A copy of the synthetic faces with only Attractive and Male, and identities for most."""
  shutil.copytree(synthetic_celeba_dir, path)
  attr_path = os.path.join(path, "list_attr_celeba.txt")
  with open(attr_path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  names = lines[1].split()
  keep = [names.index("Attractive"), names.index("Male")]
  rows = [line.split() for line in lines[2:] if line.strip()]
  with open(attr_path, "w", encoding="utf-8") as f:
    f.write(f"{len(rows)}\nAttractive Male\n")
    f.writelines(" ".join([row[0]] + [row[1 + k] for k in keep]) + "\n" for row in rows)
  # Every fifth image has none: its cell stays empty.
  identities = {row[0]: 100 + i % 7 for i, row in enumerate(rows) if i % 5 != 1}
  with open(os.path.join(path, "identity_CelebA.txt"), "w", encoding="utf-8") as f:
    f.writelines(f"{name} {number}\n" for name, number in identities.items())
  return identities, {row[0]: row[1:] for row in rows}, keep


def test_projector_has_the_data_attributes_and_identities(tiny_runs, synthetic_celeba_dir,
                                                           tmp_path):
  # pylint: disable=g-import-not-at-top
  from data_pipeline import sources
  from data_pipeline import writer
  from evaluation import encoding
  from modeling import run_dir
  # pylint: enable=g-import-not-at-top
  identities, attributes, keep = _source_with_identities(synthetic_celeba_dir,
                                                         str(tmp_path / "source"))
  data_dir = str(tmp_path / "data")
  writer.prepare(sources.CelebAFolderSource(str(tmp_path / "source")), data_dir, image_size=32,
                 num_workers=1, progress=False)
  assert os.path.isfile(os.path.join(data_dir, writer.IDENTITY_FILE))
  run = run_dir.load_run(tiny_runs["vae"])

  records = []
  for name in ("a", "b"):  # The same command twice: the same files.
    records.append(encoding.encode_split(
        run, data_dir, "test", str(tmp_path / name / "Z.npy"), batch_size=4,
        projector_dir=str(tmp_path / name / "cloud"), projector_thumbnail=8))
  header, rows = _metadata(tmp_path / "a" / "cloud")
  assert header == ["id", "split", "Attractive", "Male", "identity"]
  assert len(rows) == 6 == records[0]["projector"]["num_points"]  # The whole test split.
  for image_id, split, attractive, male, identity in rows:
    assert split == "test" and [attractive, male] == [attributes[image_id][k] for k in keep]
    assert identity == str(identities.get(image_id, ""))
  assert any(row[4] == "" for row in rows) and any(row[4] for row in rows)
  assert os.path.join(data_dir, writer.IDENTITY_FILE) in records[0]["provenance"]["inputs"]
  for file_name in FILES:
    assert ((tmp_path / "a" / "cloud" / file_name).read_bytes()
            == (tmp_path / "b" / "cloud" / file_name).read_bytes()), file_name


def test_bad_projector_flags_and_a_locked_folder(tiny_runs, prepared_data_dir, tmp_path):
  base = ["--model_dir", tiny_runs["ae"], "--data_dir", prepared_data_dir, "--output",
          tmp_path / "Z.npy", "--projector_dir", tmp_path / "cloud"]
  assert_clean_error(run_main("encode", *base, "--projector_points", "0"), "--projector_points",
                     code=2)
  assert_clean_error(run_main("encode", *base, "--projector_points", "30000"),
                     "--projector_points must be 1..28900 for 48 px", code=2)
  assert_clean_error(run_main("encode", *base, "--projector_thumbnail", "4096",
                              "--projector_points", "5"), "1..4 for 4096 px", code=2)
  with locking.output_dir(str(tmp_path / "cloud"), "someone", "--projector_dir"):
    assert_clean_error(run_tool("encode", *base), "--projector_dir", "someone", code=1)
  assert not os.path.exists(tmp_path / "Z.npy") and not os.path.exists(tmp_path / "cloud")


@pytest.mark.parametrize("points, thumbnail, fits", [(1, 48, True), (28900, 48, True),
                                                      (28901, 48, False), (0, 48, False),
                                                      (1, 0, False)])
def test_projector_problem_matches_the_sprite_limit(points, thumbnail, fits):
  from evaluation import encoding  # pylint: disable=g-import-not-at-top
  assert (encoding.projector_problem(points, thumbnail) is None) == fits
