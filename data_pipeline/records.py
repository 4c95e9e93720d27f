"""One `tf.train.Example` per image: encoding on the writer side, parsing on the reader side.

Features (docs/ARCHITECTURE.md): `image` (bytes: the raw uint8 HWC pixels, png, or jpeg with
4:4:4 chroma; the manifest's `encoding` says which), `id` (the CelebA file name, or a TFDS
source's tfds_id) and `attributes` (int64 -1/+1 in the manifest's `attribute_names` order,
only when the source had them). raw and png give back the transform's pixels exactly; jpeg is
lossy within small bounds (docs/benchmarks/README.md). Serialization is deterministic, so a
rerun reproduces identical shards.
"""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

ENCODINGS = ("raw", "png", "jpeg")


def encode_image(pixels, encoding, jpeg_quality=95):
  """Encodes uint8 [S, S, 3] pixels as `encoding` bytes."""
  if encoding == "raw":
    return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
  buffer = io.BytesIO()
  img = Image.fromarray(pixels)
  if encoding == "png":
    # zlib level 1: much faster to write than the default 6, files only a little larger
    # (docs/benchmarks/README.md).
    img.save(buffer, format="PNG", compress_level=1)
  elif encoding == "jpeg":
    # 4:4:4 keeps full colour resolution: at 96x96 the default 4:2:0 visibly smears lips/eyes.
    img.save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
  else:
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
  return buffer.getvalue()


def serialize_example(image, image_id, attributes=None):
  """Serializes one record; `image` is the encoded bytes, `image_id` a str or bytes."""
  if isinstance(image_id, str):
    image_id = image_id.encode("utf-8")
  feature = {
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id])),
  }
  if attributes is not None:
    feature["attributes"] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=[int(a) for a in attributes]))
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString(deterministic=True)


def feature_spec(num_attributes=None):
  """The `tf.io.parse_example` spec; `num_attributes` None means records carry none."""
  spec = {
      "image": tf.io.FixedLenFeature([], tf.string),
      "id": tf.io.FixedLenFeature([], tf.string),
  }
  if num_attributes:
    spec["attributes"] = tf.io.FixedLenFeature([num_attributes], tf.int64)
  return spec


def decode_images(encoded, encoding, image_size):
  """Decodes a [B] string tensor of images into uint8 [B, S, S, 3] (TF ops, graph-safe)."""
  shape = [image_size, image_size, 3]
  if encoding == "raw":
    # decode_raw of a batch is one vectorized op; a wrong length fails loudly in the reshape.
    images = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [-1] + shape)
    return tf.ensure_shape(images, [encoded.shape[0]] + shape)  # Keep a static batch size.
  if encoding == "png":
    decode = lambda data: tf.ensure_shape(tf.io.decode_png(data, channels=3), shape)
  elif encoding == "jpeg":
    # INTEGER_ACCURATE is libjpeg's ISLOW DCT, the one PIL uses: pixels match PIL's decoding.
    decode = lambda data: tf.ensure_shape(
        tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"), shape)
  else:
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
  return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec(shape, tf.uint8))


def decode_image_np(data, encoding, image_size):
  """Decodes one record's image bytes with NumPy/PIL (no TF), for tests and tools."""
  if encoding == "raw":
    return np.frombuffer(data, dtype=np.uint8).reshape(image_size, image_size, 3)
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
