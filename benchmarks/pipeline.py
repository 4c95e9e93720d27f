"""The pipeline benchmark: the classic in-RAM recipe vs streaming shards, side by side, in one run.

`run_benchmark(options)` feeds the same images (the first N training images of a prepared data
dir) by each method of `benchmarks.pipeline_methods.METHODS`, each method and size in a fresh
child process so that its peak RSS is its own, including the peers a user would pick instead of
streaming. It also times preparation with 1 and all workers, train steps fed from the shards vs
a constant batch, and fit against bare steps (benchmarks.training). Encodings the data dir
lacks, and the peers' inputs, are prepared into `work_dir` from its source folder and reused.
The report holds the machine, inputs, results, targets with pass/fail and Markdown tables.
This module starts no TensorFlow itself. docs/benchmarks/README.md explains the method.
"""

import dataclasses
import os
import shutil
import time

from absl import logging

from benchmarks import child_tasks
from benchmarks import pipeline_methods as methods_lib
from benchmarks import training as training_lib
from benchmarks.report import fmt
from benchmarks.report import machine_description
from benchmarks.report import verdict
from data_pipeline import manifest as manifest_lib
from data_pipeline import provenance
from data_pipeline import sources
from data_pipeline.errors import DataError
from evaluation.errors import EvaluationError
from modeling import flag_choices

ENCODINGS = flag_choices.ENCODINGS
_MB = 1e6
# Targets on this machine.
RAW_VS_CLASSIC = 0.9
JPEG_VS_CEILING = 0.85
STREAM_PEAK_RSS_MB = 1500.0
STREAM_RSS_GROWTH = 0.10
TRAIN_RATIO = 0.95
STREAM_VS_PEER = 1.0  # Streaming at least as fast as each peer.
CLASSIC_GROWTH_TOLERANCE = (0.8, 1.25)  # Measured MB/image over the float32 array's size.


@dataclasses.dataclass(frozen=True)
class Options:
  """What to measure (the tool's flags). See tools/benchmark_pipeline.py for each one."""
  data_dir: str
  work_dir: str
  sizes: tuple = (10000, 40000)
  methods: tuple = methods_lib.METHODS
  source_dir: str | None = None
  batch_size: int = 128
  num_batches: int = 50
  warmup_batches: int = 5
  shuffle_buffer: int = 1024
  seed: int = 0
  # Large enough that the worker pool's start-up (about a second) does not dominate the rate.
  prepare_images: int = 10000
  prepare_encodings: tuple = ENCODINGS
  prepare_workers: int | None = None
  train_preset: str = "vae_fact5"
  train_steps: int = 20
  train_warmup_steps: int = 2
  train_presets: tuple = training_lib.PRESETS
  train_images: int | None = None  # None: training.PRESET_IMAGES, capped at the data's.
  train_validation_steps: int = 1
  child_timeout_s: float = 3600.0


@dataclasses.dataclass
class Inputs:
  """The resolved inputs: the data dir's manifest, the source folder, the dir per encoding."""
  manifest: dict
  manifest_sha256: str
  source_dir: str | None
  dirs: dict
  to_prepare: list


def default_work_dir(output_json):
  """The work folder beside the report: <output_json without .json>_work."""
  stem, extension = os.path.splitext(output_json)
  return (stem if extension.lower() == ".json" else output_json) + "_work"


def needed_encodings(options):
  """The shard encodings the chosen methods (and the training checks) read."""
  wanted = {methods_lib.METHOD_ENCODING.get(m) for m in options.methods}
  if options.train_steps or options.train_presets:
    wanted.add("raw")
  return [e for e in ENCODINGS if e in wanted]


def _source_dir(options, manifest):
  """The CelebA folder the data dir was prepared from (checked against its fingerprint)."""
  recorded = manifest.get("source", {})
  path = options.source_dir or (recorded.get("path") if recorded.get("kind") ==
                                sources.CelebAFolderSource.kind else None)
  if not path:
    raise EvaluationError(f"--data_dir {options.data_dir} was prepared from a "
                          f"{recorded.get('kind', 'unknown')} source; pass --source_dir with the "
                          "CelebA folder to prepare the other encodings from")
  flag = "--source_dir" if options.source_dir else f"the source recorded in {options.data_dir}"
  try:
    source = sources.CelebAFolderSource(path)
  except DataError as error:
    raise EvaluationError(f"{flag}: {error}; pass --source_dir with the CelebA folder that "
                          f"{options.data_dir} was prepared from") from None
  if source.fingerprint() != manifest["settings"]["source_fingerprint"]:
    raise EvaluationError(f"{flag} {path} is not the folder {options.data_dir} was prepared "
                          "from (its images differ); pass that folder as --source_dir")
  return source.source_dir


def resolve_inputs(options):
  """Reads the data dir, checks the sizes, and plans which encodings must be prepared.

  Raises:
    DataError: the data dir is missing or incomplete.
    EvaluationError: too few training images for --sizes, or no usable source folder.
  """
  manifest = manifest_lib.read_manifest(options.data_dir)
  available = manifest["splits"].get("train", {}).get("num_examples", 0)
  too_big = [n for n in options.sizes if n > available]
  if too_big:
    raise EvaluationError(
        f"--sizes {','.join(map(str, too_big))} exceeds the {available} training images of "
        f"--data_dir {options.data_dir}; lower --sizes, or prepare a larger data dir (e.g. "
        "tools.make_synthetic_faces --num_images 50000 gives 40,000 training images)")
  if options.train_presets and (options.train_images or 0) > available:
    raise EvaluationError(
        f"--train_images {options.train_images} exceeds the {available} training images of "
        f"--data_dir {options.data_dir}; lower --train_images")
  if options.train_presets and available < options.batch_size:
    raise EvaluationError(
        f"--data_dir {options.data_dir} holds {available} training images, fewer than one "
        f"--batch_size {options.batch_size} for the training throughput; lower --batch_size "
        "or pass an empty --train_presets")
  dirs, to_prepare = {}, []
  for encoding in needed_encodings(options):
    if encoding == manifest["encoding"]:
      dirs[encoding] = os.path.abspath(options.data_dir)
    else:
      dirs[encoding] = os.path.join(os.path.abspath(options.work_dir), encoding)
      to_prepare.append(encoding)
  prepare_timing = options.prepare_images and options.prepare_encodings
  peers = set(options.methods) & set(methods_lib.PEERS)
  source_dir = (_source_dir(options, manifest) if (to_prepare or prepare_timing or peers)
                else None)
  manifest_path = os.path.join(os.path.abspath(options.data_dir), manifest_lib.MANIFEST)
  return Inputs(manifest, provenance.sha256_file(manifest_path), source_dir, dirs, to_prepare)


def run_child(spec, log_path, timeout_s):
  """Runs one task of benchmarks.pipeline_methods in a fresh process; returns its result dict.

  Raises:
    EvaluationError: the child failed or ran out of time (its output is in `log_path`).
  """
  return child_tasks.run("benchmarks.pipeline_methods", spec, log_path, timeout_s, _label(spec),
                         "raise it or lower --num_batches")


def _label(spec):
  if spec["task"] == "feed":
    return f"method {spec['method']} at {spec['size']} images"
  return f"the {spec['task']} task"


def _common_spec(options, inputs):
  manifest = inputs.manifest
  return {"image_size": manifest["image_size"], "batch_size": options.batch_size,
          "seed": options.seed, "shuffle_buffer": options.shuffle_buffer, "dirs": inputs.dirs}


def _prepare_spec(options, inputs):
  """The `prepare` task: the missing encodings, then the timing runs (1 and all workers)."""
  settings = inputs.manifest["settings"]
  jobs = [{"encoding": e, "output_dir": inputs.dirs[e], "workers": options.prepare_workers,
           "max_images": settings.get("max_images")} for e in inputs.to_prepare]
  timing_root = os.path.join(os.path.abspath(options.work_dir), "prepare_timing")
  if options.prepare_images:
    all_workers = options.prepare_workers or os.cpu_count() or 1
    for workers in sorted({all_workers, 1}, reverse=True):
      for encoding in options.prepare_encodings:
        output_dir = os.path.join(timing_root, f"{encoding}-w{workers}")
        if os.path.exists(output_dir):  # A leftover would be resumed, not timed.
          shutil.rmtree(output_dir)
        jobs.append({"encoding": encoding, "output_dir": output_dir, "workers": workers,
                     "max_images": options.prepare_images, "scratch": True, "timed": True})
  return {"task": "prepare", "source_dir": inputs.source_dir, "jobs": jobs,
          "name": settings["name"], "image_size": inputs.manifest["image_size"],
          "crop": settings["crop"], "jpeg_quality": settings.get("jpeg_quality") or 95,
          "shard_mb": settings["shard_mb"]}


def _peer_inputs_spec(options, inputs):
  """The `peer_inputs` task: the first max(sizes) training JPEGs as folders and records."""
  settings = inputs.manifest["settings"]
  return {"task": "peer_inputs", "source_dir": inputs.source_dir,
          "root": os.path.join(os.path.abspath(options.work_dir), "peers"),
          "sizes": list(options.sizes), "name": settings["name"],
          "shard_mb": settings["shard_mb"], "crop": settings["crop"],
          "fingerprint": settings["source_fingerprint"]}


def _measure_preparation(options, inputs, logs):
  """Prepares the missing shard dirs and times the writer; preparation's report, or None."""
  prepare_spec = _prepare_spec(options, inputs)
  if not prepare_spec["jobs"]:
    return None
  logging.info("preparing %s and timing the writer (%d jobs)",
               ", ".join(inputs.to_prepare) or "no shards", len(prepare_spec["jobs"]))
  done = run_child(prepare_spec, os.path.join(logs, "prepare.log"), options.child_timeout_s)
  timed = [job for job in done["jobs"] if job["timed"]]
  return {"images": options.prepare_images,
          "runs": [{k: j[k] for k in ("encoding", "workers", "images", "seconds",
                                      "images_per_s")} for j in timed]}


def _peer_inputs(options, inputs, logs):
  """The peer methods' JPEG folders and record shards (None when no peer method runs)."""
  if not set(options.methods) & set(methods_lib.PEERS):
    return None
  peers = run_child(_peer_inputs_spec(options, inputs), os.path.join(logs, "peer_inputs.log"),
                    options.child_timeout_s)
  logging.info("peer inputs: %d JPEGs in %d record shards and %d folders (%s)",
               peers["images"], len(peers["shards"]), len(peers["folders"]),
               "reused" if peers["reused"] else "written")
  return peers


def _measure_feeding(options, common, peers, logs):
  """One fresh child per size and method; their results in that order."""
  results = []
  for size in options.sizes:
    for method in options.methods:
      spec = dict(common, task="feed", method=method, size=size,
                  num_batches=options.num_batches, warmup_batches=options.warmup_batches,
                  peers=peers if method in methods_lib.PEERS else None)
      result = run_child(spec, os.path.join(logs, f"{method}-{size}.log"),
                         options.child_timeout_s)
      logging.info("%s at %d images: %.0f images/s, peak RSS %.0f MB", method, size,
                   result["images_per_s"] or 0, result["peak_rss_mb"])
      results.append(result)
  return results


def _measure_training(options, common, logs):
  """Train steps fed by the stream vs a constant batch (None without --train_steps)."""
  if not options.train_steps:
    return None
  spec = dict(common, task="train", preset=options.train_preset, size=min(options.sizes),
              steps=options.train_steps, warmup_steps=options.train_warmup_steps)
  training = run_child(spec, os.path.join(logs, "train.log"), options.child_timeout_s)
  logging.info("training %s: streaming %.1f images/s, constant batch %.1f images/s",
               options.train_preset, training["stream_images_per_s"],
               training["constant_images_per_s"])
  return training


def _measure_fit(options, inputs, logs):
  """Keras fit vs bare train steps per --train_presets preset (benchmarks.training)."""
  if not options.train_presets:
    return []
  run_root = os.path.join(os.path.abspath(options.work_dir), "fit_runs")
  available = inputs.manifest["splits"]["train"]["num_examples"]
  specs = [training_lib.fit_spec(p, inputs.dirs["raw"], options,
                                 inputs.manifest["image_size"], available, run_root)
           for p in options.train_presets]
  fit_rows = training_lib.run(specs, logs, options.child_timeout_s)
  for row in fit_rows:
    logging.info("fit %s: %.1f images/s, bare steps %.1f images/s, ratio %.3f", row["preset"],
                 row["fit_images_per_s"] or 0, row["bare_images_per_s"] or 0,
                 row["ratio"] or 0)
  return fit_rows


def run_benchmark(options):
  """Runs every measurement; returns the report dict (docs/benchmarks/README.md).

  Raises:
    DataError, EvaluationError: unusable inputs, or a child that failed (naming its log).
  """
  started = time.time()
  inputs = resolve_inputs(options)
  logs = os.path.join(os.path.abspath(options.work_dir), "logs")
  report = {"benchmark": "pipeline", "format_version": 1, "machine": machine_description()}
  preparation = _measure_preparation(options, inputs, logs)
  common = _common_spec(options, inputs)
  peers = _peer_inputs(options, inputs, logs)
  results = _measure_feeding(options, common, peers, logs)
  training = _measure_training(options, common, logs)
  fit_rows = _measure_fit(options, inputs, logs)

  # The options first: the resolved paths (absolute data_dir, the source folder found in the
  # manifest) must not be overwritten by the flags as given.
  report["inputs"] = {
      **dataclasses.asdict(options), "data_dir": os.path.abspath(options.data_dir),
      "manifest_sha256": inputs.manifest_sha256, "source_dir": inputs.source_dir,
      "image_size": inputs.manifest["image_size"], "shards": inputs.dirs,
      "prepared_here": inputs.to_prepare}
  report["results"] = results
  report["memory_growth"] = memory_growth(results, options.sizes)
  report["peer_ratios"] = peer_ratios(results, options.sizes)
  report["preparation"] = preparation
  report["training"] = training
  report["fit_throughput"] = fit_rows
  report["targets"] = (evaluate_targets(results, report["memory_growth"], training,
                                        options.sizes, inputs.manifest["image_size"])
                       + training_lib.evaluate_targets(fit_rows))
  report["definitions"] = DEFINITIONS
  report["elapsed_seconds"] = time.time() - started
  report["provenance"] = provenance.describe_run(
      options.seed, {os.path.join(os.path.abspath(options.data_dir), manifest_lib.MANIFEST):
                     inputs.manifest_sha256})
  report["table"] = markdown(report)
  return report


DEFINITIONS = {
    "images_per_s": "images of the timed batches / their wall-clock seconds, after the warm-up "
                    "batches, in a fresh process per method and size",
    "peak_rss_mb": "the process's own peak resident set size (VmHWM), MB of 10**6 bytes",
    "keras_folder": "keras.utils.image_dataset_from_directory over a folder of the same "
                    "images' original JPEG files (shuffled, at their own size), then per batch "
                    "the study's crop and tf.image.resize(method='lanczos3') to the image size",
    "tfds_jpeg": "TFRecords of the same images' original JPEG bytes (as TFDS' celeb_a stores "
                 "them), read as TFDS does (shuffled shards, interleave, shuffle buffer), "
                 "each image decoded, cropped and resized (lanczos3) in tf.data every pass",
    "peer_ratios": "images/s of a streaming method (data_pipeline.make_dataset) / images/s of "
                   "a peer, at the same size; the targets use stream_raw",
    **{f"fit_throughput.{k}": v for k, v in training_lib.DEFINITIONS.items()},
}


def peer_ratios(results, sizes):
  """Each streaming method's images/s over each peer's, per size (None when not measured)."""
  by = _by(results)
  ratios = []
  for stream in methods_lib.STREAM_ENCODING:
    for peer in methods_lib.PEERS:
      for size in sizes:
        a, b = by.get((stream, size)), by.get((peer, size))
        if a and b:
          ratio = (a["images_per_s"] / b["images_per_s"]
                   if a["images_per_s"] and b["images_per_s"] else None)
          ratios.append({"stream": stream, "peer": peer, "size": size, "ratio": ratio})
  return ratios


def _by(results):
  return {(r["method"], r["size"]): r for r in results}


def memory_growth(results, sizes):
  """Per method: peak RSS growth from the smallest to the largest size (MB/image and fraction)."""
  if len(set(sizes)) < 2:
    return {}
  small, large = min(sizes), max(sizes)
  by = _by(results)
  growth = {}
  for method in dict.fromkeys(r["method"] for r in results):
    a, b = by.get((method, small)), by.get((method, large))
    if a and b:
      delta = b["peak_rss_mb"] - a["peak_rss_mb"]
      growth[method] = {"small": small, "large": large, "mb_per_image": delta / (large - small),
                        "fraction": delta / a["peak_rss_mb"]}
  return growth


def _target(name, description, value, threshold, passed):
  return {"name": name, "description": description, "value": value, "threshold": threshold,
          "passed": passed}


def _ratio_targets(by, sizes, name, numerator, denominator, threshold, text):
  targets = []
  for size in sizes:
    a, b = by.get((numerator, size)), by.get((denominator, size))
    ratio = (a["images_per_s"] / b["images_per_s"]
             if a and b and a["images_per_s"] and b["images_per_s"] else None)
    targets.append(_target(f"{name}@{size}", f"{text} at {size} images", ratio, threshold,
                           None if ratio is None else ratio >= threshold))
  return targets


def evaluate_targets(results, growth, training, sizes, image_size):
  """The pipeline targets (and the training target), each with value and pass/fail.

  `passed` is None when the methods needed for a target were not run.
  """
  by = _by(results)
  targets = _ratio_targets(by, sizes, "raw_vs_classic", "stream_raw", "classic_flow",
                           RAW_VS_CLASSIC, "stream_raw images/s / classic_flow images/s")
  targets += _ratio_targets(by, sizes, "jpeg_vs_ceiling", "stream_jpeg", "jpeg_ceiling",
                            JPEG_VS_CEILING, "stream_jpeg images/s / jpeg_ceiling images/s")
  for peer in methods_lib.PEERS:
    targets += _ratio_targets(by, sizes, f"raw_vs_{peer}", "stream_raw", peer, STREAM_VS_PEER,
                              f"stream_raw images/s / {peer} images/s")
  for method in methods_lib.STREAM_ENCODING:
    peaks = [r["peak_rss_mb"] for r in results if r["method"] == method]
    if peaks:
      targets.append(_target(f"peak_rss_mb:{method}", f"largest peak RSS of {method} (MB)",
                             max(peaks), STREAM_PEAK_RSS_MB, max(peaks) < STREAM_PEAK_RSS_MB))
    if method in growth:
      value = growth[method]["fraction"]
      targets.append(_target(f"rss_growth:{method}", f"peak RSS growth of {method} from "
                             f"{min(sizes)} to {max(sizes)} images (fraction)", value,
                             STREAM_RSS_GROWTH, value < STREAM_RSS_GROWTH))
  if "classic_flow" in growth:
    expected = image_size * image_size * 3 * 4 / _MB  # One float32 image.
    value = growth["classic_flow"]["mb_per_image"]
    low, high = CLASSIC_GROWTH_TOLERANCE
    targets.append(_target(
        "classic_growth_mb_per_image", f"peak RSS growth of classic_flow per image (MB; one "
        f"float32 image is {expected:.4f} MB; pass within {low:g}x..{high:g}x of it)", value,
        expected, low * expected <= value <= high * expected))
  if training is not None:
    ratio = training.get("ratio")
    targets.append(_target(
        "train_stream_vs_constant", f"{training['preset']} train steps/s fed from the shards / "
        "fed from a constant batch", ratio, TRAIN_RATIO,
        None if ratio is None else ratio >= TRAIN_RATIO))
  return targets


def markdown(report):
  """The report's Markdown: machine line, results per method and size, targets, preparation."""
  machine = report["machine"]
  inputs = report["inputs"]
  sizes = list(dict.fromkeys(inputs["sizes"]))
  lines = [
      f"Machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores, "
      f"{fmt(machine['ram_gb'], 1)} GB RAM; TensorFlow {machine['tensorflow']}, Keras "
      f"{machine['keras']}; {machine['date']}.",
      f"Images: the first N training images of {inputs['data_dir']} "
      f"({inputs['image_size']}x{inputs['image_size']}); {inputs['num_batches']} batches of "
      f"{inputs['batch_size']} timed after {inputs['warmup_batches']} warm-up batches; one "
      "process per method and size.",
      "",
  ]
  header = ["method"]
  for size in sizes:
    header += [f"images/s @{size:,}", f"peak RSS MB @{size:,}"]
  growth = report["memory_growth"]
  if growth:
    header += ["RSS growth MB/image", "RSS growth %"]
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  by = _by(report["results"])
  for method in dict.fromkeys(r["method"] for r in report["results"]):
    row = [method]
    for size in sizes:
      result = by.get((method, size))
      row += [fmt(result and result["images_per_s"]), fmt(result and result["peak_rss_mb"])]
    if growth:
      g = growth.get(method)
      row += [fmt(g and g["mb_per_image"], 4),
              fmt(g and 100 * g["fraction"], 1)]
    lines.append("| " + " | ".join(row) + " |")
  ratios = report.get("peer_ratios") or []
  if ratios:
    lines += ["", "Streaming over the peers (images/s of make_dataset / images/s of the peer):",
              "", "| streaming / peer | " + " | ".join(f"@{size:,}" for size in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    by_pair = {(r["stream"], r["peer"], r["size"]): r["ratio"] for r in ratios}
    for stream, peer in dict.fromkeys((r["stream"], r["peer"]) for r in ratios):
      lines.append(f"| {stream} / {peer} | " + " | ".join(
          fmt(by_pair.get((stream, peer, size)), 2) for size in sizes) + " |")
  lines += ["", "| target | value | threshold | result |", "|---|---|---|---|"]
  for t in report["targets"]:
    lines.append(f"| {t['name']} | {fmt(t['value'], 3)} | {t['threshold']:g} | "
                 f"{verdict(t['passed'])} |")
  preparation = report.get("preparation")
  if preparation and preparation["runs"]:
    lines += ["", f"Preparation of {preparation['images']:,} images (decode, crop, LANCZOS "
              "resize, encode, write shards):", "", "| encoding | workers | images/s |",
              "|---|---|---|"]
    for run in preparation["runs"]:
      lines.append(f"| {run['encoding']} | {run['workers']} | {fmt(run['images_per_s'])} |")
  training = report.get("training")
  if training:
    lines += ["", f"Training ({training['preset']}, {training['steps']} steps of "
              f"{training['batch_size']} after {training['warmup_steps']} warm-up steps): "
              f"fed from the shards {fmt(training['stream_images_per_s'], 1)} images/s, from a "
              f"constant batch {fmt(training['constant_images_per_s'], 1)} images/s, ratio "
              f"{fmt(training['ratio'], 3)}."]
  lines += training_lib.markdown_lines(report.get("fit_throughput") or [])
  return "\n".join(lines) + "\n"
