"""The sharded writer: source images -> transform -> encode -> TFRecord shards + manifest.

`prepare` plans the shards from the source and the settings alone (`plan_shards`), so any rerun
reproduces identical shard bytes, then writes one shard per task in spawned worker processes
(data_pipeline.pool). A worker writes a shard to a temporary name, fsyncs and hashes it;
`prepare_progress.json` lists it before the writer renames it into place, so a run killed at any
moment is finished by rerunning the same command, which never writes a complete shard again.
`manifest.json`, written last, marks the data dir complete. The dir is locked for the whole run
(locking.py); unusable source images are skipped and reported. What each fault gets (full disk,
unwritable dir, killed worker, second writer, Ctrl-C) is listed in docs/RELIABILITY.md.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import gzip
import itertools
import math
import multiprocessing
import os
import re
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data_pipeline import duplicates
from data_pipeline import locking
from data_pipeline import manifest as manifest_lib
from data_pipeline import pool as pool_lib
from data_pipeline import provenance
from data_pipeline import records
from data_pipeline import transform
from data_pipeline.errors import NO_SPACE_ERRNOS
from data_pipeline.errors import DataError

VERSION = "1.0.0"
_SAMPLE_IMAGES = 16  # Images per split whose encoded size estimates the shard count.
# Small splits still get up to 8 shards (of >= 256 records) so that they spread over the
# workers and give the reader's interleave and shard shuffle something to work with.
_MIN_SHARDS = 8
_MIN_SHARD_RECORDS = 256
_PROGRESS_EVERY = 32  # Images between progress-bar updates from a worker.
_TFDS_FILES = ("features.json", "dataset_info.json")
# Every skipped source image is listed here (gzip TSV); the manifest keeps counts and examples,
# so that it stays small when a partial download misses most of CelebA's 202,599 images.
SKIPPED_FILE = "skipped.tsv.gz"
# The identities of the prepared images, when the source had identity_CelebA.txt (same format),
# for tools that label z-points by person (the embedding projector).
IDENTITY_FILE = "identity_CelebA.txt"
_SKIPPED_EXAMPLES = 20
# provenance.atomic_write_json's temporary name for our JSON files (left by a killed run).
_ATOMIC_TMP = re.compile(
    r"^\.tmp-.*(manifest\.json|prepare_progress\.json|skipped\.tsv\.gz|identity_CelebA\.txt)$")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything besides the source that determines the bytes of the shards."""
  name: str = manifest_lib.DEFAULT_NAME
  image_size: int = transform.IMAGE_SIZE
  crop_box: tuple = transform.CROP_BOX
  encoding: str = "raw"
  jpeg_quality: int = 95
  shard_mb: float = 64.0
  max_images: Optional[int] = None

  def validate(self):
    if not manifest_lib.NAME_PATTERN.match(self.name):
      raise ValueError(f"name {self.name!r} must be snake_case ([a-z][a-z0-9_]*)")
    if self.image_size < 1:
      raise ValueError(f"image_size must be positive, got {self.image_size}")
    transform.validate_crop_box(tuple(self.crop_box))
    if self.encoding not in records.ENCODINGS:
      raise ValueError(f"encoding must be one of {records.ENCODINGS}, got {self.encoding!r}")
    if not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
    if self.shard_mb <= 0:
      raise ValueError(f"shard_mb must be positive, got {self.shard_mb}")
    if self.max_images is not None and self.max_images < 1:
      raise ValueError(f"max_images must be positive, got {self.max_images}")


@dataclasses.dataclass
class _Task:
  split: str
  index: int
  num_shards: int
  path: str
  records: list


def _split_quotas(sizes, max_images):
  """How many images of each split to use: all, or a proportional share of `max_images`."""
  total = sum(sizes.values())
  if max_images is None or max_images >= total:
    return dict(sizes)
  # Largest-remainder rounding: the shares sum to max_images exactly, deterministically.
  exact = {split: max_images * n / total for split, n in sizes.items()}
  quotas = {split: math.floor(value) for split, value in exact.items()}
  by_remainder = sorted(sizes, key=lambda s: (-(exact[s] - quotas[s]), s))
  for split in by_remainder[:max_images - sum(quotas.values())]:
    quotas[split] += 1
  return {split: n for split, n in quotas.items() if n > 0}


def _encode_record(source, record, settings):
  """Source record -> (serialized Example, whether the image had CelebA's size, digest of
  the photo's bytes)."""
  data = record.data if record.data is not None else source.load(record)
  content = duplicates.digest(data)
  if isinstance(data, np.ndarray):
    celeba_size = tuple(data.shape[1::-1]) == transform.CELEBA_SIZE
    pixels = transform.transform_array(data, settings.crop_box, settings.image_size)
  else:
    img = transform.open_rgb(data)
    celeba_size = img.size == transform.CELEBA_SIZE
    pixels = transform.transform(img, settings.crop_box, settings.image_size)
  image = records.encode_image(pixels, settings.encoding, settings.jpeg_quality)
  return (records.serialize_example(image, record.file_name, record.attributes), celeba_size,
          content)


def _estimate_record_bytes(source, split, settings):
  """Mean serialized size of the split's first readable images (deterministic)."""
  sizes = []
  for record in itertools.islice(source.iter_split(split), _SAMPLE_IMAGES):
    try:
      sizes.append(len(_encode_record(source, record, settings)[0]))
    except transform.BadImageError:
      continue
  if not sizes:  # Nothing readable at the start: assume raw pixels, the largest encoding.
    return settings.image_size ** 2 * 3 + 64
  return sum(sizes) / len(sizes)


def plan_shards(source, settings):
  """{split: (num_images, num_shards)} for the source and settings.

  Images are taken in the source's fixed order (sorted file names for a CelebA folder);
  `max_images` keeps a proportional share of every split (the first images of each). A split's
  shard count k is its estimated encoded size (the mean record size of its first 16 images
  times its image count) over `shard_mb`, rounded up, but at least min(8, n // 256) so that a
  small split still spreads over the workers; shard i gets the contiguous slice
  [round(n*i/k), round(n*(i+1)/k)). The plan never depends on `num_workers`.
  """
  quotas = _split_quotas(source.split_sizes(), settings.max_images)
  plan = {}
  for split in manifest_lib.SPLITS:
    count = quotas.get(split, 0)
    if not count:
      continue
    # +16 bytes per record: TFRecord's length, CRCs (the overhead TFDS also counts).
    total = count * (_estimate_record_bytes(source, split, settings) + 16)
    by_size = math.ceil(total / (settings.shard_mb * 2**20))
    num_shards = min(count, max(1, by_size, min(_MIN_SHARDS, count // _MIN_SHARD_RECORDS)))
    plan[split] = (count, num_shards)
  return plan


def _shard_bounds(count, num_shards):
  return [round(count * i / num_shards) for i in range(num_shards + 1)]


# errno values of a write that fails because the output location is not writable (not a bug;
# a full disk is errors.NO_SPACE_ERRNOS): the advice differs, so they are told apart.
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _write_error(error, output_dir, doing):
  """A one-line DataError for a write into output_dir that failed for want of space or
  permission; None for any other error (those are bugs or not ours to word).

  `doing` says what failed, e.g. "writing manifest.json".
  """
  if isinstance(error, OSError):
    reason = error.strerror or str(error)
    no_space, not_writable = error.errno in NO_SPACE_ERRNOS, error.errno in _NOT_WRITABLE
  elif isinstance(error, tf.errors.OpError):
    # TF words a failed file write as "<path>; <strerror>" and maps ENOSPC/EDQUOT to
    # RESOURCE_EXHAUSTED (shared with e.g. EMFILE, hence the text) and EACCES/EPERM/EROFS to
    # PERMISSION_DENIED.
    reason = error.message.splitlines()[0].rsplit("; ", 1)[-1].strip() if error.message else ""
    no_space = (isinstance(error, tf.errors.ResourceExhaustedError)
                and any(word in reason.lower() for word in ("space", "quota")))
    not_writable = isinstance(error, tf.errors.PermissionDeniedError)
  else:
    return None
  if no_space:
    return DataError(f"no space left on the device of --output_dir {output_dir} ({reason}, "
                     f"{doing}); free space there, then rerun the same command: it keeps the "
                     "complete shards and resumes")
  if not_writable:
    return DataError(f"cannot write into --output_dir {output_dir} ({reason}, {doing}); make "
                     "it writable, or choose another --output_dir")
  return None


@contextlib.contextmanager
def _writing(output_dir, doing):
  """Words a full disk or a read-only output dir as a DataError (see _write_error)."""
  try:
    yield
  except (OSError, tf.errors.OpError) as error:
    data_error = _write_error(error, output_dir, doing)
    if data_error is None:
      raise
    raise data_error from None


# Per-process state of the worker pool, set by _init_worker (in a worker, or in-process).
_WORKER = {}


def _init_worker(source, settings, counter, parent_pid=None):
  _WORKER.update(source=source, settings=settings, counter=counter, parent_pid=parent_pid)
  _exit_if_orphaned()  # The parent may have died before the worker started.


def _exit_if_orphaned():
  """Ends a pool worker whose writer is gone, before it writes or renames anything more.

  It touches no file on the way out: a rerun may already own the same `.tmp` name.
  """
  parent_pid = _WORKER.get("parent_pid")
  if parent_pid is not None and os.getppid() != parent_pid:
    os._exit(1)  # pylint: disable=protected-access


def _report_progress(amount):
  counter = _WORKER.get("counter")
  if counter is None:
    return
  if callable(counter):
    counter(amount)
  else:
    with counter.get_lock():
      counter.value += amount


def _fsync_path(path):
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_shard(task):
  """Writes one shard atomically; returns its manifest entry plus skipped files.

  Raises:
    DataError: the disk is full or the output dir not writable (the `.tmp` file is removed).
  """
  source, settings = _WORKER["source"], _WORKER["settings"]
  tmp_path = task.path + manifest_lib.TMP_SUFFIX
  skipped, count, other_size, pending, digests = [], 0, 0, 0, []
  try:
    with _writing(os.path.dirname(task.path), f"writing {os.path.basename(tmp_path)}"):
      with tf.io.TFRecordWriter(tmp_path) as writer:
        for record in task.records:
          _exit_if_orphaned()
          pending += 1
          if pending == _PROGRESS_EVERY:
            _report_progress(pending)
            pending = 0
          try:
            serialized, celeba_size, content = _encode_record(source, record, settings)
          except transform.BadImageError as error:
            skipped.append({"split": task.split, "file_name": record.file_name,
                            "kind": error.kind, "reason": str(error)})
            continue
          writer.write(serialized)
          digests.append([record.file_name, content])
          count += 1
          other_size += not celeba_size
      _report_progress(pending)
      _fsync_path(tmp_path)
      entry = {"split": task.split, "index": task.index, "file": os.path.basename(task.path),
               "records": count, "bytes": os.path.getsize(tmp_path),
               "sha256": provenance.sha256_file(tmp_path)}
      _exit_if_orphaned()
  except BaseException:
    # lexists: a dangling or odd .tmp entry goes too. Best effort: a read-only dir cannot
    # drop it, and the original error is the one to report (a rerun removes .tmp files).
    if os.path.lexists(tmp_path):
      with contextlib.suppress(OSError):
        os.remove(tmp_path)
    raise
  return {"shard": entry, "skipped": skipped, "other_size": other_size, "digests": digests}


def _settings_record(settings, source_description, plan):
  """The settings block compared on resume: what makes two runs produce the same shards."""
  return {
      "name": settings.name,
      "image_size": settings.image_size,
      "crop": list(settings.crop_box),
      "encoding": settings.encoding,
      "jpeg_quality": settings.jpeg_quality if settings.encoding == "jpeg" else None,
      "shard_mb": settings.shard_mb,
      "max_images": settings.max_images,
      "source_kind": source_description["kind"],
      "source_fingerprint": source_description["fingerprint"],
      "plan": {split: list(value) for split, value in plan.items()},
  }


def _owned_files(output_dir, names):
  """Files in output_dir that a preparation named in `names` wrote (and may remove)."""
  patterns = [manifest_lib.shard_pattern(name) for name in names] + [_ATOMIC_TMP]
  fixed = {manifest_lib.MANIFEST, manifest_lib.PROGRESS, SKIPPED_FILE, IDENTITY_FILE,
           *_TFDS_FILES}
  return sorted(f for f in os.listdir(output_dir)
                if f in fixed or any(p.match(f) for p in patterns))


def _previous_state(output_dir):
  """The recorded state of an earlier run: the manifest if complete, else the progress file."""
  for file_name in (manifest_lib.MANIFEST, manifest_lib.PROGRESS):
    path = os.path.join(output_dir, file_name)
    if os.path.exists(path):
      state = manifest_lib.read_json(path, "recorded state")
      if "settings" not in state or "shards" not in state:
        raise DataError(f"{path} is not a celeba-stream preparation record; choose another "
                        "--output_dir or pass --overwrite")
      return file_name, state
  return None, None


def _differences(old, new):
  keys = sorted(set(old) | set(new))
  return [key for key in keys if old.get(key) != new.get(key)]


def _shard_is_intact(output_dir, entry):
  path = os.path.join(output_dir, entry["file"])
  return (os.path.isfile(path) and os.path.getsize(path) == entry["bytes"]
          and provenance.sha256_file(path) == entry["sha256"])


def _iter_tasks(source, plan, settings, output_dir, done):
  """Yields a _Task for every planned shard not in `done` (records read lazily, in order)."""
  for split, (count, num_shards) in plan.items():
    stream = itertools.islice(source.iter_split(split), count)
    bounds = _shard_bounds(count, num_shards)
    for index in range(num_shards):
      chunk = list(itertools.islice(stream, bounds[index + 1] - bounds[index]))
      file_name = manifest_lib.shard_name(settings.name, split, index, num_shards)
      if file_name in done:
        continue
      yield _Task(split, index, num_shards, os.path.join(output_dir, file_name), chunk)


def _run_tasks(tasks, source, settings, num_workers, total_images, on_done, progress):
  """Runs the shard tasks (in-process or in a pool) with a progress bar; calls on_done(result)."""
  make_bar = lambda: tqdm(total=total_images, unit="img", desc="prepare", disable=not progress,
                          smoothing=0.1, mininterval=0.5)
  try:
    if num_workers == 1:
      with make_bar() as bar:
        _init_worker(source, settings, bar.update)
        for task in tasks:
          on_done(_write_shard(task))
      return
    counter = multiprocessing.get_context("spawn").Value("q", 0)
    # A lazy source (file names only) goes to the workers once; a streaming one stays here.
    worker_source = source if source.lazy else None
    with pool_lib.process_pool(num_workers, _init_worker,
                               (worker_source, settings, counter, os.getpid()),
                               what="prepare_data worker") as pool:
      _drive_pool(pool, iter(tasks), num_workers, counter, make_bar, on_done)
  finally:
    _WORKER.clear()


def _drive_pool(pool, tasks, num_workers, counter, make_bar, on_done):
  """Feeds the pool, records each finished shard; after a failed task, submits no more but
  still records the shards that the running tasks complete, then raises the first error."""
  pending, bar, first_error = set(), None, None
  try:
    while True:
      # Bounded in-flight tasks keep memory flat when tasks carry image data (TFDS).
      while first_error is None and len(pending) < 2 * num_workers:
        task = next(tasks, None)
        if task is None:
          break
        pending.add(pool.submit(_write_shard, task))
      if bar is None:
        bar = make_bar()
      if not pending:
        break
      done, pending = concurrent.futures.wait(
          pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
      bar.update(counter.value - bar.n)
      for future in done:
        try:
          result = future.result()
        except Exception as error:  # pylint: disable=broad-except
          first_error = first_error or error
          continue
        on_done(result)
    bar.update(counter.value - bar.n)
  finally:
    if bar is not None:
      bar.close()
    for future in pending:
      future.cancel()
  if first_error is not None:
    raise first_error


def _summarize_skipped(skipped, total):
  # Images missing from a partial download were announced before the work (_warn_if_partial).
  if not skipped or all(item.get("shard") is None and item["kind"] == "missing"
                        for item in skipped):
    return
  kinds = collections.Counter(item["kind"] for item in skipped)
  detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
  examples = ", ".join(item["file_name"] for item in skipped[:3])
  logging.warning("skipped %s of %s source images (%s), e.g. %s; every one is listed with its "
                  "reason in %s (counts under \"skipped_summary\" in manifest.json)",
                  f"{len(skipped):,}", f"{total:,}", detail, examples, SKIPPED_FILE)


def _missing_from_download(source, settings):
  """Skipped-list entries for the images that the partition file lists but the download lacks.

  Only for a whole-dataset run: with max_images, the subset is taken from the images present.
  """
  missing = getattr(source, "missing", None) or {}
  if settings.max_images is not None:
    return []
  return [{"split": split, "file_name": name, "kind": "missing",
           "reason": "listed in the partition file but not in the download"}
          for split in manifest_lib.SPLITS for name in missing.get(split, ())]


def _warn_if_partial(source):
  num_missing = getattr(source, "num_missing", 0)
  if num_missing:
    listed = source.num_listed
    logging.warning("%s of %s listed images are present in %s (partial download?); preparing "
                    "those, and listing the %s missing ones in %s", f"{listed - num_missing:,}",
                    f"{listed:,}", source.image_store, f"{num_missing:,}", SKIPPED_FILE)


def _write_identities(output_dir, source, manifest, plan, skipped):
  """Writes IDENTITY_FILE for the prepared images (or removes an old one); notes it in the
  manifest as `identity_file` (null without identities)."""
  identities = getattr(source, "identities", None)
  path = os.path.join(output_dir, IDENTITY_FILE)
  manifest["identity_file"] = None
  if not identities:
    if os.path.exists(path):
      os.remove(path)
    return
  skipped = {item["file_name"] for item in skipped}
  names = sorted(name for split, (count, _) in plan.items()
                 for name in source.splits.get(split, ())[:count]
                 if name in identities and name not in skipped)
  provenance.atomic_write_bytes(path, "".join(f"{n} {identities[n]}\n" for n in names).encode())
  manifest["identity_file"] = IDENTITY_FILE


def _skipped_tsv(skipped):
  """The full skipped list as gzip-compressed TSV; same list -> same bytes (no gzip mtime)."""
  lines = ["split\tfile_name\tkind\treason"]
  lines += [f"{item['split']}\t{item['file_name']}\t{item['kind']}\t{item['reason']}"
            for item in skipped]
  return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0)


def prepare(source, output_dir, *, name=manifest_lib.DEFAULT_NAME,
            image_size=transform.IMAGE_SIZE, crop_box=transform.CROP_BOX, encoding="raw",
            jpeg_quality=95, num_workers=None, shard_mb=64.0, overwrite=False, max_images=None,
            progress=True, on_complete=None, refuse_duplicates=False):
  """Prepares `source` into sharded TFRecords in `output_dir`; returns the manifest dict.

  Args:
    source: a `sources.CelebAFolderSource` or `sources.TfdsSource`.
    output_dir: the data dir to write (created if needed).
    name: dataset name, the shard files' prefix (snake_case).
    image_size: side of the square output images.
    crop_box: (left, top, right, bottom) in CelebA's 178x218 coordinates.
    encoding: "raw", "png" or "jpeg".
    jpeg_quality: JPEG quality 1..100 (jpeg only).
    num_workers: worker processes; None means all cores.
    shard_mb: target shard size in MiB.
    overwrite: remove an earlier preparation in output_dir instead of resuming it.
    max_images: use a proportional subset of this many images (the first of each split).
    progress: show a progress bar.
    on_complete: None, or a callable(output_dir) run once the data dir is complete, while its
      lock is still held (tools.prepare_data writes its flags.txt there).
    refuse_duplicates: raise instead of writing the manifest when two photos have the same
      bytes (data_pipeline.duplicates); the shards stay, so a rerun without it completes.

  Raises:
    DataError: unusable source, an output dir holding other data, no usable image at all, or
      content duplicates with `refuse_duplicates`.
  """
  start = time.time()
  settings = Settings(name, image_size, tuple(crop_box), encoding, jpeg_quality,
                      float(shard_mb), max_images)
  settings.validate()
  num_workers = num_workers or os.cpu_count() or 1
  output_dir = os.path.abspath(os.fspath(output_dir))
  created = not os.path.isdir(output_dir)
  was_empty = created or not os.listdir(output_dir)
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as error:
    raise DataError(f"cannot create --output_dir {output_dir} ({error.strerror}); create it "
                    "yourself or choose another --output_dir") from None
  with contextlib.ExitStack() as stack:
    # Locked before anything in the dir is read or changed (--overwrite deletes files).
    try:
      stack.enter_context(locking.exclusive(output_dir))
    except OSError as error:
      if error.errno not in _NOT_WRITABLE:
        data_error = _write_error(error, output_dir, f"creating {locking.LOCK_FILE}")
        if data_error is None:
          raise
        raise data_error from None
      # A dir this process cannot write into: it cannot change anything there either, so it
      # goes on unlocked. A complete data dir is then "nothing to do", as on read-only media;
      # anything else fails at its first write, with the one-line error of _writing.
      logging.info("%s is not writable; checking it without the lock", output_dir)
    try:
      manifest = _prepare_locked(source, output_dir, settings, num_workers, overwrite,
                                 progress, start, refuse_duplicates)
    except BaseException:
      if was_empty and os.listdir(output_dir) == [locking.LOCK_FILE]:
        # Refused before writing anything (a bad source): the folder is left as it was.
        with contextlib.suppress(OSError):
          os.remove(os.path.join(output_dir, locking.LOCK_FILE))
          if created:
            os.rmdir(output_dir)
      raise
    if on_complete is not None:
      on_complete(output_dir)
    return manifest


def _prepare_locked(source, output_dir, settings, num_workers, overwrite, progress, start,
                    refuse_duplicates=False):
  """prepare() with the output dir created and locked."""
  source_description = source.describe()
  _warn_if_partial(source)
  plan = plan_shards(source, settings)
  if not plan:
    raise DataError(f"the source {source_description['path']} lists no images")
  settings_record = _settings_record(settings, source_description, plan)

  with _writing(output_dir, "cleaning up after an earlier run"):
    done = _resume_state(output_dir, settings, settings_record, overwrite)
  manifest_path = os.path.join(output_dir, manifest_lib.MANIFEST)
  progress_path = os.path.join(output_dir, manifest_lib.PROGRESS)
  planned = {manifest_lib.shard_name(settings.name, split, i, k)
             for split, (_, k) in plan.items() for i in range(k)}
  done = {f: r for f, r in done.items() if f in planned}
  if len(done) == len(planned) and os.path.exists(manifest_path):
    if os.path.exists(progress_path):  # Left by a run killed just after its manifest.
      with _writing(output_dir, f"removing {manifest_lib.PROGRESS}"):
        os.remove(progress_path)
    logging.info("%s is complete and every shard matches the manifest; nothing to do",
                 output_dir)
    return manifest_lib.read_manifest(output_dir)

  def save_progress():
    with _writing(output_dir, f"writing {manifest_lib.PROGRESS}"):
      provenance.atomic_write_json(progress_path, {"settings": settings_record,
                                                   "shards": sorted(done.values(),
                                                                    key=_shard_key)})

  save_progress()  # From here on, a crash leaves a record that a rerun can resume from.
  if os.path.exists(manifest_path):
    with _writing(output_dir, f"removing the old {manifest_lib.MANIFEST}"):
      os.remove(manifest_path)  # Being repaired: the dir is incomplete until the new manifest.
  todo = sum(count for count, _ in plan.values()) - sum(
      r["shard"]["records"] + len(r["skipped"]) for r in done.values())
  if done:
    logging.info("resuming: %d of %d shards are complete", len(done), len(planned))

  def on_done(result):
    # Listed before it is renamed into place: a shard under its final name is always in the
    # progress file, and a listed one still under its .tmp name is renamed by the rerun.
    done[result["shard"]["file"]] = result
    save_progress()
    path = os.path.join(output_dir, result["shard"]["file"])
    with _writing(output_dir, f"renaming {os.path.basename(path)}{manifest_lib.TMP_SUFFIX}"):
      os.replace(path + manifest_lib.TMP_SUFFIX, path)

  tasks = _iter_tasks(source, plan, settings, output_dir, done)
  _run_tasks(tasks, source, settings, num_workers, todo, on_done, progress)

  manifest, skipped = _build_manifest(settings, settings_record, source, source_description,
                                      plan, done, elapsed=time.time() - start)
  if not manifest["splits"]:
    raise DataError(f"none of the {manifest['num_listed']} source images could be used; see "
                    f"{progress_path} for the reasons")
  copies = manifest["duplicates"]
  if copies["num_groups"]:
    if refuse_duplicates:
      raise DataError(f"{duplicates.describe(copies)}; remove the copies from the source (or "
                      "from its partition file), or rerun without --refuse_duplicates to keep "
                      "them: the shards written so far are kept")
    logging.warning("%s; every group is listed under 'duplicates' in %s",
                    duplicates.describe(copies), manifest_path)
  with _writing(output_dir, f"writing {manifest_lib.MANIFEST} and the TFDS metadata"):
    for result in done.values():  # Shards of a split with no usable image at all.
      if result["shard"]["split"] not in manifest["splits"]:
        os.remove(os.path.join(output_dir, result["shard"]["file"]))
    # Local: every spawned worker imports this module and needs no TFDS
    # (docs/ARCHITECTURE.md, Imports).
    from data_pipeline.tfds_metadata import write_tfds_metadata
    write_tfds_metadata(output_dir, manifest)
    _write_identities(output_dir, source, manifest, plan, skipped)
    skipped_path = os.path.join(output_dir, SKIPPED_FILE)
    if skipped:
      provenance.atomic_write_bytes(skipped_path, _skipped_tsv(skipped))
    elif os.path.exists(skipped_path):
      os.remove(skipped_path)
    manifest["elapsed_seconds"] = round(time.time() - start, 3)
    provenance.atomic_write_json(manifest_path, manifest)
    os.remove(progress_path)
  _summarize_skipped(skipped, manifest["num_listed"])
  counts = ", ".join(f"{s} {v['num_examples']}" for s, v in manifest["splits"].items())
  logging.info("wrote %d shards (%s images) to %s in %.1f s", len(manifest["shards"]), counts,
               output_dir, manifest["elapsed_seconds"])
  return manifest


def _shard_key(result):
  shard = result["shard"]
  return (manifest_lib.SPLITS.index(shard["split"]), shard["index"])


def _resume_state(output_dir, settings, settings_record, overwrite):
  """Cleans up or validates earlier work; returns {shard file: result} still valid."""
  state_file, state = _previous_state(output_dir) if not overwrite else (None, None)
  if overwrite:
    names = {settings.name}
    try:
      _, old = _previous_state(output_dir)
      if old:
        names.add(old["settings"].get("name", settings.name))
    except DataError:
      pass  # An unreadable record is removed with the rest.
    for file_name in _owned_files(output_dir, names):
      os.remove(os.path.join(output_dir, file_name))
    return {}
  # A shard listed as complete but killed before its rename is renamed into place; every other
  # leftover temporary file of an interrupted run is incomplete by definition.
  for entry in (state or {}).get("shards", []):
    shard = entry.get("shard", entry)
    final = os.path.join(output_dir, shard["file"])
    tmp = final + manifest_lib.TMP_SUFFIX
    if (not os.path.exists(final) and os.path.isfile(tmp)
        and _shard_is_intact(output_dir, {**shard, "file": shard["file"] +
                                          manifest_lib.TMP_SUFFIX})):
      os.replace(tmp, final)
  tmp_pattern = re.compile(rf"{re.escape(manifest_lib.TMP_SUFFIX)}$")
  for file_name in _owned_files(output_dir, {settings.name}):
    if tmp_pattern.search(file_name) or _ATOMIC_TMP.match(file_name):
      os.remove(os.path.join(output_dir, file_name))
  if state is None:
    stray = [f for f in _owned_files(output_dir, {settings.name})
             if manifest_lib.shard_pattern(settings.name).match(f)]
    if stray:
      raise DataError(f"--output_dir {output_dir} holds shards ({stray[0]}, ...) that no "
                      "manifest describes; pass --overwrite to replace them or choose another "
                      "--output_dir")
    return {}
  changed = _differences(state["settings"], settings_record)
  if changed:
    raise DataError(f"--output_dir {output_dir} holds a preparation with other settings "
                    f"({', '.join(changed)} differ, per its {state_file}); pass --overwrite to "
                    "replace it or choose another --output_dir")
  skipped_by_shard = collections.defaultdict(list)
  for item in state.get("skipped", []):
    skipped_by_shard[(item["split"], item.get("shard"))].append(item)
  done = {}
  for entry in state["shards"]:
    result = entry if "shard" in entry else {
        "shard": {k: entry[k] for k in ("split", "index", "file", "records", "bytes",
                                        "sha256")},
        "skipped": skipped_by_shard[(entry["split"], entry["index"])],
        "other_size": entry.get("other_size", 0)}
    if _shard_is_intact(output_dir, result["shard"]):
      done[result["shard"]["file"]] = result
    else:
      logging.info("shard %s is missing or changed; writing it again", result["shard"]["file"])
  return done


def _build_manifest(settings, settings_record, source, source_description, plan, done,
                    elapsed):
  """(manifest dict, full skipped list); the manifest keeps the first skipped as examples."""
  results = sorted(done.values(), key=_shard_key)
  shards, skipped = [], _missing_from_download(source, settings)
  for result in results:
    shards.append(dict(result["shard"], other_size=result["other_size"]))
    skipped += [dict(item, shard=result["shard"]["index"]) for item in result["skipped"]]
  skipped.sort(key=lambda item: (manifest_lib.SPLITS.index(item["split"]), item["file_name"]))
  splits = {}
  for split in plan:
    split_shards = [s for s in shards if s["split"] == split]
    num_examples = sum(s["records"] for s in split_shards)
    if num_examples:
      splits[split] = {"num_examples": num_examples, "num_shards": len(split_shards),
                       "num_bytes": sum(s["bytes"] for s in split_shards),
                       "num_skipped": sum(1 for s in skipped if s["split"] == split)}
  shards = [s for s in shards if s["split"] in splits]
  inputs = source_description.get("metadata_files", {})
  num_missing = sum(1 for item in skipped if item["kind"] == "missing" and "shard" not in item)
  manifest = {
      "format_version": manifest_lib.FORMAT_VERSION,
      "name": settings.name,
      "version": VERSION,
      "image_size": settings.image_size,
      "crop": list(settings.crop_box),
      "encoding": settings.encoding,
      "jpeg_quality": settings.jpeg_quality if settings.encoding == "jpeg" else None,
      "attribute_names": (list(source.attribute_names) if source.attribute_names is not None
                          else None),
      "splits": splits,
      "shards": shards,
      "skipped": skipped[:_SKIPPED_EXAMPLES],
      "skipped_summary": {
          "num_skipped": len(skipped),
          "by_kind": dict(sorted(collections.Counter(i["kind"] for i in skipped).items())),
          "num_missing_from_download": num_missing,
          "examples": min(len(skipped), _SKIPPED_EXAMPLES),
          "file": SKIPPED_FILE if skipped else None},
      "num_listed": sum(count for count, _ in plan.values()) + num_missing,
      "num_other_size": sum(s["other_size"] for s in shards),
      "duplicates": duplicates.summarize(
          (r["shard"]["split"], name, value) for r in results
          if r["shard"]["split"] in splits for name, value in r.get("digests", [])),
      "source": {k: v for k, v in source_description.items() if k != "metadata_files"},
      "settings": settings_record,
      "provenance": provenance.describe_run(seed=None, inputs=inputs),
      "elapsed_seconds": round(elapsed, 3),
  }
  return manifest, skipped
