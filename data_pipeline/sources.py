"""Where the face images come from: a CelebA folder (directory or zip) or a TFDS-prepared celeb_a.

Every source lists its splits in a fixed order (sorted file names within a split, so the shard
assignment is the same on every run) and yields `SourceRecord`s. A record's `data` is the
encoded image or decoded pixels; `None` means "not loaded yet": the writer's worker calls
`source.load(record)`, so files are read in parallel and only names travel between processes.
A CelebA download is found in any layout of its two sites (celeba_files.py). The flat layout,
also what tools.make_synthetic_faces writes: `img_align_celeba/` (or `.zip`),
`list_eval_partition.txt` ("000001.jpg 0": 0 train, 1 validation, 2 test), and optionally
`list_attr_celeba.txt` and `identity_CelebA.txt`.
"""

import csv
import dataclasses
import glob
import hashlib
import os
import re
import zipfile
from typing import Optional, Union

import numpy as np

from data_pipeline import attributes as celeba
from data_pipeline import celeba_files
from data_pipeline.errors import DataError
from data_pipeline.manifest import SPLITS
from data_pipeline.provenance import sha256_file
from data_pipeline.transform import BadImageError


@dataclasses.dataclass(frozen=True)
class SourceRecord:
  """One source image: its split, CelebA file name, data (or None: not loaded) and attributes."""
  split: str
  file_name: str
  data: Union[bytes, np.ndarray, None] = None
  attributes: Optional[tuple] = None


def _read_lines(path):
  try:
    with open(path, "rb") as f:
      return celeba_files.metadata_lines(f.read(), path)
  except OSError as error:
    raise DataError(f"cannot read {path}: {error.strerror or error}") from None


def parse_partition(path, lines=None):
  """Reads list_eval_partition.txt (or .csv) into {split: sorted file names}.

  Args:
    path: the file (or "ZIP:member"); its suffix tells CelebA's text from Kaggle's CSV format.
    lines: its lines, when already read (e.g. from a zip); else the file is read.

  Raises:
    DataError: a malformed line, a file listed twice, or no image at all.
  """
  lines = _read_lines(path) if lines is None else lines
  is_csv = path.endswith(".csv")
  if is_csv and lines and not lines[0].split(",")[-1].strip().isdigit():
    lines = lines[1:]  # The Kaggle header "image_id,partition".
    first_line = 2
  else:
    first_line = 1
  splits = {name: [] for name in SPLITS}
  seen = set()
  for number, line in enumerate(lines, start=first_line):
    if not line.strip():
      continue
    fields = line.split(",") if is_csv else line.split()
    fields = [f.strip() for f in fields]
    if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) not in celeba.SPLIT_NAMES:
      raise DataError(f"{path} line {number}: expected '<file name> <0|1|2>', got {line[:80]!r}")
    if fields[0] in seen:
      raise DataError(f"{path} line {number}: {fields[0]} is listed twice")
    seen.add(fields[0])
    splits[celeba.SPLIT_NAMES[int(fields[1])]].append(fields[0])
  if not seen:
    raise DataError(f"{path} lists no images")
  return {name: sorted(files) for name, files in splits.items()}


def parse_attributes(path, lines=None):
  """Reads list_attr_celeba.txt (or .csv) into (names, {file name: row}, int8 [N, A] values).

  Any subset of CelebA's 40 columns, in any order, is accepted: the names come from the header.
  The values stay in one small int8 array (CelebA: 8 MB) rather than 200,000 Python tuples.

  Raises:
    DataError: no header, a repeated name, or a row that is not a file name and A values of -1/1.
  """
  lines = _read_lines(path) if lines is None else lines
  if path.endswith(".csv"):
    rows = list(csv.reader(lines))
    if not rows:
      raise DataError(f"{path} is empty")
    names, body, first_line = rows[0][1:], rows[1:], 2
  else:
    if len(lines) < 2:
      raise DataError(f"{path}: expected a count line and a line of attribute names")
    names, first_line = lines[1].split(), 3
    body = (line.split() for line in lines[2:])
  names = tuple(n.strip() for n in names)
  if not names:
    raise DataError(f"{path}: no attribute names in its header")
  if len(set(names)) != len(names):
    raise DataError(f"{path}: an attribute name appears twice in its header")
  index, values = {}, []
  for number, fields in enumerate(body, start=first_line):
    if not fields:
      continue
    row = [v.strip() for v in fields[1:]]
    if len(row) != len(names) or any(v not in ("-1", "1") for v in row):
      raise DataError(f"{path} line {number}: expected a file name and {len(names)} values of "
                      "-1 or 1")
    index[fields[0].strip()] = len(values)
    values.append(row)
  return names, index, np.array(values, dtype=np.int8).reshape(-1, len(names))


def parse_identities(path, lines=None):
  """Reads identity_CelebA.txt ("000001.jpg 2880" per line) into {file name: identity}.

  Raises:
    DataError: a line that is not a file name and a whole number.
  """
  lines = _read_lines(path) if lines is None else lines
  identities = {}
  for number, line in enumerate(lines, start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2 or not fields[1].isdigit():
      raise DataError(f"{path} line {number}: expected '<file name> <identity number>', got "
                      f"{line[:80]!r}")
    identities[fields[0]] = int(fields[1])
  return identities


class CelebAFolderSource:
  """A CelebA download (celeba_files.py: folder or zip, either site's layout).

  Only images present in the download are planned: a partial download (the full partition file
  with part of the images) is prepared from what is there, and `missing` lists the rest.
  """

  kind = "celeba_folder"
  lazy = True  # Records come without data; workers call load().

  def __init__(self, source_dir):
    self.layout = celeba_files.find_layout(source_dir)
    self.source_dir = self.layout.root
    self.partition_path = self.layout.partition
    self.attribute_path = self.layout.attributes
    self.identity_path = self.layout.identity
    listed = parse_partition(self.partition_path,
                             self.layout.read_text_lines(self.partition_path))
    if self.attribute_path is not None:
      self.attribute_names, self._attribute_rows, self._attributes = parse_attributes(
          self.attribute_path, self.layout.read_text_lines(self.attribute_path))
    else:
      self.attribute_names, self._attribute_rows, self._attributes = None, None, None
    self.identities = (parse_identities(self.identity_path,
                                        self.layout.read_text_lines(self.identity_path))
                       if self.identity_path else None)
    self._members = self.layout.images.list_images()  # {file name: zip member or None}
    self.splits = {split: [n for n in names if n in self._members]
                   for split, names in listed.items()}
    self.missing = {split: [n for n in names if n not in self._members]
                    for split, names in listed.items()}
    self.num_listed = sum(len(names) for names in listed.values())
    if self.num_listed == self.num_missing:
      raise DataError(f"none of the {self.num_listed:,} images listed in {self.partition_path} "
                      f"is in {self.image_store}: the images are missing or named otherwise; "
                      "point --source_dir at the complete CelebA download")
    self._zip = None
    self._zip_pid = None

  @property
  def image_store(self):
    """Where the images are read from: a folder, a zip, or "OUTER.zip:inner.zip"."""
    images = self.layout.images
    return f"{images.path}:{images.member}" if images.member else images.path

  @property
  def num_missing(self):
    return sum(len(names) for names in self.missing.values())

  def split_sizes(self):
    """{split: images present} for splits with at least one present image."""
    return {split: len(files) for split, files in self.splits.items() if files}

  def iter_split(self, split):
    """Records of `split` in sorted file-name order, not yet loaded (data None)."""
    for file_name in self.splits.get(split, ()):
      attrs = None
      if self._attributes is not None:
        row = self._attribute_rows.get(file_name)
        attrs = None if row is None else tuple(self._attributes[row].tolist())
      yield SourceRecord(split, file_name, None, attrs)

  def _zip_file(self):
    # A ZipFile's file position is shared with forked children, so each process opens its own.
    if self._zip is None or self._zip_pid != os.getpid():
      self._zip = self.layout.images.open_zip()
      self._zip_pid = os.getpid()
    return self._zip

  def load(self, record):
    """Reads the record's file bytes; raises BadImageError naming why it cannot be used."""
    if self._attributes is not None and record.attributes is None:
      raise BadImageError("no_attributes",
                          f"not listed in {os.path.basename(self.attribute_path)}")
    member = self._members.get(record.file_name)
    if self.layout.images.kind == "folder":
      try:
        with open(os.path.join(self.layout.images.path, record.file_name), "rb") as f:
          return f.read()
      except FileNotFoundError:
        raise BadImageError("missing", "listed in the partition file but missing") from None
      except OSError as error:
        raise BadImageError("unreadable", f"unreadable ({error.strerror or error})") from None
    if member is None:
      raise BadImageError("missing", "listed in the partition file but missing from the zip")
    try:
      return self._zip_file().read(member)
    except (OSError, zipfile.BadZipFile, EOFError) as error:
      raise BadImageError("unreadable", f"unreadable zip member ({error})") from None

  def fingerprint(self):
    """sha256 over (name, size) of every listed image plus the metadata files' hashes."""
    digest = hashlib.sha256()
    listed = sorted(name for files in self.splits.values() for name in files)
    listed += sorted(name for files in self.missing.values() for name in files)
    if self.layout.images.kind != "folder":
      with self.layout.images.open_zip() as archive:
        infos = {i.filename: i for i in archive.infolist()}
      for name in listed:
        info = infos.get(self._members.get(name))
        digest.update(f"{name}\t{info.file_size if info else -1}\t"
                      f"{info.CRC if info else -1}\n".encode())
    else:
      for name in listed:
        try:
          size = os.stat(os.path.join(self.layout.images.path, name)).st_size
        except OSError:
          size = -1
        digest.update(f"{name}\t{size}\n".encode())
    for path in (self.partition_path, self.attribute_path):
      digest.update(f"{os.path.basename(path)}\t{self._sha256(path)}\n".encode() if path
                    else b"-\n")
    return digest.hexdigest()

  def _sha256(self, where):
    if os.path.isfile(where):
      return sha256_file(where)
    return hashlib.sha256("\n".join(self.layout.read_text_lines(where)).encode()).hexdigest()

  def summary_lines(self):
    """What was recognised and read, for the prepare log."""
    lines = [f"recognised {self.layout.name} at {self.source_dir}"]
    lines += [f"  {role}: {where}" for role, where in self.layout.files_read()]
    present = self.num_listed - self.num_missing
    lines.append(f"  {present:,} of {self.num_listed:,} listed images present"
                 + (f"; attributes: {', '.join(self.attribute_names)}"
                    if self.attribute_names else "; no attributes"))
    return lines

  def describe(self):
    """The manifest's `source` block (without counts, which the writer adds)."""
    inputs = {path: self._sha256(path) for path in
              (self.partition_path, self.attribute_path, self.identity_path) if path}
    return {"kind": self.kind, "path": self.source_dir, "layout": self.layout.name,
            "images": self.image_store, "fingerprint": self.fingerprint(),
            "metadata_files": inputs}

  def __getstate__(self):
    state = dict(self.__dict__)
    state.update(_zip=None, _zip_pid=None)  # Reopened in each process.
    return state


class TfdsSource:
  """A TFDS-prepared `celeb_a` (images 218x178, attributes as booleans, no file names).

  The records' `file_name` is the TFDS id (e.g. "celeb_a-train.tfrecord-00000-of-00004__17"),
  the only stable per-image key TFDS keeps. Images are read as their stored JPEG bytes and
  decoded by PIL, like the folder source, so both give the same pixels.
  """

  kind = "tfds"
  lazy = False  # Records come with their data, read in the main process.

  def __init__(self, tfds_data_dir=None, dataset="celeb_a"):
    # Local: a CelebA folder needs no TFDS (docs/ARCHITECTURE.md, Imports).
    import tensorflow_datasets as tfds
    self._tfds = tfds
    self.tfds_data_dir = os.path.abspath(tfds_data_dir) if tfds_data_dir else None
    self.dataset = dataset
    try:
      self._builder = tfds.builder(dataset, data_dir=self.tfds_data_dir)
    except Exception as error:  # TFDS raises several types for unknown names/dirs.
      infos = glob.glob(os.path.join(self.tfds_data_dir or "", dataset, "*", "dataset_info.json"))
      where = f" (read from {', '.join(infos)})" if infos else ""
      raise DataError(f"cannot open TFDS dataset {dataset} in --tfds_data_dir "
                      f"{self.tfds_data_dir}{where}: {str(error).splitlines()[0]}; "
                      f"{self._rebuild_advice()}") from None
    self.attribute_names = celeba.ATTRIBUTE_NAMES
    known = set(self._builder.info.splits.keys())
    # An unprepared builder (or tfds.testing.mock_data) knows no splits: try all three.
    self._split_names = [s for s in SPLITS if not known or s in known]
    self._sizes = None
    for split in known:
      for path in self._builder.info.splits[split].filepaths:
        if not os.path.exists(path):
          raise DataError(f"{path} ({split} split) is missing from TFDS dataset {dataset} "
                          f"in --tfds_data_dir {self.tfds_data_dir}; "
                          f"{self._rebuild_advice()}")

  def _rebuild_advice(self):
    return (f"rebuild it with `tfds build {self.dataset} --data_dir "
            f"{self.tfds_data_dir or '~/tensorflow_datasets'}` (needs CelebA's manual "
            "download), or give the CelebA folder as --source_dir instead")

  def _damaged_file(self, split, records_read):
    """The file of `split` that holds record number `records_read` (0-based), or None."""
    info = self._builder.info.splits[split] if split in self._builder.info.splits else None
    if info is None:
      return None
    for path, length in zip(info.filepaths, info.shard_lengths):
      if records_read < length:
        return path
      records_read -= length
    return None

  def _dataset(self, split):
    tfds = self._tfds
    try:
      return self._builder.as_dataset(
          split=split, shuffle_files=False,
          decoders={"image": tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(add_tfds_id=True, interleave_cycle_length=1))
    except (AssertionError, OSError, ValueError, KeyError) as error:
      raise DataError(f"TFDS dataset {self.dataset} is not prepared in --tfds_data_dir "
                      f"{self.tfds_data_dir} ({str(error).splitlines()[0]}); build it first "
                      "with `tfds build celeb_a --data_dir DIR` (needs CelebA's manual "
                      "download)") from None

  def split_sizes(self):
    if self._sizes is None:
      self._sizes = {}
      for split in self._split_names:
        count = int(self._dataset(split).cardinality())
        if count < 0:  # Unknown cardinality: fall back to TFDS' own metadata.
          count = self._builder.info.splits[split].num_examples
        if count:
          self._sizes[split] = count
    return dict(self._sizes)

  def iter_split(self, split):
    """Records in TFDS' stored order (deterministic with shuffle_files=False), data loaded.

    Raises:
      DataError: a file of the split cannot be read (truncated, damaged, removed meanwhile),
        naming it.
    """
    # Local: prepare_data checks the source before TensorFlow loads (docs/ARCHITECTURE.md, Imports).
    import tensorflow as tf
    examples, read = self._dataset(split).as_numpy_iterator(), 0
    while True:
      try:
        example = next(examples)
      except StopIteration:
        return
      except tf.errors.OpError as error:
        path = self._damaged_file(split, read) or f"a file of the {split} split"
        # TF's message without its op wrapping ("{{function_node ...}}", "[Op:...]").
        reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", error.message.splitlines()[0])
        raise DataError(f"{path} of TFDS dataset {self.dataset} cannot be read after "
                        f"{read} records ({reason.strip()}); {self._rebuild_advice()}") from None
      read += 1
      attrs = tuple(1 if example["attributes"][name] else -1 for name in self.attribute_names)
      yield SourceRecord(split, example["tfds_id"].decode("utf-8"), example["image"], attrs)

  def load(self, record):
    return record.data

  def fingerprint(self):
    """sha256 over the dataset's name, version, split sizes and stored files (name, size)."""
    digest = hashlib.sha256()
    digest.update(f"{self._builder.info.full_name}\n".encode())
    for split, count in sorted(self.split_sizes().items()):
      digest.update(f"{split}\t{count}\n".encode())
    data_dir = self._builder.data_dir
    if os.path.isdir(data_dir):
      for name in sorted(os.listdir(data_dir)):
        digest.update(f"{name}\t{os.path.getsize(os.path.join(data_dir, name))}\n".encode())
    return digest.hexdigest()

  def describe(self):
    return {"kind": self.kind, "path": self.tfds_data_dir, "dataset":
            self._builder.info.full_name, "fingerprint": self.fingerprint()}

  def __getstate__(self):
    raise TypeError("TfdsSource streams its records from the main process; it is not sent "
                    "to worker processes")


def open_source(kind, source_dir=None, tfds_data_dir=None):
  """Opens a source by kind ("celeba_folder" or "tfds"); raises DataError when unusable."""
  if kind == "celeba_folder":
    if not source_dir:
      raise DataError("--source_dir is required for --source=celeba_folder")
    return CelebAFolderSource(source_dir)
  if kind == "tfds":
    return TfdsSource(tfds_data_dir)
  raise DataError(f"unknown source kind {kind!r}; expected celeba_folder or tfds")
