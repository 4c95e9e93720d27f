"""The child-process side of the pipeline benchmark: one task per process, its own peak RSS.

    python -m benchmarks.pipeline_methods SPEC.json RESULT.json

SPEC.json holds one task (written by benchmarks.pipeline); RESULT.json gets its numbers.
`feed` feeds batches by one method of `METHODS`: the classic in-RAM float32 recipe
(`classic_flow`, `classic_tfdata`), streaming shards (`stream_raw|png|jpeg`), the JPEG decode
ceiling, or a peer a user would pick instead (`keras_folder`, `tfds_jpeg`). `prepare` times the
writer, `peer_inputs` writes the peers' inputs once, `train` compares train steps fed from the
shards with steps on one constant batch. Peak RSS is the process's high-water mark (VmHWM) in
MB (10**6 bytes). docs/benchmarks/README.md describes each method.
"""

import io
import json
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image

from benchmarks import child_tasks
from benchmarks.process_memory import peak_rss_mb
from data_pipeline import manifest as manifest_lib
from data_pipeline import sources
from data_pipeline import transform
from modeling import config as config_lib

# TensorFlow, and our modules that load it, are imported inside the functions the child
# process runs: tools.benchmark_pipeline imports this module for its flag choices, and its
# --helpshort loads no TensorFlow (docs/ARCHITECTURE.md, Imports).

# The feeding methods a user would pick instead of this project's streaming: they read the
# source folder's original JPEGs (prepared by the `peer_inputs` task), not the data dir.
PEERS = ("keras_folder", "tfds_jpeg")
METHODS = ("classic_flow", "classic_tfdata", "stream_raw", "stream_png", "stream_jpeg",
           "jpeg_ceiling") + PEERS
STREAM_ENCODING = {"stream_raw": "raw", "stream_png": "png", "stream_jpeg": "jpeg"}
# The encoding of the shards each method reads (the classic recipe loads its array from raw);
# the peers read none.
METHOD_ENCODING = {"classic_flow": "raw", "classic_tfdata": "raw", "jpeg_ceiling": "jpeg",
                   **STREAM_ENCODING}
PEER_INPUTS = "peer_inputs.json"
_MB = 1e6


def _time_batches(iterator, warmup_batches, num_batches):
  """Draws warm-up batches, then times `num_batches` more; returns (images, seconds)."""
  for _ in range(warmup_batches):
    next(iterator)
  images = 0
  start = time.perf_counter()
  for _ in range(num_batches):
    images += int(next(iterator).shape[0])
  return images, time.perf_counter() - start


def load_float_array(raw_dir, size, image_size):
  """The classic recipe's array: the first `size` training images as float32 / 255."""
  from data_pipeline import make_dataset
  x = np.empty((size, image_size, image_size, 3), np.float32)
  filled = 0
  for batch in make_dataset(raw_dir, "train", 512, shuffle=False, max_images=size):
    batch = batch.numpy()
    x[filled:filled + len(batch)] = batch.astype(np.float32) / 255.
    filled += len(batch)
  return x[:filled]


def load_image_bytes(data_dir, size):
  """The encoded image bytes of the first `size` training records, as a NumPy object array."""
  import tensorflow as tf
  manifest = manifest_lib.read_manifest(data_dir)
  paths = [s["path"] for s in manifest_lib.split_shards(manifest, "train", data_dir)
           if s["records"]]
  spec = {"image": tf.io.FixedLenFeature([], tf.string)}
  records = tf.data.TFRecordDataset(paths).take(size).batch(1024)
  parts = [tf.io.parse_example(batch, spec)["image"].numpy() for batch in records]
  return np.concatenate(parts) if parts else np.empty([0], object)


def _first_shards(shards, size):
  """[(path, records to read)] covering the first `size` records of `shards` in file order."""
  selected, remaining = [], size
  for shard in shards:
    if remaining <= 0:
      break
    take = min(shard["records"], remaining)
    selected.append((shard["path"], take))
    remaining -= take
  return selected


def _crop_and_resize(peers, image_size):
  """Crops the study's box (in the source's pixels) and resizes with lanczos3, as float32."""
  import tensorflow as tf
  left, top, right, bottom = peers["crop_box"]

  def crop_and_resize(images):  # One image [H,W,C] or a batch [B,H,W,C].
    return tf.image.resize(images[..., top:bottom, left:right, :], (image_size, image_size),
                           method="lanczos3")
  return crop_and_resize


def _peer_dataset(spec, method):
  """The peer's dataset of float32 batches (docs/benchmarks/README.md), repeating."""
  import keras
  import tensorflow as tf
  peers, size, batch_size, seed = spec["peers"], spec["size"], spec["batch_size"], spec["seed"]
  crop_and_resize = _crop_and_resize(peers, spec["image_size"])
  if method == "keras_folder":
    width, height = peers["source_size"]
    ds = keras.utils.image_dataset_from_directory(
        peers["folders"][str(size)], labels=None, batch_size=batch_size,
        image_size=(height, width), shuffle=True, seed=seed, verbose=False)
    return (ds.map(crop_and_resize, num_parallel_calls=tf.data.AUTOTUNE).repeat()
            .prefetch(tf.data.AUTOTUNE))
  paths, takes = zip(*_first_shards(peers["shards"], size))
  spec_image = {"image": tf.io.FixedLenFeature([], tf.string)}

  def decode(record):
    data = tf.io.parse_single_example(record, spec_image)["image"]
    return crop_and_resize(tf.io.decode_jpeg(data, channels=3))

  files = (tf.data.Dataset.from_tensor_slices((list(paths), tf.constant(takes, tf.int64)))
           .shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat())
  # TFDS' default read settings: 16 files interleaved, 16 records from each in turn.
  records = files.interleave(lambda path, take: tf.data.TFRecordDataset(path).take(take),
                             cycle_length=min(16, len(paths)), block_length=16,
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  return (records.shuffle(spec["shuffle_buffer"], seed=seed)
          .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
          .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def _feed_iterator(spec, method, loaded):
  """An iterator of batches for `method`; fills `loaded` with what was built before timing."""
  import tensorflow as tf
  from data_pipeline import make_dataset
  size, batch_size, seed = spec["size"], spec["batch_size"], spec["seed"]
  start = time.perf_counter()
  if method in ("classic_flow", "classic_tfdata"):
    x = load_float_array(spec["dirs"]["raw"], size, spec["image_size"])
    loaded.update(load_seconds=time.perf_counter() - start, array_mb=x.nbytes / _MB,
                  array_dtype=str(x.dtype), images_available=len(x))
    if method == "classic_flow":
      generator = tf.keras.preprocessing.image.ImageDataGenerator()
      return generator.flow(x, batch_size=batch_size, shuffle=True, seed=seed)
    ds = (tf.data.Dataset.from_tensor_slices(x)
          .shuffle(spec["shuffle_buffer"], seed=seed, reshuffle_each_iteration=True)
          .repeat().batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    return iter(ds)
  if method in STREAM_ENCODING:
    ds = make_dataset(spec["dirs"][STREAM_ENCODING[method]], "train", batch_size, shuffle=True,
                      seed=seed, repeat=True, drop_remainder=True, max_images=size,
                      shuffle_buffer=spec["shuffle_buffer"])
    loaded.update(load_seconds=0.0, images_available=size)
    return iter(ds)
  if method == "jpeg_ceiling":
    encoded = load_image_bytes(spec["dirs"]["jpeg"], size)
    loaded.update(load_seconds=time.perf_counter() - start, images_available=len(encoded),
                  bytes_mb=sum(len(b) for b in encoded) / _MB)
    decode = lambda data: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
    ds = (tf.data.Dataset.from_tensor_slices(encoded).repeat()
          .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
          .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    return iter(ds)
  if method in PEERS:
    iterator = iter(_peer_dataset(spec, method))
    loaded.update(load_seconds=time.perf_counter() - start, images_available=size)
    return iterator
  raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def feed(spec):
  """The `feed` task: times one method at one dataset size (docs/benchmarks/README.md)."""
  # Loaded before start_rss, so that the feed's memory excludes the libraries'.
  import keras  # pylint: disable=unused-import
  import tensorflow as tf  # pylint: disable=unused-import
  start_rss = peak_rss_mb()
  loaded = {}
  iterator = _feed_iterator(spec, spec["method"], loaded)
  images, seconds = _time_batches(iterator, spec["warmup_batches"], spec["num_batches"])
  return {"method": spec["method"], "size": spec["size"], "images": images,
          "seconds": seconds, "images_per_s": images / seconds if seconds > 0 else None,
          "peak_rss_mb": peak_rss_mb(), "start_rss_mb": start_rss, **loaded}


def prepare(spec):
  """The `prepare` task: runs and times each job; removes the outputs of `scratch` jobs."""
  from data_pipeline import writer
  results = []
  # Pooled jobs first, as in every earlier report. Their spawned workers import TensorFlow
  # within the timing, as they do for a user; a one-worker job writes in this process.
  for job in sorted(spec["jobs"], key=lambda job: job["workers"] == 1):
    source = sources.CelebAFolderSource(spec["source_dir"])
    start = time.perf_counter()
    manifest = writer.prepare(
        source, job["output_dir"], name=spec["name"], image_size=spec["image_size"],
        crop_box=tuple(spec["crop"]), encoding=job["encoding"],
        jpeg_quality=spec["jpeg_quality"], num_workers=job["workers"],
        shard_mb=spec["shard_mb"], max_images=job["max_images"], progress=False)
    seconds = time.perf_counter() - start
    images = sum(split["num_examples"] for split in manifest["splits"].values())
    if job.get("scratch"):
      shutil.rmtree(job["output_dir"])
    results.append({"encoding": job["encoding"], "workers": job["workers"],
                    "output_dir": job["output_dir"], "timed": bool(job.get("timed")),
                    "images": images, "seconds": seconds,
                    "images_per_s": images / seconds if seconds > 0 else None})
  return {"jobs": results}


def _peer_inputs_reusable(index, spec):
  """Whether an earlier run's peer inputs hold what `spec` asks for."""
  return (index is not None and index.get("fingerprint") == spec["fingerprint"]
          and index.get("shard_mb") == spec["shard_mb"]
          and index.get("images", 0) >= max(spec["sizes"])
          and all(os.path.isdir(index["folders"].get(str(n), "")) for n in spec["sizes"])
          and all(os.path.isfile(s["path"]) for s in index["shards"]))


class _RecordShards:
  """Writes JPEG bytes as tf.train.Example records ("image"), a new shard every shard_mb MB."""

  def __init__(self, output_dir, name, shard_mb):
    self.output_dir, self.name, self.limit = output_dir, name, shard_mb * _MB
    self.shards, self._writer, self._bytes = [], None, 0

  def write(self, data):
    import tensorflow as tf
    if self._writer is None or self._bytes + len(data) > self.limit:
      self._close()
      path = os.path.join(self.output_dir, f"part-{len(self.shards):05d}")
      self.shards.append({"path": path, "records": 0})
      self._writer, self._bytes = tf.io.TFRecordWriter(path), 0
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}
    self._writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                       .SerializeToString())
    self.shards[-1]["records"] += 1
    self._bytes += len(data)

  def _close(self):
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def finish(self):
    """Closes the last shard and renames all to TFDS' NAME-train.tfrecord-I-of-N names."""
    self._close()
    for i, shard in enumerate(self.shards):
      path = os.path.join(self.output_dir,
                          f"{self.name}-train.tfrecord-{i:05d}-of-{len(self.shards):05d}")
      os.replace(shard["path"], path)
      shard["path"] = path
    return self.shards


def peer_inputs(spec):
  """The `peer_inputs` task: the peers' folders and records (docs/benchmarks/README.md)."""
  root = spec["root"]
  index_path = os.path.join(root, PEER_INPUTS)
  try:
    with open(index_path, "r", encoding="utf-8") as f:
      index = json.load(f)
  except (OSError, ValueError):
    index = None
  if _peer_inputs_reusable(index, spec):
    return dict(index, reused=True)
  if os.path.exists(root):
    shutil.rmtree(root)
  source = sources.CelebAFolderSource(spec["source_dir"])
  linked = source.layout.images.kind == "folder"
  # The folders link to the user's own files; a zip's images are written out once to link to.
  files_dir = source.layout.images.path if linked else os.path.join(root, "files")
  os.makedirs(os.path.join(root, "records"))
  os.makedirs(files_dir, exist_ok=True)
  records = _RecordShards(os.path.join(root, "records"), spec["name"], spec["shard_mb"])
  names, source_size = [], None
  for record in source.iter_split("train"):  # The writer's order, as the data dir has it.
    if len(names) == max(spec["sizes"]):
      break
    try:
      data = source.load(record)
    except transform.BadImageError:
      continue
    if source_size is None:
      with Image.open(io.BytesIO(data)) as first:
        source_size = first.size
    if not linked:
      with open(os.path.join(files_dir, record.file_name), "wb") as f:
        f.write(data)
    records.write(data)
    names.append(record.file_name)
  folders = {}
  for size in spec["sizes"]:
    folder = folders[str(size)] = os.path.join(root, f"folder-{size}")
    os.makedirs(folder)
    for name in names[:size]:
      os.symlink(os.path.join(files_dir, name), os.path.join(folder, name))
  index = {"fingerprint": spec["fingerprint"], "shard_mb": spec["shard_mb"],
           "images": len(names), "source_size": list(source_size),
           "crop_box": list(transform.crop_box_for(source_size, tuple(spec["crop"]))),
           "shards": records.finish(), "folders": folders, "linked": linked}
  with open(index_path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(index, f, indent=2)
  os.replace(index_path + ".tmp", index_path)  # Last: a folder without it is redone.
  return dict(index, reused=False)


def train(spec):
  """The `train` task: images/s of train steps fed from the shards vs from a constant batch."""
  import keras
  import tensorflow as tf
  from data_pipeline import make_dataset
  from modeling import devices
  from modeling import training
  devices.set_seed(spec["seed"])
  config = config_lib.resolve_config(spec["preset"], {"image_size": spec["image_size"]})
  model = training.build_model(config, sampling_seed=spec["seed"])
  model.compile(optimizer=keras.optimizers.Adam(learning_rate=5e-4))
  model.build((None, config.image_size, config.image_size, 3))
  batch_size = spec["batch_size"]
  stream = make_dataset(spec["dirs"]["raw"], "train", batch_size, shuffle=True,
                        seed=spec["seed"], repeat=True, drop_remainder=True,
                        max_images=spec["size"], shuffle_buffer=spec["shuffle_buffer"])
  constant_batch = next(iter(stream))
  constant = tf.data.Dataset.from_tensors(constant_batch).repeat()
  iterators = {"stream": iter(stream), "constant": iter(constant)}

  # As Keras' fit does: the batch is taken from the iterator inside the compiled step.
  @tf.function
  def step(iterator):
    return model.train_step(next(iterator))

  for iterator in iterators.values():  # Traces the step and fills the stream's buffers.
    for _ in range(spec["warmup_steps"]):
      step(iterator)
  seconds = {"stream": 0.0, "constant": 0.0}
  half = spec["steps"] // 2
  order = [("stream", half), ("constant", half), ("constant", spec["steps"] - half),
           ("stream", spec["steps"] - half)]
  for mode, steps in order:
    start = time.perf_counter()
    logs = None
    for _ in range(steps):
      logs = step(iterators[mode])
    if logs is not None:
      float(logs["loss"])  # Waits for the last step to finish.
    seconds[mode] += time.perf_counter() - start
  images = spec["steps"] * batch_size
  rates = {mode: images / s if s > 0 else None for mode, s in seconds.items()}
  return {"preset": spec["preset"], "size": spec["size"], "steps": spec["steps"],
          "warmup_steps": spec["warmup_steps"], "batch_size": batch_size,
          "parameters": int(model.count_params()),
          "stream_seconds": seconds["stream"], "constant_seconds": seconds["constant"],
          "stream_images_per_s": rates["stream"], "constant_images_per_s": rates["constant"],
          "ratio": (rates["stream"] / rates["constant"]
                    if rates["stream"] and rates["constant"] else None),
          "peak_rss_mb": peak_rss_mb()}


TASKS = {"feed": feed, "prepare": prepare, "peer_inputs": peer_inputs, "train": train}


if __name__ == "__main__":
  sys.exit(child_tasks.child_main(sys.argv, lambda spec: TASKS[spec["task"]](spec)))
