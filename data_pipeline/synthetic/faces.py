"""The built-in synthetic CelebA: cartoon faces written in CelebA's own folder layout.

Real CelebA cannot be downloaded everywhere (and not at all in CI), so every demo and test uses
these faces. `write_synthetic_celeba` writes img_align_celeba/*.jpg (178x218),
list_eval_partition.txt, list_attr_celeba.txt (the ground-truth factors that drew each face, as
CelebA's 40 attributes), list_landmarks_align_celeba.txt and synthetic.json, so the CelebA
folder reader handles it unchanged. Image k depends only on (seed, k), so a seed gives
byte-identical files whatever the image count or workers. Writes are crash-safe and resumable,
and the output dir is locked while written (data_pipeline.locking). NumPy and PIL only, no
TensorFlow, so tools and tests load it fast.
"""

import hashlib
import io
import json
import os
import re
import time

from absl import logging
import numpy as np
import tqdm

from data_pipeline import locking
from data_pipeline import pool as pool_lib
from data_pipeline import provenance
from data_pipeline.attributes import ATTRIBUTE_FILE
from data_pipeline.attributes import ATTRIBUTE_NAMES
from data_pipeline.attributes import IMAGE_DIR
from data_pipeline.attributes import LANDMARK_FILE
from data_pipeline.attributes import LANDMARK_NAMES
from data_pipeline.attributes import PARTITION_FILE
from data_pipeline.attributes import SPLIT_NAMES
from data_pipeline.errors import DataError
from data_pipeline.synthetic.factors import FACTOR_NAMES
from data_pipeline.synthetic.factors import attribute_vector
from data_pipeline.synthetic.factors import sample_factors
from data_pipeline.synthetic.render import IMAGE_SIZE
from data_pipeline.synthetic.render import landmarks
from data_pipeline.synthetic.render import render_face

# Bump whenever the drawing or the factor sampling changes: the same seed then gives other images,
# and outputs of an older version are re-rendered rather than mixed with new ones.
GENERATOR_VERSION = "1.1"
METADATA_FILE = "synthetic.json"
# The partition's fractions (train takes the rest), as in CelebA (162,770 / 19,867 / 19,962).
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1

_IMAGE_NAME = re.compile(r"^\d{6}\.jpg$")
_TMP_MARK = ".tmp-"
_MAX_IMAGES = 999_999  # CelebA's six-digit file names.


def image_rng(seed, index):
  """The random generator of image `index` (0-based): a function of (seed, index) only."""
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def face_factors(seed, index):
  """The factors of image `index` (0-based) of the dataset with this seed."""
  return sample_factors(image_rng(seed, index))


def file_name(index):
  """CelebA's file name of image `index` (0-based): 0 -> "000001.jpg"."""
  return f"{index + 1:06d}.jpg"


def split_sizes(num_images):
  """(train, validation, test) sizes: about 80/10/10, each split non-empty from 3 images on."""
  validation = round(num_images * VALIDATION_FRACTION)
  test = round(num_images * TEST_FRACTION)
  if num_images >= 3:
    validation, test = max(validation, 1), max(test, 1)
  return num_images - validation - test, validation, test


def split_codes(num_images):
  """The split code (0 train, 1 validation, 2 test) of every image, in file order."""
  train, validation, test = split_sizes(num_images)
  return [0] * train + [1] * validation + [2] * test


def encode_jpeg(image, quality):
  """JPEG bytes of a PIL image; fixed encoder settings so that bytes are reproducible."""
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
  return buffer.getvalue()


def _write_image(path, data):
  # Renamed into place so that a crash never leaves a truncated JPEG under a final name. No fsync:
  # the images are cheap to regenerate, and syncing each of them would double the run time.
  tmp_path = f"{path}{_TMP_MARK}{os.getpid()}"
  with open(tmp_path, "wb") as f:
    f.write(data)
  os.replace(tmp_path, path)


def _process_range(image_dir, seed, start, stop, jpeg_quality, existing):
  """Renders images start..stop-1 (reading those in `existing` instead) and describes them.

  Runs in worker processes, hence plain arguments and a module-level function. Returns compact
  arrays, so that the parent holds a few bytes per image even for all of CelebA's 202,599:
  attributes int8 [n, 40], landmarks int16 [n, 10], and the sha256 digests of the JPEG files.
  """
  attributes = np.empty((stop - start, len(ATTRIBUTE_NAMES)), np.int8)
  points = np.empty((stop - start, len(LANDMARK_NAMES)), np.int16)
  digests = []
  for row, index in enumerate(range(start, stop)):
    factors = face_factors(seed, index)
    path = os.path.join(image_dir, file_name(index))
    if index in existing:
      with open(path, "rb") as f:
        data = f.read()
    else:
      data = encode_jpeg(render_face(factors), jpeg_quality)
      _write_image(path, data)
    attributes[row] = attribute_vector(factors)
    points[row] = landmarks(factors)
    digests.append(hashlib.sha256(data).digest())
  return attributes, points, digests


def _read_metadata(output_dir):
  """The synthetic.json of a previous run, or None when absent or unreadable."""
  try:
    with open(os.path.join(output_dir, METADATA_FILE), encoding="utf-8") as f:
      metadata = json.load(f)
  except (OSError, ValueError):
    return None
  return metadata if isinstance(metadata, dict) else None


def _listdir(path):
  try:
    return os.listdir(path)
  except FileNotFoundError:
    return []


def _remove_stale(image_dir, keep_names):
  """Deletes leftover temporary files and numbered JPEGs that are not in `keep_names`."""
  for name in _listdir(image_dir):
    if _TMP_MARK in name or (_IMAGE_NAME.match(name) and name not in keep_names):
      os.remove(os.path.join(image_dir, name))


def _check_output_dir(output_dir, previous, seed, overwrite):
  if overwrite or not set(_listdir(output_dir)) - {locking.OUTPUT_LOCK_FILE}:
    return
  if previous is None:
    raise DataError(f"output dir {output_dir} is not empty and holds no synthetic faces "
                    f"({METADATA_FILE} missing); choose an empty or new dir, or pass --overwrite")
  if previous.get("seed") != seed:
    raise DataError(f"output dir {output_dir} holds synthetic faces of seed "
                    f"{previous.get('seed')}, not {seed}; use that seed, another dir, or pass "
                    f"--overwrite")


def _is_complete(output_dir, previous, settings, names):
  if not previous or not previous.get("complete"):
    return False
  if any(previous.get(key) != value for key, value in settings.items()):
    return False
  for text_file in (PARTITION_FILE, ATTRIBUTE_FILE, LANDMARK_FILE):
    if not os.path.isfile(os.path.join(output_dir, text_file)):
      return False
  return set(names) <= set(_listdir(os.path.join(output_dir, IMAGE_DIR)))


def _format_table(num_images, headings, rows, width):
  """CelebA's table format: a count line, a heading line, then "name v1 v2 ..." per image."""
  lines = [str(num_images), " ".join(headings) + " "]
  lines += [file_name(i) + "".join(f"{v:{width}d}" for v in row)
            for i, row in enumerate(np.asarray(rows).tolist())]
  return ("\n".join(lines) + "\n").encode("ascii")


def _format_partition(num_images):
  codes = split_codes(num_images)
  return "".join(f"{file_name(i)} {code}\n" for i, code in enumerate(codes)).encode("ascii")


def _chunk_size(num_images, num_workers):
  # Small enough to spread the work evenly and keep the progress bar moving, large enough that
  # inter-process traffic stays negligible next to rendering (~5 ms an image).
  return max(1, min(128, -(-num_images // (4 * num_workers))))


def _run_workers(image_dir, seed, num_images, jpeg_quality, existing, num_workers, progress):
  """Renders every image, in parallel when asked.

  Returns attributes int8 [N, 40], landmarks int16 [N, 10] and the per-image sha256 digests, in
  file order.
  """
  size = _chunk_size(num_images, num_workers)
  chunks = [(start, min(start + size, num_images)) for start in range(0, num_images, size)]
  skip = [set() for _ in chunks]
  for index in existing:
    skip[index // size].add(index)
  num_workers = min(num_workers, len(chunks))
  results = []
  bar = tqdm.tqdm(total=num_images, unit="img", desc="synthetic faces", disable=not progress)
  with bar:
    if num_workers == 1:
      for (start, stop), chunk_skip in zip(chunks, skip):
        results.append(_process_range(image_dir, seed, start, stop, jpeg_quality, chunk_skip))
        bar.update(stop - start)
    else:
      with pool_lib.process_pool(num_workers, what="make_synthetic_faces worker") as pool:
        futures = [pool.submit(_process_range, image_dir, seed, start, stop, jpeg_quality,
                               chunk_skip) for (start, stop), chunk_skip in zip(chunks, skip)]
        for future, (start, stop) in zip(futures, chunks):
          results.append(future.result())
          bar.update(stop - start)
  attributes = np.concatenate([r[0] for r in results])
  points = np.concatenate([r[1] for r in results])
  digests = [digest for r in results for digest in r[2]]
  return attributes, points, digests


def write_synthetic_celeba(output_dir, num_images, seed=0, num_workers=1, jpeg_quality=95,
                           overwrite=False, progress=False, on_complete=None):
  """Writes `num_images` synthetic faces in CelebA's folder layout under `output_dir`.

  Args:
    output_dir: created if needed. An existing non-empty dir must hold synthetic faces of the
      same seed (it is then completed or extended), unless `overwrite`.
    num_images: 1 to 999,999 (CelebA's six-digit file names).
    seed: non-negative int; image k depends only on (seed, k).
    num_workers: processes that render; the output does not depend on it.
    jpeg_quality: 1 to 100; CelebA's images are about 95.
    overwrite: re-render every image, even where a matching previous output is there, and
      accept a non-empty dir of anything else (its img_align_celeba/NNNNNN.jpg files are
      replaced; other files are left alone).
    progress: show a progress bar on stderr.
    on_complete: None, or a callable(output_dir) run once the folder is complete, while its
      lock is still held (tools.make_synthetic_faces writes its flags.txt there).

  Returns:
    A summary dict: output_dir, num_images, seed, splits (name -> count), rendered (images drawn
    by this call), reused (images kept from a previous run), skipped (True when the output was
    already complete), images_sha256 (digest over all image files in order), elapsed_s.

  Raises:
    DataError: the output dir is a file, cannot be created or written into, is being written by
      another process (or another call in this one), or holds something other than this seed's
      faces.
    ValueError: an argument is out of range.
  """
  start_time = time.perf_counter()
  if not 1 <= num_images <= _MAX_IMAGES:
    raise ValueError(f"num_images must be in [1, {_MAX_IMAGES}], got {num_images}")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}")
  seed = int(seed)
  if not 1 <= jpeg_quality <= 100:
    raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
  if num_workers < 1:
    raise ValueError(f"num_workers must be >= 1, got {num_workers}")

  output_dir = os.fspath(output_dir)
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise DataError(f"output dir {output_dir} is a file; pass a directory path")
  # Locked before anything there is read or changed (--overwrite replaces images), and until
  # synthetic.json says complete, so that a second writer is refused instead of mixing in.
  with locking.output_dir(output_dir, "make_synthetic_faces", "--output_dir"):
    summary = _write_locked(output_dir, num_images, seed, num_workers, jpeg_quality, overwrite,
                            progress, start_time)
    if on_complete is not None:
      on_complete(output_dir)
    return summary


def _write_locked(output_dir, num_images, seed, num_workers, jpeg_quality, overwrite, progress,
                  start_time):
  """write_synthetic_celeba with `output_dir` created and locked."""
  previous = _read_metadata(output_dir)
  _check_output_dir(output_dir, previous, seed, overwrite)
  names = [file_name(i) for i in range(num_images)]
  image_settings = {"seed": seed, "generator_version": GENERATOR_VERSION,
                    "jpeg_quality": jpeg_quality}
  settings = dict(image_settings, num_images=num_images)
  train, validation, test = split_sizes(num_images)
  splits = {SPLIT_NAMES[0]: train, SPLIT_NAMES[1]: validation, SPLIT_NAMES[2]: test}

  if not overwrite and _is_complete(output_dir, previous, settings, names):
    logging.info("%s already holds these %d synthetic faces (seed %d); nothing to do",
                 output_dir, num_images, seed)
    return {"output_dir": output_dir, "num_images": num_images, "seed": seed, "splits": splits,
            "rendered": 0, "reused": num_images, "skipped": True,
            "images_sha256": previous.get("images_sha256"),
            "elapsed_s": time.perf_counter() - start_time}

  image_dir = os.path.join(output_dir, IMAGE_DIR)
  os.makedirs(image_dir, exist_ok=True)
  reuse = (not overwrite and previous is not None
           and all(previous.get(key) == value for key, value in image_settings.items()))
  # Declare the new settings before touching any image: if this run is interrupted, the next
  # one knows which images on disk belong to these settings.
  metadata = dict(settings, complete=False, image_size=list(IMAGE_SIZE))
  provenance.atomic_write_json(os.path.join(output_dir, METADATA_FILE), metadata)
  keep = set(names) if reuse else set()
  _remove_stale(image_dir, keep)
  on_disk = set(_listdir(image_dir))
  existing = {i for i, name in enumerate(names) if name in on_disk}

  attributes, points, digests = _run_workers(image_dir, seed, num_images, jpeg_quality, existing,
                                             num_workers, progress)
  # One digest for the whole image set: the sha256 of the images' sha256 digests, in file order.
  digest = hashlib.sha256(b"".join(digests)).hexdigest()

  provenance.atomic_write_bytes(os.path.join(output_dir, PARTITION_FILE),
                                _format_partition(num_images))
  provenance.atomic_write_bytes(os.path.join(output_dir, ATTRIBUTE_FILE),
                                _format_table(num_images, ATTRIBUTE_NAMES, attributes, 3))
  provenance.atomic_write_bytes(os.path.join(output_dir, LANDMARK_FILE),
                                _format_table(num_images, LANDMARK_NAMES, points, 5))
  elapsed = time.perf_counter() - start_time
  positives = (attributes > 0).mean(axis=0)
  metadata.update(
      complete=True,
      splits=splits,
      images_sha256=digest,
      attribute_names=list(ATTRIBUTE_NAMES),
      attribute_frequencies={n: round(float(p), 4) for n, p in zip(ATTRIBUTE_NAMES, positives)},
      factor_names=list(FACTOR_NAMES),
      rendered=num_images - len(existing),
      elapsed_s=round(elapsed, 3),
      provenance=provenance.describe_run(seed=seed),
  )
  provenance.atomic_write_json(os.path.join(output_dir, METADATA_FILE), metadata)
  logging.info("wrote %d synthetic faces (%d rendered, %d kept) to %s in %.1f s",
               num_images, num_images - len(existing), len(existing), output_dir, elapsed)
  return {"output_dir": output_dir, "num_images": num_images, "seed": seed, "splits": splits,
          "rendered": num_images - len(existing), "reused": len(existing), "skipped": False,
          "images_sha256": digest, "elapsed_s": elapsed}
