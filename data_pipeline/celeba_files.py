"""Finding CelebA's files in a download, whatever shape the download site gave it.

CelebA comes from the authors' Google Drive folder (`Img/`, `Anno/`, `Eval/`, kept, flattened or
zipped whole by Drive) or from Kaggle's "celeba-dataset" (`archive.zip` with CSV metadata, or
unpacked). `find_layout(path)` takes a folder or a zip, looks a few levels down for the metadata
files by their CelebA names (`.txt` preferred to `.csv`) and for the images (an
`img_align_celeba` folder or zip), and returns a `Layout` that reads them. A broken download (an
HTML page saved under a zip's name, as Drive serves past its quota; a truncated zip; a zip
without images; an empty or binary metadata file) raises a one-line `DataError` naming the file
and the likely cause, before anything is written.
"""

import dataclasses
import io
import os
import struct
import zipfile
from typing import Optional

from data_pipeline import attributes as celeba
from data_pipeline.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_ZIP = celeba.IMAGE_DIR + ".zip"
IDENTITY_FILE = "identity_CelebA.txt"
# Folder levels searched below the given path: CelebA/Eval/list_eval_partition.txt is 3 deep.
_MAX_DEPTH = 3
_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's own layout of a local file header.
_SNIFF_BYTES = 1024


def _download_advice(label):
  del label  # The message names the file already.
  return ("download it again in a browser (CelebA's Google Drive folder or the Kaggle mirror) "
          "and check its md5 against the README's table")


def diagnose_not_a_zip(head, size, label):
  """The one-line reason why a file named like a zip is not one, from its first bytes.

  Args:
    head: the file's first bytes (up to 1 KiB).
    size: its size in bytes.
    label: how to name it in the message (a path).

  Returns:
    The message for a `DataError`.
  """
  if size == 0:
    return f"{label} is empty (0 bytes): the download failed; {_download_advice(label)}"
  text = head.lstrip().lower()
  if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text:
    return (f"{label} is an HTML page, not a zip archive: Google Drive serves such a page "
            "instead of the file when its download quota is exceeded (\"Too many users have "
            f"viewed or downloaded this file recently\"); wait a day or {_download_advice(label)}")
  if head.startswith(_ZIP_MAGIC):
    return (f"{label} is truncated or damaged (a zip without its directory at the end, "
            f"{size:,} bytes): the download was cut off; {_download_advice(label)}")
  return (f"{label} is not a zip archive (it starts with {head[:8]!r}); "
          f"{_download_advice(label)}")


def open_zip(file, label):
  """Opens a zip archive; a broken download gets a one-line DataError naming `label`.

  Args:
    file: a path or a seekable binary file object.
    label: how to name it in messages.

  Returns:
    zipfile.ZipFile.

  Raises:
    DataError: the file cannot be read or is not an intact zip archive.
  """
  try:
    return zipfile.ZipFile(file)
  except zipfile.BadZipFile:
    pass
  except OSError as error:
    raise DataError(f"cannot read {label} ({error.strerror or error})") from None
  if isinstance(file, (str, os.PathLike)):
    size = os.path.getsize(file)
    with open(file, "rb") as f:
      head = f.read(_SNIFF_BYTES)
  else:
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    head = file.read(_SNIFF_BYTES)
  raise DataError(diagnose_not_a_zip(head, size, label))


class _Slice(io.RawIOBase):
  """A read-only, seekable window [offset, offset + size) of a file: a zip stored in a zip."""

  def __init__(self, path, offset, size):
    super().__init__()
    self._file = open(path, "rb")  # pylint: disable=consider-using-with
    self._offset, self._size, self._pos = offset, size, 0

  def readable(self):
    return True

  def seekable(self):
    return True

  def tell(self):
    return self._pos

  def seek(self, pos, whence=io.SEEK_SET):
    base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
    self._pos = max(0, base + pos)
    return self._pos

  def readinto(self, buffer):
    count = max(0, min(len(buffer), self._size - self._pos))
    self._file.seek(self._offset + self._pos)
    data = self._file.read(count)
    buffer[:len(data)] = data
    self._pos += len(data)
    return len(data)

  def close(self):
    self._file.close()
    super().close()


def _stored_member_slice(zip_path, info):
  """The bytes of an uncompressed zip member as a seekable file, without extracting it."""
  with open(zip_path, "rb") as f:
    f.seek(info.header_offset)
    header = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
  name_length, extra_length = header[-2], header[-1]
  offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
  return _Slice(zip_path, offset, info.file_size)


@dataclasses.dataclass(frozen=True)
class ImageStore:
  """Where the images are: a folder, a zip file, or a zip stored inside another zip.

  Attributes:
    kind: "folder", "zip" or "zip_in_zip".
    path: the folder or the (outer) zip file.
    member: the inner zip's member name ("zip_in_zip"), else None.
    prefix: the folder inside the zip that holds the images ("" for any), for messages.
  """
  kind: str
  path: str
  member: Optional[str] = None
  prefix: str = ""

  def label(self):
    if self.kind == "folder":
      return self.path + os.sep
    inner = f"{self.member}:" if self.member else ""
    where = f"{inner}{self.prefix}".rstrip(":")
    return f"{self.path}:{where}" if where else self.path

  def open_zip(self):
    """The zip holding the images (a fresh ZipFile: one per process)."""
    if self.kind == "zip":
      return open_zip(self.path, self.path)
    with open_zip(self.path, self.path) as outer:
      info = outer.getinfo(self.member)
    return open_zip(_stored_member_slice(self.path, info), f"{self.path}:{self.member}")

  def list_images(self):
    """{file name: zip member name or None (folder)} of every image present."""
    if self.kind == "folder":
      try:
        names = os.listdir(self.path)
      except OSError as error:
        raise DataError(f"cannot list {self.path} ({error.strerror or error})") from None
      return {n: None for n in names if n.lower().endswith(IMAGE_SUFFIXES)}
    with self.open_zip() as archive:
      return image_members(archive, self.prefix)


def image_members(archive, prefix=""):
  """{file name: member name} of the images in a zip (under `prefix`, when given)."""
  members = {}
  for info in archive.infolist():
    name = info.filename
    if info.is_dir() or not name.lower().endswith(IMAGE_SUFFIXES):
      continue
    if prefix and not name.startswith(prefix):
      continue
    members.setdefault(name.rsplit("/", 1)[-1], name)
  return members


@dataclasses.dataclass(frozen=True)
class Layout:
  """What `find_layout` recognised in a download.

  Attributes:
    name: the layout in words, for the prepare log (e.g. "Kaggle archive (zip, CSV metadata)").
    root: the folder or zip file given.
    images: the ImageStore.
    partition: where list_eval_partition.{txt,csv} is (a path, or "ZIP:member").
    attributes: where list_attr_celeba.{txt,csv} is, or None.
    identity: where identity_CelebA.txt is, or None.
  """
  name: str
  root: str
  images: ImageStore
  partition: str
  attributes: Optional[str]
  identity: Optional[str]

  def files_read(self):
    """The files this layout reads, for the log: (role, location) pairs."""
    found = [("images", self.images.label()), ("partition", self.partition)]
    found += [(role, where) for role, where in (("attributes", self.attributes),
                                               ("identities", self.identity)) if where]
    return found

  def read_text_lines(self, where):
    """The lines of a metadata file (a path, or "ZIP:member"); DataError if unusable."""
    if self.root_is_zip and where.startswith(self.root + ":"):
      member = where[len(self.root) + 1:]
      with open_zip(self.root, self.root) as archive:
        data = archive.read(member)
    else:
      try:
        with open(where, "rb") as f:
          data = f.read()
      except OSError as error:
        raise DataError(f"cannot read {where} ({error.strerror or error})") from None
    return metadata_lines(data, where)

  @property
  def root_is_zip(self):
    return os.path.isfile(self.root)


def metadata_lines(data, label):
  """Decodes a metadata file's bytes into lines; a broken download is a one-line DataError."""
  if not data.strip():
    raise DataError(f"{label} is empty: the download failed; {_download_advice(label)}")
  head = data[:_SNIFF_BYTES].lstrip().lower()
  if head.startswith((b"<!doctype html", b"<html")):
    raise DataError(f"{label} is an HTML page, not CelebA's text file (a failed download, e.g. "
                    f"Google Drive's quota page); {_download_advice(label)}")
  if b"\x00" in data[:_SNIFF_BYTES]:
    raise DataError(f"{label} is a binary file, not CelebA's text file; "
                    f"{_download_advice(label)}")
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError:
    raise DataError(f"{label} is not a text file (not UTF-8); {_download_advice(label)}") from None
  return text.splitlines()


def _depth(rel):
  return rel.count("/")


def _pick(label_root, candidates, what):
  """The shallowest candidate (rel path); a tie between folders is ambiguous."""
  if not candidates:
    return None
  candidates = sorted(candidates, key=lambda rel: (_depth(rel), rel))
  best = [c for c in candidates if _depth(c) == _depth(candidates[0])]
  if len(best) > 1:
    raise DataError(f"{label_root} holds {len(best)} copies of {what} ({', '.join(best[:3])}); "
                    "keep one CelebA download in the folder given to --source_dir")
  return best[0]


def _metadata(files, label_root, txt_name):
  """The rel path of a metadata file: the .txt (CelebA's own) before the Kaggle .csv twin."""
  csv_name = os.path.splitext(txt_name)[0] + ".csv"
  by_name = {txt_name: [], csv_name: []}
  for rel in files:
    base = rel.rsplit("/", 1)[-1]
    if base in by_name:
      by_name[base].append(rel)
  return (_pick(label_root, by_name[txt_name], txt_name)
          or _pick(label_root, by_name[csv_name], csv_name))


def _scan_folder(root):
  """(files, image folders) below `root` as "/"-separated rel paths, up to _MAX_DEPTH levels.

  An image folder is not listed (it may hold 200,000 files); a nested one (Kaggle's
  img_align_celeba/img_align_celeba/) is followed to the innermost folder holding images.
  """
  files, image_dirs = [], []
  pending = [("", 0)]
  while pending:
    rel, depth = pending.pop()
    try:
      entries = sorted(os.scandir(os.path.join(root, rel)), key=lambda e: e.name)
    except OSError:
      continue
    for entry in entries:
      child = f"{rel}/{entry.name}" if rel else entry.name
      if entry.is_dir():
        if entry.name == celeba.IMAGE_DIR:
          image_dirs.append(_innermost_image_dir(root, child))
        elif depth + 1 < _MAX_DEPTH:
          pending.append((child, depth + 1))
      elif entry.is_file():
        files.append(child)
  return files, image_dirs


def _holds_images(path):
  with os.scandir(path) as entries:
    return any(e.name.lower().endswith(IMAGE_SUFFIXES) for e in entries)


def _innermost_image_dir(root, rel):
  nested = f"{rel}/{celeba.IMAGE_DIR}"
  if os.path.isdir(os.path.join(root, nested)) and not _holds_images(os.path.join(root, rel)):
    return nested
  return rel


def _layout_name(site_hint, where, partition):
  csv = partition.endswith(".csv")
  site = site_hint or ("Kaggle celeba-dataset" if csv else "CelebA folder")
  return f"{site} ({where}, {'CSV' if csv else 'text'} metadata)"


def _folder_layout(root):
  files, image_dirs = _scan_folder(root)
  partition = _metadata(files, root, celeba.PARTITION_FILE)
  if partition is None:
    raise DataError(f"{root}: {celeba.PARTITION_FILE} not found (nor Kaggle's .csv twin, up to "
                    f"{_MAX_DEPTH} folders down): --source_dir must be a CelebA "
                    f"download (a folder with {celeba.IMAGE_DIR}/ or {IMAGE_ZIP} and "
                    f"{celeba.PARTITION_FILE}, Google Drive's Img/ Anno/ Eval/ folders, or "
                    "Kaggle's archive.zip)")
  image_dirs = [d for d in image_dirs if _holds_images(os.path.join(root, d))]
  image_dir = _pick(root, image_dirs, f"{celeba.IMAGE_DIR}/")
  zips = [rel for rel in files if rel.rsplit("/", 1)[-1] == IMAGE_ZIP]
  if image_dir is not None:
    images = ImageStore("folder", os.path.join(root, image_dir))
  elif zips:
    images = ImageStore("zip", os.path.join(root, _pick(root, zips, IMAGE_ZIP)))
  elif any(rel.lower().endswith(IMAGE_SUFFIXES) for rel in files if "/" not in rel):
    images = ImageStore("folder", root)  # Images flattened beside the metadata.
  else:
    raise DataError(f"{root} has neither {celeba.IMAGE_DIR}/ with images nor {IMAGE_ZIP}; "
                    "point --source_dir at the CelebA download (see the README's Real CelebA)")
  drive = any(rel.startswith(("Anno/", "Eval/", "Img/")) or "/Anno/" in rel or "/Eval/" in rel
              for rel in files + [partition])
  where = "folder" if images.kind == "folder" else f"folder, images in {IMAGE_ZIP}"
  absolute = lambda rel: os.path.join(root, rel) if rel else None
  return Layout(
      _layout_name("Google Drive folder (Img/ Anno/ Eval/)" if drive else None, where,
                   partition),
      root, images, absolute(partition),
      absolute(_metadata(files, root, celeba.ATTRIBUTE_FILE)),
      absolute(_metadata(files, root, IDENTITY_FILE)))


def _zip_layout(path):
  with open_zip(path, path) as archive:
    infos = [i for i in archive.infolist() if not i.is_dir()]
    files = [i.filename for i in infos
             if _depth(i.filename) < _MAX_DEPTH and
             not i.filename.lower().endswith(IMAGE_SUFFIXES)]
    partition = _metadata(files, path, celeba.PARTITION_FILE)
    if partition is None:
      raise DataError(f"{path} holds no {celeba.PARTITION_FILE} (or list_eval_partition.csv): "
                      "not a CelebA download; pass the Kaggle archive.zip or a CelebA folder "
                      "as --source_dir")
    members = image_members(archive)
    if members:
      folders = {m.rsplit("/", 1)[0] + "/" if "/" in m else "" for m in members.values()}
      prefix = _pick(path, sorted(folders), f"{celeba.IMAGE_DIR}/ image folders")
      images = ImageStore("zip", path, None, prefix)
      where = "zip archive"
    else:
      inner = [f for f in files if f.rsplit("/", 1)[-1] == IMAGE_ZIP]
      if not inner:
        raise DataError(f"{path} holds no CelebA images (no .jpg files, no {IMAGE_ZIP}): the "
                        f"download is incomplete; {_download_advice(path)}")
      info = archive.getinfo(_pick(path, inner, IMAGE_ZIP))
      if info.compress_type != zipfile.ZIP_STORED:
        raise DataError(f"{path} holds {info.filename} compressed, which cannot be read in "
                        f"place; unzip {path} and pass the folder as --source_dir")
      images = ImageStore("zip_in_zip", path, info.filename)
      where = f"zip archive with {IMAGE_ZIP} inside"
    drive = any(f.split("/")[-2:-1] in (["Anno"], ["Eval"]) for f in files)
  member = lambda rel: f"{path}:{rel}" if rel else None
  return Layout(
      _layout_name("Google Drive folder" if drive else None, where, partition), path, images,
      member(partition), member(_metadata(files, path, celeba.ATTRIBUTE_FILE)),
      member(_metadata(files, path, IDENTITY_FILE)))


def find_layout(path):
  """Recognises the CelebA download at `path` (a folder or a zip file).

  Args:
    path: what the user passed as --source_dir.

  Returns:
    Layout.

  Raises:
    DataError: the path does not exist, is not a CelebA download, or is a broken download
      (named with its likely cause).
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    layout = _folder_layout(path)
  elif os.path.isfile(path):
    layout = _zip_layout(path)
  else:
    raise DataError(f"--source_dir {path} does not exist; pass a CelebA folder or Kaggle's "
                    "archive.zip")
  if layout.images.kind != "folder":
    with layout.images.open_zip() as archive:  # A broken image zip fails here, not in a worker.
      if not image_members(archive, layout.images.prefix):
        raise DataError(f"{layout.images.label()} holds no images: the download is "
                        f"incomplete; {_download_advice(layout.images.path)}")
  return layout
