"""TFDS metadata (features.json, dataset_info.json) for a prepared data dir.

With it, any TFDS user can load the shards without this project:

  tfds.builder_from_directory(DATA).as_dataset(split="train")

yields dicts with `image` (uint8 [S, S, 3]), `id` (string) and, when present, `attributes`
(int64 [40]). TFDS' `Tensor(encoding=BYTES)` stores exactly our `raw` record (the pixels'
bytes), and `Image` decodes our png/jpeg records, so the same files serve both readers.
"""

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import naming

from data_pipeline.manifest import TFDS_FILENAME_TEMPLATE
from data_pipeline.manifest import split_shards

_DESCRIPTION = ("CelebA faces cropped to the box {crop} (in 178x218 pixels), resized to "
                "{size}x{size} with PIL LANCZOS and stored as {encoding} records by "
                "celeba-stream's tools.prepare_data.")


def tfds_features(image_size, encoding, num_attributes=None):
  """The `tfds.features.FeaturesDict` describing our records."""
  shape = (image_size, image_size, 3)
  if encoding == "raw":
    image = tfds.features.Tensor(shape=shape, dtype=np.uint8,
                                 encoding=tfds.features.Encoding.BYTES)
  else:
    image = tfds.features.Image(shape=shape, encoding_format=encoding)
  features = {"image": image, "id": tfds.features.Text()}
  if num_attributes:
    features["attributes"] = tfds.features.Tensor(shape=(num_attributes,), dtype=np.int64)
  return tfds.features.FeaturesDict(features)


def write_tfds_metadata(data_dir, manifest):
  """Writes features.json and dataset_info.json from the manifest (no shard is read)."""
  template = naming.ShardedFileTemplate(
      data_dir=data_dir, template=TFDS_FILENAME_TEMPLATE, dataset_name=manifest["name"],
      filetype_suffix="tfrecord")
  split_infos = []
  for split in manifest["splits"]:
    shards = split_shards(manifest, split)
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[s["records"] for s in shards],
        num_bytes=sum(s["bytes"] for s in shards), filename_template=template))
  attribute_names = manifest.get("attribute_names")
  features = tfds_features(manifest["image_size"], manifest["encoding"],
                           len(attribute_names) if attribute_names else None)
  description = _DESCRIPTION.format(crop=",".join(map(str, manifest["crop"])),
                                    size=manifest["image_size"], encoding=manifest["encoding"])
  tfds.folder_dataset.write_metadata(
      data_dir=data_dir, features=features, split_infos=split_infos,
      version=manifest["version"], filename_template=template, check_data=False,
      description=description, homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html")
