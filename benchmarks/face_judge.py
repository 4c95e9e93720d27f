"""How fast the face judge is: seconds to judge N images at 96x96 and to give their figures.

The images are a --images set (a folder or .npy, e.g. real photos) or synthetic faces drawn in
memory; the first half of them is the reference of the figures. Target:
judging 1,000 images (probability, landmarks, features) in at most 60 s on a 2-core CPU.
"""

import dataclasses
import time

import numpy as np

from benchmarks import report as report_lib
from data_pipeline import transform
from data_pipeline.synthetic import faces
from data_pipeline.synthetic import render
from evaluation import face_figures
from evaluation import face_judge
from evaluation import image_sets

TARGET_SECONDS_PER_1000 = 60.0


@dataclasses.dataclass(frozen=True)
class Options:
  images: str | None = None  # A folder or .npy; None: synthetic faces.
  num_images: int = 1000
  seed: int = 0


def synthetic_faces(num_images, seed):
  """uint8 [N, 96, 96, 3]: data_pipeline's synthetic faces, cropped and resized as prepared."""
  return np.stack([transform.transform(render.render_face(faces.face_factors(seed, index)),
                                       image_size=96) for index in range(num_images)])


def run_benchmark(options):
  """Judges the images, times each stage, and returns the report dict (with its table)."""
  start = time.perf_counter()
  if options.images:
    images = image_sets.load(options.images, "--images")[0][:options.num_images]
    source = options.images
  else:
    images = synthetic_faces(options.num_images, options.seed)
    source = "synthetic faces"
  seconds = {}
  tick = time.perf_counter()
  judge = face_judge.FaceJudge()
  judge.judge(images[:8])  # Traces MTCNN's functions: not part of a steady judging pass.
  seconds["load_judge"] = time.perf_counter() - tick
  tick = time.perf_counter()
  judged = judge.judge(images)
  seconds["judge"] = time.perf_counter() - tick
  tick = time.perf_counter()
  half = len(images) // 2
  reference = face_figures.Reference.from_judged(judged.take(np.arange(half)))
  figures = face_figures.figures(judged.take(np.arange(half, len(images))), reference,
                                 options.seed)
  seconds["figures"] = time.perf_counter() - tick
  per_1000 = seconds["judge"] * 1000.0 / len(images)
  target = {"name": "judge_1000_images_s", "value": per_1000,
            "threshold": TARGET_SECONDS_PER_1000, "passed": per_1000 <= TARGET_SECONDS_PER_1000}
  report = {"benchmark": "face_judge", "machine": report_lib.machine_description(),
            "inputs": {"images": source, "num_images": int(len(images)), "seed": options.seed},
            "seconds": seconds, "images_per_s": len(images) / seconds["judge"],
            "figures_of_the_second_half": figures, "judge": judge.describe(),
            "targets": [target], "elapsed_seconds": time.perf_counter() - start}
  report["table"] = markdown(report)
  return report


def markdown(report):
  s, n = report["seconds"], report["inputs"]["num_images"]
  (target,) = report["targets"]
  return "\n".join([
      f"| face judge, {n} images at 96x96 ({report['inputs']['images']}) | seconds |",
      "|---|---|",
      f"| load MTCNN and trace it | {s['load_judge']:.1f} |",
      f"| judge: probability, landmarks, features | {s['judge']:.1f} |",
      f"| figures of half against the other half (bootstrap intervals) | {s['figures']:.1f} |",
      f"| **per 1,000 images judged** (target {target['threshold']:.0f} s) | "
      f"**{target['value']:.1f}** ({report_lib.verdict(target['passed'])}) |", ""])
