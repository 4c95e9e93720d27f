"""The demo's chain of tool invocations, the runner that skips complete steps, and the report."""

import dataclasses
import json
import os
import re
import shlex
import subprocess
import time

from modeling import run_dir
from workflows import demo_report

_MARKERS = ".demo"


def _trained_files(run):
  """The files a finished training step leaves in its run dir."""
  return (os.path.join(run, run_dir.MODEL), os.path.join(run, run_dir.DECODER))


# The study's three models: (run name, preset, trainer). The AE with a 256-dimensional latent
# space and the VAE at KL factor 5 are encoded, analysed and sampled; the AE with z_dim 1600 is
# the study's detail-keeping reconstructor, compared on the test split only.
MODELS = (("ae", "ae_z256", "train_ae"), ("vae", "vae_fact5", "train_vae"),
          ("ae_z1600", "ae_z1600", "train_ae"))
ANALYZED = ("ae", "vae")
GENERATION_METRIC_IMAGES = 200
# The study's PIL sharpness factors 0, 3, 6, 7, and 1 (the image unchanged) as the reference
# that compares decoders (0 blurs).
STUDY_SHARPEN = "0,1,3,6,7"
UPSAMPLING_RUN = "vae_upsample"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
  workspace: str
  celeba_dir: str | None
  num_images: int
  epochs: int
  batch_size: int
  image_size: int
  seed: int
  # Also train the VAE with upsampling layers instead of Conv2DTranspose (the study's hint on
  # crossing-line artefacts; claim 12 of the report).
  upsampling_variant: bool = False
  # Prepared shards to train on instead of preparing them (tools.study shares one data dir
  # between its seeds), and more flags for every trainer (the study's early stopping).
  data_dir: str | None = None
  train_flags: tuple = ()
  # Samples judged per generation setting.
  metric_images: int = GENERATION_METRIC_IMAGES


@dataclasses.dataclass(frozen=True)
class Step:
  name: str
  what: str          # one line for the report
  tool: str          # module under tools/
  args: tuple        # flags, as the user would type them
  outputs: tuple     # paths that exist once the step is complete
  # The tool's flag for replacing earlier outputs, passed only when a step must redo work whose
  # outputs exist (its command or an upstream step changed); None: the tool replaces them itself.
  overwrite_flag: str | None = None
  # Whether the step's outputs are complete, when the outputs' existence does not tell
  # (a training run stopped by a time budget resumes); None: they exist.
  complete: object = None
  # A function giving flags passed to the tool when it starts but not part of the step's
  # identity (the time budget left); None: no such flags.
  volatile: object = None

  def command(self, python="python", overwrite=False):
    extra = [self.overwrite_flag] if overwrite and self.overwrite_flag else []
    return [python, "-m", f"tools.{self.tool}", *self.args, *extra]


@dataclasses.dataclass
class StepResult:
  step: Step
  status: str        # "ran" or "reused"
  seconds: float     # for a reused step: what it took when it ran


def paths(s):
  """The demo's folders: source, data, runs, eval."""
  ws = s.workspace
  return {
      "source": s.celeba_dir or os.path.join(ws, "celeba_synthetic"),
      "data": s.data_dir or os.path.join(ws, "data"),
      "runs": os.path.join(ws, "runs"),
      "eval": os.path.join(ws, "eval"),
  }


def _z_points(paths, kind):
  return os.path.join(paths["eval"], kind, "z_train.npy")


def build_steps(s):
  """The chain of the demo, in order; later steps read what earlier ones wrote."""
  p = paths(s)
  steps = [] if s.data_dir else data_steps(s, p)
  steps += model_steps(s, p)
  if s.upsampling_variant:
    steps += _upsampling_steps(s, p)
  return steps + [reconstruction_step(s)]


def reconstruction_step(s):
  """The three models' reconstructions of the test split, compared."""
  p = paths(s)
  out = os.path.join(p["eval"], "reconstruction")
  runs = ",".join(os.path.join(p["runs"], kind) for kind, _, _ in MODELS)
  return Step(
      "compare_reconstructions", "AE, VAE and AE z1600 reconstructions of the test split: "
      "PSNR, SSIM, loss, face rate",
      "compare_reconstructions",
      (f"--model_dirs={runs}", f"--data_dir={p['data']}", f"--output_dir={out}",
       "--sharpen=1,6", f"--seed={s.seed}"),
      (os.path.join(out, "reconstruction.json"),))


def data_steps(s, p):
  """Synthetic faces (without --celeba_dir), prepare_data and verify_data."""
  steps = []
  if s.celeba_dir is None:
    steps.append(Step(
        "synthetic_faces", f"generated {s.num_images} synthetic 178x218 faces in CelebA's layout",
        "make_synthetic_faces",
        (f"--output_dir={p['source']}", f"--num_images={s.num_images}", f"--seed={s.seed}"),
        (os.path.join(p["source"], "list_attr_celeba.txt"),), "--overwrite"))
  prepare_args = [f"--source_dir={p['source']}", f"--output_dir={p['data']}",
                  f"--image_size={s.image_size}"]
  if s.celeba_dir is not None and s.num_images:
    prepare_args.append(f"--max_images={s.num_images}")
  steps.append(Step(
      "prepare_data", "cropped (0,40,178,218), resized (LANCZOS) and wrote sharded TFRecords",
      "prepare_data", tuple(prepare_args), (os.path.join(p["data"], "manifest.json"),),
      "--overwrite"))
  steps.append(Step("verify_data", "read back every record and checked it against the manifest",
                    "verify_data", (f"--data_dir={p['data']}", "--noprogress"), ()))
  return steps


def training_step(name, what, trainer, args, run, s):
  """A trainer's step on run dir `run`, with the settings' extra training flags."""
  return Step(name, what, trainer, (*args, *s.train_flags), _trained_files(run), "--overwrite")


def model_steps(s, p):
  """Training of the three models, then encoding, latent analysis and generation of two."""
  steps = []
  for kind, preset, trainer in MODELS:
    run = os.path.join(p["runs"], kind)
    steps.append(training_step(
        f"train_{kind}", f"trained the {kind.upper()} ({preset} preset) for {s.epochs} epochs, "
        "streaming uint8 batches from the shards", trainer,
        (f"--data_dir={p['data']}", f"--model_dir={run}", f"--preset={preset}",
         f"--epochs={s.epochs}", f"--batch_size={s.batch_size}", f"--seed={s.seed}"), run, s))
  for kind in ANALYZED:
    run, z_points = os.path.join(p["runs"], kind), _z_points(p, kind)
    args = [f"--model_dir={run}", f"--data_dir={p['data']}", "--split=train",
            f"--output={z_points}"]
    if kind == "vae":
      args.append("--with_log_var")
    steps.append(Step(f"encode_{kind}", f"encoded the training split with the {kind.upper()}'s "
                      "encoder into z-points", "encode", tuple(args), (z_points,)))
    out = os.path.join(p["eval"], kind, "latents")
    steps.append(Step(
        f"analyze_latents_{kind}", "component statistics, exact correlations over all "
        "vectors, geometry against random vectors, plots", "analyze_latents",
        (f"--z_points={z_points}", f"--output_dir={out}", f"--seed={s.seed}"),
        (os.path.join(out, "latent_report.json"),)))
    out = os.path.join(p["eval"], kind, "generation")
    steps.append(Step(
        f"generate_{kind}", "faces from every sampler (normal, uniform r sweep, fitted Gaussian, "
        "GMM, interpolation, attribute vector), sharpened at the study's factors, judged by "
        "the face detector", "generate",
        (f"--model_dir={run}", f"--output_dir={out}", f"--z_points={z_points}",
         f"--data_dir={p['data']}", f"--seed={s.seed}", f"--sharpen={STUDY_SHARPEN}",
         # Fewer points per setting than the tool's 500 keep the demo's two generation runs to
         # about a minute each on a 2-core CPU; the grids look the same.
         f"--num_metric_images={s.metric_images}"),
        (os.path.join(out, "generation.json"),)))
  return steps


def _upsampling_steps(s, p):
  """The VAE again with UpSampling2D + Conv2D in its decoder, and its N(0, I) samples."""
  run = os.path.join(p["runs"], UPSAMPLING_RUN)
  out = os.path.join(p["eval"], UPSAMPLING_RUN, "generation")
  return [
      training_step(f"train_{UPSAMPLING_RUN}", f"trained the VAE with upsampling layers instead "
                    f"of Conv2DTranspose (vae_fact5, --upsampling upsample) for {s.epochs} "
                    "epochs", "train_vae",
                    (f"--data_dir={p['data']}", f"--model_dir={run}", "--preset=vae_fact5",
                     "--upsampling=upsample", f"--epochs={s.epochs}",
                     f"--batch_size={s.batch_size}", f"--seed={s.seed}"), run, s),
      Step(f"generate_{UPSAMPLING_RUN}", "N(0, I) samples of the upsampling VAE, for the "
           "checkerboard measure", "generate",
           (f"--model_dir={run}", f"--output_dir={out}", "--samplers=normal", "--sharpen=1",
            f"--seed={s.seed}", f"--num_metric_images={s.metric_images}"),
           (os.path.join(out, "generation.json"),)),
  ]


def _marker_path(workspace, step):
  return os.path.join(workspace, _MARKERS, f"{step.name}.json")


def _completed_seconds(workspace, step):
  """Seconds the step took when it last ran, if it is complete; else None.

  Complete = its outputs exist and its marker records this step's command.
  """
  if not step.outputs or not all(os.path.exists(path) for path in step.outputs):
    return None
  if step.complete is not None and not step.complete():
    return None
  try:
    with open(_marker_path(workspace, step), encoding="utf-8") as f:
      marker = json.load(f)
    return float(marker["seconds"]) if marker["command"] == step.command() else None
  except (OSError, ValueError, KeyError, TypeError):
    return None


# What every process that imports TensorFlow prints before TensorFlow applies
# TF_CPP_MIN_LOG_LEVEL (absl's notice, oneDNN's INFO line): cosmetic, so not echoed.
_ABSL_NOTICE = (b"WARNING: All log messages before absl::InitializeLog() is called are written "
                b"to STDERR")
_ONEDNN_LINE = re.compile(
    rb"I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\..*")


def _is_startup_line(line):
  return line == _ABSL_NOTICE or _ONEDNN_LINE.fullmatch(line) is not None


def _may_become_startup_line(start):
  return _ABSL_NOTICE.startswith(start) or re.fullmatch(rb"I\d{0,4}( [^\r\n]*)?", start)


class _StartupLineFilter:
  """Passes a byte stream through as it comes, less TensorFlow's start-up lines."""

  def __init__(self):
    self._held = b""  # The start of a line that may be a start-up line.
    self._at_line_start = True

  def feed(self, chunk):
    """Returns what of `chunk` (and what was held back) to show now."""
    shown = []
    for piece in (self._held + chunk).splitlines(keepends=True):
      line_start, self._at_line_start = self._at_line_start, piece.endswith((b"\n", b"\r"))
      if not line_start:
        shown.append(piece)
      elif self._at_line_start:
        if not _is_startup_line(piece.rstrip(b"\r\n")):
          shown.append(piece)
      elif _may_become_startup_line(piece):
        self._held = piece
        self._at_line_start = True
        return b"".join(shown)
      else:
        shown.append(piece)
    self._held = b""
    return b"".join(shown)

  def close(self):
    """What is still held back (the stream ended inside a line)."""
    held, self._held = self._held, b""
    return held


def _run_logged(command, log_path):
  """Runs `command`, echoing its output live, less TensorFlow's start-up lines (the log keeps
  them), and keeping a copy in `log_path`."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  echo = _StartupLineFilter()
  with open(log_path, "wb") as log, subprocess.Popen(
      command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as process:
    for chunk in iter(lambda: process.stdout.read1(4096), b""):
      log.write(chunk)
      os.write(1, echo.feed(chunk))
    os.write(1, echo.close())
    return process.wait()


def select_steps(settings, stop_after=None):
  """The chain, or its prefix up to and including the step named `stop_after`."""
  steps = build_steps(settings)
  names = [step.name for step in steps]
  if stop_after is None:
    return steps
  if stop_after not in names:
    raise ValueError(f"unknown step {stop_after!r}; the steps are {', '.join(names)}")
  return steps[:names.index(stop_after) + 1]


def run_all(settings, python, force=False, stop_after=None):
  """Runs every incomplete step of the demo's chain; returns their results (run_steps)."""
  return run_steps(select_steps(settings, stop_after), settings.workspace, python, force)


def run_steps(steps, workspace, python, force=False, tool="demo"):
  """Runs every incomplete step of `steps`; returns their results. Raises SystemExit on a
  failed step. Markers go to WORKSPACE/.demo/, logs to WORKSPACE/logs/.

  Once a step with outputs runs, every later step runs too (its inputs changed), passing its
  overwrite flag where the tool would otherwise refuse to replace what an older chain wrote.
  """
  results, upstream_ran = [], False
  for index, step in enumerate(steps, 1):
    header = f"[{index}/{len(steps)}] {step.name}"
    earlier = None if force or upstream_ran else _completed_seconds(workspace, step)
    if earlier is not None:
      print(f"{header}: complete, reused", flush=True)
      results.append(StepResult(step, "reused", earlier))
      continue
    overwrite = any(os.path.exists(path) for path in step.outputs)
    print(f"{header}: {shlex.join(step.command(overwrite=overwrite))}", flush=True)
    log_path = os.path.join(workspace, "logs", f"{step.name}.log")
    start = time.perf_counter()
    extra = step.volatile() if step.volatile else ()
    code = _run_logged([*step.command(python, overwrite), *extra], log_path)
    seconds = time.perf_counter() - start
    if code != 0:
      raise SystemExit(f"{tool}: error: step {step.name} failed (exit {code}) after "
                       f"{seconds:.0f} s; its output is in {log_path}; fix the cause and rerun "
                       "the same command to continue from this step")
    marker = _marker_path(workspace, step)
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w", encoding="utf-8") as f:
      json.dump({"command": step.command(), "seconds": seconds}, f)
    results.append(StepResult(step, "ran", seconds))
    upstream_ran = upstream_ran or bool(step.outputs)
  return results


def write_report(settings, results):
  return demo_report.write(settings.workspace, results, paths(settings))
