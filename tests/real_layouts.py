"""Builds CelebA downloads in every layout of its two download sites from a CelebA folder.

Used by tests/test_real_celeba.py on the real photos of `$CELEBA_REAL_DIR` (never copied into
the repository: every layout is built in a temporary folder). Each builder takes the source
folder (flat layout: img_align_celeba/, list_eval_partition.txt, list_attr_celeba.txt,
identity_CelebA.txt), the image names to include, and a destination, and returns the path a
user would pass as --source_dir.
"""

import csv
import io
import os
import shutil
import zipfile

# The official partition of CelebA's 202,599 images: contiguous ranges of file numbers.
OFFICIAL_COUNT = 202_599
OFFICIAL_LAST = {0: 162_770, 1: 182_637, 2: OFFICIAL_COUNT}


def official_partition_lines():
  """The full official list_eval_partition.txt (202,599 lines), as CelebA ships it."""
  lines, split = [], 0
  for number in range(1, OFFICIAL_COUNT + 1):
    while number > OFFICIAL_LAST[split]:
      split += 1
    lines.append(f"{number:06d}.jpg {split}")
  return lines


def _rows(path, names, skip=0):
  """The lines of a metadata file for the given image names (after `skip` header lines)."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  wanted = set(names)
  return lines[:skip], [line for line in lines[skip:] if line.split()[0] in wanted]


def metadata_texts(source, names):
  """{CelebA file name: text} of the metadata files restricted to `names`."""
  texts = {}
  _, rows = _rows(os.path.join(source, "list_eval_partition.txt"), names)
  texts["list_eval_partition.txt"] = "\n".join(rows) + "\n"
  header, rows = _rows(os.path.join(source, "list_attr_celeba.txt"), names, skip=2)
  texts["list_attr_celeba.txt"] = "\n".join([str(len(rows)), header[1], *rows]) + "\n"
  _, rows = _rows(os.path.join(source, "identity_CelebA.txt"), names)
  texts["identity_CelebA.txt"] = "\n".join(rows) + "\n"
  return texts


def kaggle_csv_texts(texts):
  """Kaggle's CSV twins of the partition and attribute files (plus its two other CSVs)."""
  out = {}
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["image_id", "partition"])
  for line in texts["list_eval_partition.txt"].splitlines():
    writer.writerow(line.split())
  out["list_eval_partition.csv"] = buffer.getvalue()
  lines = texts["list_attr_celeba.txt"].splitlines()
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["image_id", *lines[1].split()])
  for line in lines[2:]:
    writer.writerow(line.split())
  out["list_attr_celeba.csv"] = buffer.getvalue()
  names = [line.split()[0] for line in lines[2:]]
  out["list_bbox_celeba.csv"] = "image_id,x_1,y_1,width,height\n" + "".join(
      f"{n},95,71,226,313\n" for n in names)
  out["list_landmarks_align_celeba.csv"] = (
      "image_id,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,leftmouth_x,"
      "leftmouth_y,rightmouth_x,rightmouth_y\n" + "".join(
          f"{n},69,109,106,113,77,142,73,152,108,154\n" for n in names))
  return out


def _write(path, text_or_bytes):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mode = "wb" if isinstance(text_or_bytes, bytes) else "w"
  with open(path, mode) as f:
    f.write(text_or_bytes)


def _copy_images(source, names, image_dir):
  os.makedirs(image_dir, exist_ok=True)
  for name in names:
    shutil.copyfile(os.path.join(source, "img_align_celeba", name), os.path.join(image_dir, name))


def _image_zip(source, names, path, prefix="img_align_celeba/",
               compression=zipfile.ZIP_DEFLATED):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with zipfile.ZipFile(path, "w", compression) as archive:
    for name in names:
      archive.write(os.path.join(source, "img_align_celeba", name), prefix + name)
  return path


def flat_folder(source, names, dest):
  """This project's flat layout: img_align_celeba/ beside the three text files."""
  _copy_images(source, names, os.path.join(dest, "img_align_celeba"))
  for file_name, text in metadata_texts(source, names).items():
    _write(os.path.join(dest, file_name), text)
  return dest


def drive_folder(source, names, dest, zipped_images=False):
  """The Google Drive folder as downloaded: Img/, Anno/, Eval/ (images unzipped or not)."""
  if zipped_images:
    _image_zip(source, names, os.path.join(dest, "Img", "img_align_celeba.zip"))
  else:
    _copy_images(source, names, os.path.join(dest, "Img", "img_align_celeba"))
  texts = metadata_texts(source, names)
  _write(os.path.join(dest, "Anno", "list_attr_celeba.txt"), texts["list_attr_celeba.txt"])
  _write(os.path.join(dest, "Anno", "identity_CelebA.txt"), texts["identity_CelebA.txt"])
  _write(os.path.join(dest, "Eval", "list_eval_partition.txt"),
         texts["list_eval_partition.txt"])
  return dest


def drive_folder_zip(source, names, dest, inner_compression=zipfile.ZIP_STORED):
  """The whole Drive folder as the one zip Drive makes of it: CelebA/Img/img_align_celeba.zip
  (stored, as zips of zips are) plus CelebA/Anno/ and CelebA/Eval/."""
  inner = _image_zip(source, names, os.path.join(dest, "work", "img_align_celeba.zip"))
  texts = metadata_texts(source, names)
  path = os.path.join(dest, "CelebA-20261201T000000Z-001.zip")
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    archive.write(inner, "CelebA/Img/img_align_celeba.zip", compress_type=inner_compression)
    archive.writestr("CelebA/Anno/list_attr_celeba.txt", texts["list_attr_celeba.txt"])
    archive.writestr("CelebA/Anno/identity_CelebA.txt", texts["identity_CelebA.txt"])
    archive.writestr("CelebA/Eval/list_eval_partition.txt", texts["list_eval_partition.txt"])
  shutil.rmtree(os.path.join(dest, "work"))
  return path


def kaggle_archive(source, names, dest, with_images=True):
  """Kaggle's archive.zip: img_align_celeba/img_align_celeba/*.jpg and four CSVs at its root."""
  path = os.path.join(dest, "archive.zip")
  os.makedirs(dest, exist_ok=True)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    if with_images:
      for name in names:
        archive.write(os.path.join(source, "img_align_celeba", name),
                      f"img_align_celeba/img_align_celeba/{name}")
    for file_name, text in kaggle_csv_texts(metadata_texts(source, names)).items():
      archive.writestr(file_name, text)
  return path


def kaggle_folder(source, names, dest):
  """Kaggle's archive.zip unpacked: the nested image folder and the CSVs."""
  _copy_images(source, names, os.path.join(dest, "img_align_celeba", "img_align_celeba"))
  for file_name, text in kaggle_csv_texts(metadata_texts(source, names)).items():
    _write(os.path.join(dest, file_name), text)
  return dest


LAYOUTS = {
    "drive_folder": drive_folder,
    "drive_folder_image_zip": lambda s, n, d: drive_folder(s, n, d, zipped_images=True),
    "drive_folder_zip": drive_folder_zip,
    "kaggle_archive_zip": kaggle_archive,
    "kaggle_folder": kaggle_folder,
    "flat_folder": flat_folder,
}
