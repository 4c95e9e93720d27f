"""celeba-stream's data pipeline: CelebA folder -> sharded TFRecords -> uint8 tf.data batches.

`make_dataset` (reader.py) and `read_manifest` / `num_examples` (manifest.py) are the entry
points most code needs. They are resolved lazily (PEP 562), so that importing a TensorFlow-free
module such as `data_pipeline.synthetic` or `data_pipeline.transform` does not load TensorFlow.
"""

import importlib

_LAZY = {
    "make_dataset": "data_pipeline.reader",
    "read_manifest": "data_pipeline.manifest",
    "num_examples": "data_pipeline.manifest",
    "prepare": "data_pipeline.writer",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
