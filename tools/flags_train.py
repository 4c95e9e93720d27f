"""The flags of both trainers (tools.train_ae, tools.train_vae), defined once.

`define_train_flags(kind)` defines them with the trainer's default preset; --kl_factor exists
for the VAE only. Validators reject impossible values and architecture combinations before
TensorFlow loads: this module imports only absl, modeling.config, data_pipeline.service's
address check and the shared definers of tools.flags_data / flags_eval (pure Python).
"""

import dataclasses

from absl import flags

from data_pipeline import service
from data_pipeline.errors import DataError
from modeling import config as config_lib
from modeling import flag_choices
from modeling.errors import ModelError
from tools import flags_data
from tools import flags_eval

FLAGS = flags.FLAGS

DEFAULT_PRESET = {"ae": "ae_z256", "vae": "vae_fact5"}
TRAINER = {"ae": "tools.train_ae", "vae": "tools.train_vae"}
# The flag definer per ModelConfig field type (a str field is an enum of its choices).
_DEFINERS = {tuple: flags.DEFINE_list, bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
             float: flags.DEFINE_float, str: flags.DEFINE_enum}


def model_fields(kind):
  """The ModelConfig fields that are flags of the `kind` trainer (the trainer is the kind)."""
  return [field for field in dataclasses.fields(config_lib.ModelConfig)
          if field.name != "kind" and kind in field.metadata.get("kinds", config_lib.KINDS)]


def model_flag_values(kind):
  """--preset and the model flags of the `kind` trainer as parsed (None: the preset's)."""
  return {name: FLAGS[name].value
          for name in ("preset", *(field.name for field in model_fields(kind)))}


def int_list(values):
  """A DEFINE_list value (strings) as ints; None stays None. ValueError for non-integers."""
  return None if values is None else [int(v) for v in values]


def architecture_overrides(values, kind):
  """ModelConfig overrides (field -> value or None) from a dict of flag values."""
  return {field.name: int_list(values[field.name]) if field.name in config_lib.LIST_FIELDS
          else values[field.name] for field in model_fields(kind)}


def resolve_model_config(values, kind, image_size=None):
  """The preset with the architecture flags applied; ModelError when impossible.

  Without `image_size` (main() knows it from the data dir, validators do not), the size
  check waits for main() unless --image_size was given.
  """
  overrides = architecture_overrides(values, kind)
  if image_size is not None:
    overrides["image_size"] = image_size
  return config_lib.resolve_config(values["preset"], overrides, defer_image_size=True)


def define_train_flags(kind):
  """Defines every trainer flag; `kind` is "ae" or "vae" (the trainer's model kind)."""
  _define_io_flags()
  _define_architecture_flags(kind)
  _define_training_flags()
  _define_device_flags()
  _register_validators(kind)


def _define_io_flags():
  """Inputs and outputs."""
  flags_data.define_data_dir("Prepared data dir (tools.prepare_data output); trains on its "
                             "train split and validates on its validation split each epoch.")
  flags_eval.define_model_dir("Run dir to write (config.json, flags.txt, manifest.json, "
                              "model/encoder/decoder/best .keras, history.csv, tensorboard/, "
                              "backup/). Rerunning the same command resumes it; a second "
                              "trainer on it is refused while one runs (RUN/.lock).")
  flags_data.define_overwrite("Replace a run with a different config in --model_dir (its run "
                              "files are deleted) instead of refusing.")


def _define_architecture_flags(kind):
  """Architecture: a preset, then overrides of its fields."""
  flags.DEFINE_enum("preset", DEFAULT_PRESET[kind], sorted(config_lib.PRESETS),
                    "The study's architectures: ae_z256 / ae_z1600 (AE), vae_fact5 (VAE). "
                    "The flags below override single fields.")
  for field in model_fields(kind):
    _define_model_flag(field)


def _define_training_flags():
  """How to train: data, epochs and early stopping, optimizer, seeds, backups, previews."""
  flags.DEFINE_boolean("skip_corrupt", False, "Train on the records that can be read when a "
                       "shard is damaged, missing or of another size than manifest.json says "
                       "(default: stop with an error naming the shard and record). Every epoch "
                       "logs how many records it lost; tools.verify_data names them.")
  flags.DEFINE_integer("epochs", 10, "Total epochs of the run (a resumed or extended run "
                       "trains the remaining ones); with --patience, the most epochs.",
                       lower_bound=1)
  flags.DEFINE_integer("patience", None, "Stop early once the validation loss has not improved "
                       "by --min_delta for this many epochs, keeping the best epoch "
                       "(default: train all --epochs).", lower_bound=1)
  flags.DEFINE_integer("min_epochs", 1, "With --patience: no early stop before this many "
                       "epochs.", lower_bound=1)
  flags.DEFINE_float("time_budget_minutes", None, "Start no epoch after this many minutes "
                     "(the run is saved as after its last epoch; the same command later trains "
                     "on).", lower_bound=0.0)
  flags.DEFINE_float("min_delta", 0.0, "With --patience: the relative improvement of the "
                     "validation loss that counts (0.001: 0.1 percent below the best so far).",
                     lower_bound=0.0, upper_bound=0.5)
  flags_data.define_batch_size(128, "Global batch size (split across replicas).")
  flags.DEFINE_float("learning_rate", 0.0005, "Adam learning rate (the study's 0.0005).")
  flags_data.define_max_images("Train on the first N training images only.")
  flags.DEFINE_integer("steps_per_epoch", None, "Batches per epoch (default: one pass over the "
                       "training images; with it the data repeats).", lower_bound=1)
  flags.DEFINE_integer("validation_steps", None, "Validation batches per epoch (default: the "
                       "whole validation split).", lower_bound=1)
  flags_data.define_seed("Seed of weights, data order and the VAE's sampling noise.")
  flags.DEFINE_boolean("deterministic", False, "Deterministic TF ops and data order "
                       "(bitwise-repeatable runs, somewhat slower).")
  flags_data.define_shuffle_buffer("Records in the shuffle buffer (RAM: about buffer x image "
                                   "bytes).")
  flags.DEFINE_integer("backup_every_steps", None, "Also back up the weights and optimizer "
                       "every N batches (default: at epoch ends only). A resume restarts the "
                       "interrupted epoch from its first batch, with those weights.",
                       lower_bound=1)
  flags.DEFINE_integer("preview_images", 8, "Test images whose reconstructions (and, for the "
                       "VAE, as many N(0,1) samples) go to TensorBoard each epoch; 0: none.",
                       lower_bound=0, upper_bound=64)


def _define_device_flags():
  """Devices and precision, and input from the tf.data service."""
  flags.DEFINE_enum("mixed_precision", "auto", flag_choices.PRECISIONS, "Mixed precision: auto "
                    "(bf16 where the hardware runs it natively: GPUs of compute capability "
                    ">= 8.0, CPUs with AVX512_BF16 or AMX; else float32), off (float32), bf16 "
                    "or fp16 (with dynamic loss scaling). config.json records the resolved "
                    "choice.")
  flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")
  flags.DEFINE_enum("strategy", "default", flag_choices.STRATEGIES,
                    "tf.distribute strategy; mirrored uses every GPU (or --cpu_replicas "
                    "logical CPUs).")
  flags.DEFINE_integer("cpu_replicas", 1, "Split the CPU into N logical devices (to try "
                       "--strategy=mirrored without GPUs).", lower_bound=1, upper_bound=64)
  flags.DEFINE_boolean("gpu_memory_growth", True, "Let TensorFlow grow its GPU memory instead "
                       "of taking it all at start.")
  # Input from the tf.data service (python -m tools.data_service; docs/DISTRIBUTED.md).
  flags.DEFINE_string("data_service", None, "Read the training and validation batches from "
                      "the tf.data service dispatcher at HOST:PORT instead of here: its workers "
                      "run the input pipeline and need --data_dir at the same path.")
  flags.DEFINE_enum("data_service_mode", "dynamic", list(service.MODES), "With --data_service: "
                    "dynamic (each image once per epoch across the workers) or off (every "
                    "worker runs the whole pipeline: each image once per worker per epoch).")
  flags.DEFINE_integer("gpu_memory_limit_mb", None, "Cap the GPU memory TensorFlow takes, in "
                       "MiB (e.g. 3500 on a 4 GB card shared with a desktop).", lower_bound=1)


def _define_model_flag(field):
  """The flag of a ModelConfig field, from its type and metadata (modeling/config.py)."""
  meta = field.metadata
  choices = [list(meta["choices"])] if "choices" in meta else []
  bounds = {"lower_bound": meta["lower_bound"]} if "lower_bound" in meta else {}
  _DEFINERS[field.type](field.name, None, *choices, meta["help"], **bounds)
  if field.type is tuple:
    flags.register_validator(
        field.name, lambda values: values is None or (
            bool(values) and all(v.strip().isdigit() and int(v) >= 1 for v in values)),
        message=f"--{field.name} must be a comma-separated list of positive integers")
  if "rule" in meta:
    check, allowed = meta["rule"]
    flags.register_validator(field.name, lambda v: v is None or check(v),
                             message=f"--{field.name} must be {allowed}")


def _register_validators(kind):
  """Range and cross-flag rules, checked by absl right after parsing (exit 2)."""
  flags.register_validator("learning_rate", lambda v: v is not None and 0.0 < v < float("inf"),
                           message="--learning_rate must be a positive number")

  def preset_matches(preset):
    if config_lib.PRESETS[preset].kind != kind:
      other = config_lib.PRESETS[preset].kind
      article = "an" if other == "ae" else "a"
      raise flags.ValidationError(f"--preset {preset} is {article} {other.upper()} preset; "
                                  f"train it with python -m {TRAINER[other]}")
    return True

  flags.register_validator("preset", preset_matches)

  def architecture_is_possible(values):
    if any(values.get(name) is not None and not all(v.strip().isdigit() for v in values[name])
           for name in config_lib.LIST_FIELDS):
      return True  # The list flags' own validators name the bad flag.
    full = {field.name: None for field in model_fields(kind)}
    full.update(values)
    try:
      resolve_model_config(full, kind)
    except ModelError as error:
      raise flags.ValidationError(f"{error} (preset {values['preset']} with these overrides)")
    return True

  # Only the flags that can clash (layer counts, strides vs size): absl prefixes the message
  # with these flags' values, which should stay short enough to read.
  flags.register_multi_flags_validator(["preset", "image_size", *config_lib.LIST_FIELDS],
                                       architecture_is_possible)

  def address_ok(value):
    if value is not None:
      try:
        service.parse_address(value)
      except DataError as error:
        raise flags.ValidationError(str(error)) from None
    return True

  flags.register_validator("data_service", address_ok)
  # Workers of a multi-worker run would each need their share of the service's batches in
  # lockstep (equal steps, or the collectives wait forever); that is not wired up yet.
  flags.register_multi_flags_validator(
      ["data_service", "strategy"],
      lambda f: not f["data_service"] or f["strategy"] != "multi_worker_mirrored",
      message="--data_service does not work with --strategy=multi_worker_mirrored yet; feed "
              "one trainer (--strategy=mirrored over its GPUs) from the service")
  # --skip_corrupt counts lost records in a tf.py_function: Python, which a service worker (a
  # process of its own) cannot run.
  flags.register_multi_flags_validator(
      ["data_service", "skip_corrupt"],
      lambda f: not (f["data_service"] and f["skip_corrupt"]),
      message="--skip_corrupt does not work with --data_service; check the data dir with "
              "tools.verify_data and rewrite what it names instead")
  flags.register_multi_flags_validator(
      ["cpu_replicas", "strategy"],
      lambda f: f["cpu_replicas"] == 1 or f["strategy"] == "mirrored",
      message="--cpu_replicas > 1 is only used by --strategy=mirrored")
