"""The synthetic CelebA: layout and formats, determinism, safe reruns, attributes vs. pixels."""

import json
import os

import numpy as np
from PIL import Image
import pytest
# TFDS's CelebA builder holds the reference names (importing it loads no TensorFlow).
from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as tfds_celeb_a

from data_pipeline import attributes
from data_pipeline import locking
from data_pipeline import synthetic
from data_pipeline.synthetic import faces
from data_pipeline.errors import DataError
from tests import toolrun

NUM_IMAGES = 200
SEED = 7
_TEXT_FILES = (attributes.PARTITION_FILE, attributes.ATTRIBUTE_FILE, attributes.LANDMARK_FILE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """200 faces written once for the module."""
  output_dir = tmp_path_factory.mktemp("synthetic") / "celeba"
  summary = synthetic.write_synthetic_celeba(output_dir, NUM_IMAGES, seed=SEED)
  return output_dir, summary


def _read_lines(path):
  with open(path, encoding="ascii") as f:
    return f.read().splitlines()


def _read_table(path, headings, width):
  """Parses a CelebA table file, checking its exact column layout along the way."""
  lines = _read_lines(path)
  assert lines[0] == str(len(lines) - 2)
  assert lines[1].split() == list(headings)
  rows = {}
  for line in lines[2:]:
    assert len(line) == 10 + width * len(headings), line
    name, *values = line.split()
    rows[name] = [int(v) for v in values]
  return rows


def _file_bytes(directory):
  """name -> content of every image and text file (synthetic.json holds timings, so not it)."""
  names = [os.path.join(attributes.IMAGE_DIR, n)
           for n in sorted(os.listdir(os.path.join(directory, attributes.IMAGE_DIR)))]
  contents = {}
  for name in names + list(_TEXT_FILES):
    with open(os.path.join(directory, name), "rb") as f:
      contents[name] = f.read()
  return contents


def test_attribute_names_are_celeba_s():
  assert list(attributes.ATTRIBUTE_NAMES) == tfds_celeb_a.ATTR_HEADINGS
  assert list(attributes.LANDMARK_NAMES) == tfds_celeb_a.LANDMARK_HEADINGS
  assert attributes.SPLIT_NAMES == {0: "train", 1: "validation", 2: "test"}


def test_layout_and_formats_parse_like_celeba(dataset):
  output_dir, summary = dataset
  names = [f"{i:06d}.jpg" for i in range(1, NUM_IMAGES + 1)]
  assert sorted(os.listdir(output_dir / attributes.IMAGE_DIR)) == names
  for name in names[::10]:
    with Image.open(output_dir / attributes.IMAGE_DIR / name) as image:
      assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (178, 218))

  partition = [line.split(" ") for line in _read_lines(output_dir / attributes.PARTITION_FILE)]
  assert [name for name, _ in partition] == names
  codes = [int(code) for _, code in partition]
  assert codes == sorted(codes)  # contiguous blocks, as in CelebA
  assert [codes.count(c) for c in (0, 1, 2)] == [160, 20, 20]
  assert summary["splits"] == {"train": 160, "validation": 20, "test": 20}

  rows = _read_table(output_dir / attributes.ATTRIBUTE_FILE, attributes.ATTRIBUTE_NAMES, 3)
  assert list(rows) == names
  table = np.array(list(rows.values()))
  assert set(np.unique(table)) == {-1, 1}
  column = {name: table[:, i] > 0 for i, name in enumerate(attributes.ATTRIBUTE_NAMES)}
  hair = sum(column[n].astype(int) for n in ("Black_Hair", "Blond_Hair", "Brown_Hair",
                                              "Gray_Hair"))
  assert hair.max() == 1
  assert not np.any(column["No_Beard"] & (column["Goatee"] | column["Mustache"]))
  assert not np.any(column["Straight_Hair"] & column["Wavy_Hair"])
  assert not np.any(column["Bald"] & column["Bangs"])
  # Common attributes show up in both states; the mix follows CelebA roughly.
  for name in ("Male", "Smiling", "Young", "Eyeglasses", "Mouth_Slightly_Open", "Bangs"):
    assert 0.04 < column[name].mean() < 0.96, name

  landmarks = np.array(list(_read_table(output_dir / attributes.LANDMARK_FILE,
                                        attributes.LANDMARK_NAMES, 5).values()))
  assert landmarks.shape == (NUM_IMAGES, 10)
  # Where CelebA's aligned faces have them: eyes near (69, 111) and (108, 111), nose (88, 135),
  # mouth corners (72, 152) and (105, 152); all inside the crop box (0, 40, 178, 218).
  mean = landmarks.mean(axis=0)
  celeba = np.array([69, 111, 108, 111, 88, 135, 72, 152, 105, 152])
  assert np.abs(mean - celeba).max() < 8, mean
  assert landmarks[:, 1::2].min() > 40 + 40 and landmarks[:, 1::2].max() < 218 - 30

  with open(output_dir / synthetic.METADATA_FILE, encoding="utf-8") as f:
    metadata = json.load(f)
  assert metadata["complete"] and metadata["seed"] == SEED
  assert metadata["num_images"] == NUM_IMAGES
  assert metadata["generator_version"] == synthetic.GENERATOR_VERSION
  assert metadata["factor_names"] == list(synthetic.FACTOR_NAMES)
  assert metadata["images_sha256"] == summary["images_sha256"]


def test_rows_are_the_factors_that_drew_each_image(dataset):
  output_dir, _ = dataset
  rows = _read_table(output_dir / attributes.ATTRIBUTE_FILE, attributes.ATTRIBUTE_NAMES, 3)
  for index in (0, 57, NUM_IMAGES - 1):
    factors = synthetic.face_factors(SEED, index)
    name = synthetic.file_name(index)
    assert rows[name] == synthetic.attribute_vector(factors)
    expected = faces.encode_jpeg(synthetic.render_face(factors), 95)
    assert (output_dir / attributes.IMAGE_DIR / name).read_bytes() == expected


def test_same_seed_same_bytes_whatever_workers_or_count(dataset, tmp_path):
  output_dir, _ = dataset
  reference = _file_bytes(output_dir)
  synthetic.write_synthetic_celeba(tmp_path / "twin", NUM_IMAGES, seed=SEED, num_workers=2)
  assert _file_bytes(tmp_path / "twin") == reference

  synthetic.write_synthetic_celeba(tmp_path / "short", 30, seed=SEED)
  short = _file_bytes(tmp_path / "short")
  images = [n for n in short if n.endswith(".jpg")]
  assert len(images) == 30 and all(short[n] == reference[n] for n in images)

  synthetic.write_synthetic_celeba(tmp_path / "other", 30, seed=SEED + 1)
  other = _file_bytes(tmp_path / "other")
  assert all(other[n] != reference[n] for n in images)
  assert other[attributes.ATTRIBUTE_FILE] != short[attributes.ATTRIBUTE_FILE]


def test_rerun_is_a_no_op_and_interrupted_runs_resume(tmp_path):
  output_dir = tmp_path / "faces"
  first = synthetic.write_synthetic_celeba(output_dir, 12, seed=3)
  reference = _file_bytes(output_dir)
  mtimes = {p: os.stat(output_dir / p).st_mtime_ns for p in reference}

  again = synthetic.write_synthetic_celeba(output_dir, 12, seed=3)
  assert again["skipped"] and again["rendered"] == 0
  assert again["images_sha256"] == first["images_sha256"]
  assert {p: os.stat(output_dir / p).st_mtime_ns for p in reference} == mtimes

  # An interrupted run: images missing, a temporary file left behind, metadata not complete.
  image_dir = output_dir / attributes.IMAGE_DIR
  for name in ("000004.jpg", "000011.jpg"):
    os.remove(image_dir / name)
  (image_dir / "000004.jpg.tmp-999").write_bytes(b"half an image")
  os.remove(output_dir / attributes.ATTRIBUTE_FILE)
  resumed = synthetic.write_synthetic_celeba(output_dir, 12, seed=3)
  assert (resumed["rendered"], resumed["reused"]) == (2, 10)
  assert _file_bytes(output_dir) == reference

  # Fewer images: the surplus goes; more again: only the new ones are drawn.
  synthetic.write_synthetic_celeba(output_dir, 5, seed=3)
  assert len(os.listdir(image_dir)) == 5
  assert _read_lines(output_dir / attributes.PARTITION_FILE)[-1] == "000005.jpg 2"
  grown = synthetic.write_synthetic_celeba(output_dir, 12, seed=3)
  assert grown["rendered"] == 7 and _file_bytes(output_dir) == reference

  # Another JPEG quality re-renders everything.
  requality = synthetic.write_synthetic_celeba(output_dir, 12, seed=3, jpeg_quality=80)
  assert requality["rendered"] == 12
  assert _file_bytes(output_dir)["img_align_celeba/000001.jpg"] != reference[
      "img_align_celeba/000001.jpg"]


def test_refuses_foreign_or_other_seed_dirs_unless_overwrite(tmp_path):
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(DataError, match="not empty.*--overwrite"):
    synthetic.write_synthetic_celeba(foreign, 4, seed=1)
  assert os.listdir(foreign) == ["notes.txt"]

  synthetic.write_synthetic_celeba(tmp_path / "faces", 4, seed=1)
  before = _file_bytes(tmp_path / "faces")
  with pytest.raises(DataError, match="seed 1, not 2"):
    synthetic.write_synthetic_celeba(tmp_path / "faces", 4, seed=2)
  assert _file_bytes(tmp_path / "faces") == before
  summary = synthetic.write_synthetic_celeba(tmp_path / "faces", 4, seed=2, overwrite=True)
  assert summary["rendered"] == 4 and _file_bytes(tmp_path / "faces") != before

  with pytest.raises(DataError, match="is a file"):
    synthetic.write_synthetic_celeba(foreign / "notes.txt", 4)
  with pytest.raises(ValueError, match="num_images"):
    synthetic.write_synthetic_celeba(tmp_path / "none", 0)


def test_one_writer_at_a_time_and_a_killed_writer_s_lock_does_not_block(tmp_path):
  output_dir = tmp_path / "faces"
  with locking.output_dir(str(output_dir), "make_synthetic_faces", "--output_dir"):
    with pytest.raises(DataError, match=rf"^--output_dir {output_dir} is being written by "
                       rf"another make_synthetic_faces process \(pid {os.getpid()}\); wait for "
                       "it to finish, or choose another --output_dir$"):
      synthetic.write_synthetic_celeba(output_dir, 4, seed=1)
    assert os.listdir(output_dir) == [locking.OUTPUT_LOCK_FILE]  # Nothing written.
  # The lock file of a killed writer (no process holds it): taken over, and gone at the end.
  output_dir.mkdir()
  (output_dir / locking.OUTPUT_LOCK_FILE).write_text("999999999 make_synthetic_faces\n")
  summary = synthetic.write_synthetic_celeba(output_dir, 4, seed=1)
  assert summary["rendered"] == 4
  assert sorted(os.listdir(output_dir)) == sorted([attributes.IMAGE_DIR, synthetic.METADATA_FILE,
                                                   *_TEXT_FILES])


def _plain_factors():
  """A face with none of the optional features, so that each one can be switched on alone."""
  factors = synthetic.face_factors(0, 0)
  for name in synthetic.FACTOR_NAMES:
    if isinstance(factors[name], bool):
      factors[name] = False
  factors.update(Young=True, Straight_Hair=True, hair_color="brown", hair_length=0.1,
                 light_strength=0.0, tilt=0.0, yaw=0.0, offset_x=0.0, offset_y=0.0)
  return factors


def _box_diff(image_a, image_b, box):
  """Mean absolute pixel difference inside box (x0, y0, x1, y1)."""
  a = np.asarray(image_a, np.float32)
  b = np.asarray(image_b, np.float32)
  x0, y0, x1, y1 = box
  return float(np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean())


def _changed_pixels(image_a, image_b, tolerance=10):
  """How many pixels differ by more than `tolerance` levels in some channel."""
  difference = np.abs(np.asarray(image_a, np.int16) - np.asarray(image_b, np.int16))
  return int((difference.max(axis=-1) > tolerance).sum())


def test_each_attribute_changes_its_part_of_the_face():
  base = _plain_factors()
  base_image = synthetic.render_face(base)
  lx, ly, rx, ry, nx, ny, mlx, mly, mrx, mry = synthetic.landmarks(base)
  eyes = (lx - 14, ly - 12, rx + 14, ry + 12)
  mouth = (mlx - 4, min(mly, mry) - 8, mrx + 4, max(mly, mry) + 10)
  corner = (0, 0, 25, 25)  # background, far from everything that an attribute draws
  local = {"Eyeglasses": eyes, "Narrow_Eyes": eyes, "Smiling": mouth,
           "Mouth_Slightly_Open": mouth, "Wearing_Lipstick": mouth, "Big_Lips": mouth}
  for name, box in local.items():
    image = synthetic.render_face(dict(base, **{name: True}))
    inside, outside = _box_diff(image, base_image, box), _box_diff(image, base_image, corner)
    assert inside > 4.0 and outside == 0.0, (name, inside, outside)

  drawn = set(attributes.ATTRIBUTE_NAMES) - {"Attractive", "No_Beard", "Black_Hair",
                                              "Blond_Hair", "Brown_Hair", "Gray_Hair"}
  for name in sorted(drawn):
    # Straight and wavy are exclusive: with neither, the hair curls.
    flipped = dict(base, **{name: not base[name]}, **({"Straight_Hair": False}
                                                      if name == "Wavy_Hair" else {}))
    assert _changed_pixels(synthetic.render_face(flipped), base_image) >= 20, name
  for color in ("black", "blond", "gray", "red"):
    image = synthetic.render_face(dict(base, hair_color=color))
    assert _box_diff(image, base_image, (0, 0, 178, 218)) > 1.0, color
  # Attractive is a label only, as subjective as CelebA's.
  assert synthetic.render_face(dict(base, Attractive=True)).tobytes() == base_image.tobytes()


def test_attribute_vector_derives_hair_and_beard():
  factors = dict(_plain_factors(), hair_color="gray", Goatee=True, Male=True)
  values = dict(zip(attributes.ATTRIBUTE_NAMES, synthetic.attribute_vector(factors)))
  assert values["Gray_Hair"] == 1 and values["Black_Hair"] == -1
  assert values["Goatee"] == 1 and values["No_Beard"] == -1
  assert dict(zip(attributes.ATTRIBUTE_NAMES,
                  synthetic.attribute_vector(_plain_factors())))["No_Beard"] == 1


def test_split_sizes():
  assert synthetic.split_sizes(1000) == (800, 100, 100)
  assert synthetic.split_sizes(10) == (8, 1, 1)
  assert synthetic.split_sizes(3) == (1, 1, 1)
  assert synthetic.split_sizes(1) == (1, 0, 0)


def test_command_line(dataset, tmp_path):
  output_dir, _ = dataset
  result = toolrun.run_tool("make_synthetic_faces", "--output_dir", tmp_path / "cli",
                            "--num_images", 8, "--seed", SEED, "--num_workers", 2)
  assert result.returncode == 0, result.stderr
  made = _file_bytes(tmp_path / "cli")
  reference = _file_bytes(output_dir)
  assert all(made[n] == reference[n] for n in made if n.endswith(".jpg"))
  assert "--num_images=8" in (tmp_path / "cli" / "flags.txt").read_text()

  toolrun.assert_clean_error(
      toolrun.run_main("make_synthetic_faces", "--output_dir", tmp_path / "x", "--num_images", 0),
      "--num_images", code=2)
  toolrun.assert_clean_error(toolrun.run_main("make_synthetic_faces", "--num_images", 5),
                             "--output_dir", code=2)
  assert not os.path.exists(tmp_path / "x")
