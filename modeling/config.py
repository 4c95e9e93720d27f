"""The model configuration: one dataclass, the study's presets, and their validation.

Pure Python on purpose (no TensorFlow import), so that the trainers' flag validators can
resolve and check a configuration before TensorFlow is loaded.

The decoder mirrors the encoder: its kernels and strides are the encoder's in reverse order,
and its first Dense layer maps z to the encoder's innermost feature map
(image_size / prod(strides) squared, encoder_filters[-1] channels).
"""

import dataclasses
import json
import math
import os

from modeling.errors import ModelError

KINDS = ("ae", "vae")
ACTIVATIONS = ("leaky_relu", "relu", "elu", "gelu", "silu")
UPSAMPLING_MODES = ("transpose", "upsample")
LOSSES = ("bce", "mse")


def _field(default, flag_help, **flag):
  """A ModelConfig field whose metadata describes its trainer flag.

  `flag` may hold lower_bound (absl's), choices (an enum flag), rule ((predicate, "in [a, b)"),
  checked by a validator) and kinds (the trainers that have the flag; default: both).
  """
  return dataclasses.field(default=default, metadata={"help": flag_help, **flag})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and loss of an Autoencoder (kind "ae") or a VAE (kind "vae").

  Every field but `kind` is also a flag of the trainers (tools.flags_train defines one per
  field, default: the preset's value); the field's metadata["help"] says what it means.
  """

  kind: str  # "ae" (deterministic z) or "vae" (z_mean, z_log_var and a sampling layer).
  image_size: int = _field(96, "Input side length; must equal the data dir's image_size "
                           "(default: taken from the data dir).", lower_bound=1)
  z_dim: int = _field(256, "Latent dimension.", lower_bound=1)
  encoder_filters: tuple = _field((64, 64, 128, 128), "Conv2D filters per encoder layer, e.g. "
                                  "32,64,128,256. Without --decoder_filters the decoder gets "
                                  "them reversed.")
  encoder_kernels: tuple = _field((5, 5, 3, 3), "Kernel size per encoder layer (one value: all "
                                  "layers). The decoder uses them reversed.")
  strides: tuple = _field((2, 2, 2, 2), "Stride per encoder layer (one value: all layers); the "
                          "image size must be divisible by their product.")
  decoder_filters: tuple = _field((128, 128, 64, 64), "Filters per decoder layer, innermost "
                                  "first.")
  activation: str = _field("leaky_relu", "Activation after each convolution (preset: "
                           "leaky_relu).", choices=ACTIVATIONS)
  batch_norm: bool = _field(False, "BatchNormalization after each convolution.")
  dropout: float = _field(0.0, "Dropout rate after each convolution block, in [0, 1).",
                          rule=(lambda rate: 0.0 <= rate < 1.0, "in [0, 1)"))
  upsampling: str = _field("transpose", "Decoder upsampling: transpose (Conv2DTranspose) or "
                           "upsample (UpSampling2D + Conv2D, fewer checkerboard artefacts).",
                           choices=UPSAMPLING_MODES)
  dense_units: int = _field(0, "Extra Dense layer of this size before the latent layer (0: "
                            "none); saves VRAM with large feature maps.", lower_bound=0)
  loss: str = _field("bce", "Reconstruction loss, in the study's units (the mean over the 3 "
                     "channels, summed over the pixels): bce (binary cross-entropy, the "
                     "study's; floor ~4,440 per image on real CelebA) or mse.", choices=LOSSES)
  kl_factor: float = _field(0.0, "Weight of the KL term: total = reconstruction + kl_factor * "
                            "KL (preset vae_fact5: 5.0).", lower_bound=0.0, kinds=("vae",))

  def __post_init__(self):
    # JSON gives lists; keep tuples so that configs compare and hash by value.
    for name in LIST_FIELDS:
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

  @property
  def num_layers(self):
    return len(self.encoder_filters)

  @property
  def inner_size(self):
    """Side length of the innermost feature map."""
    return self.image_size // math.prod(self.strides)

  @property
  def decoder_kernels(self):
    return tuple(reversed(self.encoder_kernels))

  @property
  def decoder_strides(self):
    return tuple(reversed(self.strides))

  def validate(self):
    """Raises ModelError with a one-line message naming the field when this is impossible."""
    _check(self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}")
    _check(self.image_size >= 1, f"image_size must be >= 1, got {self.image_size}")
    _check(self.z_dim >= 1, f"z_dim must be >= 1, got {self.z_dim}")
    _check(self.num_layers >= 1, "encoder_filters needs at least one layer")
    for name in LIST_FIELDS:
      values = getattr(self, name)
      _check(len(values) == self.num_layers,
             f"{name} has {len(values)} values but encoder_filters has {self.num_layers}; "
             "give one value per layer")
      _check(all(v >= 1 for v in values), f"{name} values must be >= 1, got {list(values)}")
    stride_product = math.prod(self.strides)
    _check(self.image_size % stride_product == 0,
           f"image_size {self.image_size} is not divisible by the product of strides "
           f"{list(self.strides)} = {stride_product}; change strides or image_size")
    _check(self.activation in ACTIVATIONS,
           f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
    _check(self.upsampling in UPSAMPLING_MODES,
           f"upsampling must be one of {UPSAMPLING_MODES}, got {self.upsampling!r}")
    _check(self.dense_units >= 0, f"dense_units must be >= 0, got {self.dense_units}")
    _check(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
    _check(math.isfinite(self.kl_factor) and self.kl_factor >= 0,
           f"kl_factor must be a finite number >= 0, got {self.kl_factor}")
    _check(self.kind == "vae" or self.kl_factor == 0,
           f"kl_factor applies to the VAE only; an AE needs 0, got {self.kl_factor}")
    return self

  def to_dict(self):
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, values):
    """Builds a config from to_dict()'s output; unknown keys raise ModelError."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    _check(not unknown, f"unknown model config keys {unknown}")
    try:
      return cls(**values)
    except (TypeError, ValueError) as error:
      raise ModelError(f"malformed model config: {error}") from None


# The per-layer fields (tuples of ints; a flag's comma list).
LIST_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.type is tuple)

def _check(condition, message):
  if not condition:
    raise ModelError(message)


PRESETS = {
    # The study's AE (z_dim 256): its total BCE loss reached about 4850 per image after 24
    # epochs (modeling.losses' units; the floor on real CelebA is ~4,450), which is why "bce"
    # is the AE's default loss too.
    "ae_z256": ModelConfig(kind="ae", z_dim=256, encoder_filters=(64, 64, 128, 128),
                           encoder_kernels=(5, 5, 3, 3), strides=(2, 2, 2, 2),
                           decoder_filters=(128, 128, 64, 64)),
    # The study's sharp-reconstruction AE: the same network with z_dim 1600.
    "ae_z1600": ModelConfig(kind="ae", z_dim=1600, encoder_filters=(64, 64, 128, 128),
                            encoder_kernels=(5, 5, 3, 3), strides=(2, 2, 2, 2),
                            decoder_filters=(128, 128, 64, 64)),
    # The study's VAE: KL weighted by 5, which gave a KL share of about 3% of the total loss
    # (reconstruction as a channel mean summed over pixels: modeling.losses).
    "vae_fact5": ModelConfig(kind="vae", z_dim=256, encoder_filters=(32, 64, 128, 256),
                             encoder_kernels=(3, 3, 3, 3), strides=(2, 2, 2, 2),
                             decoder_filters=(256, 128, 64, 32), loss="bce", kl_factor=5.0),
}


def preset_kind(name):
  """"ae" or "vae" for a preset name; ModelError for an unknown one."""
  _check(name in PRESETS, f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
  return PRESETS[name].kind


def resolve_config(preset, overrides=None, *, defer_image_size=False):
  """The preset with `overrides` (field -> value, None = keep) applied, validated.

  Rules that make short overrides work: a one-element `encoder_kernels` or `strides` applies
  to every layer; when `encoder_filters` is overridden without `decoder_filters`, the decoder
  gets the encoder's filters in reverse order (as in every preset); when the number of layers
  changes, kernels and strides not given are broadcast from the preset if the preset used one
  value for all layers.

  With `defer_image_size` and no image_size override (the data's size is not known yet), the
  result gets image_size = prod(strides), which every check accepts; resolve again with the
  real size before building a model.

  Raises:
    ModelError: unknown preset or an impossible combination (one line, naming the field).
  """
  preset_kind(preset)
  base = PRESETS[preset]
  given = {k: v for k, v in (overrides or {}).items() if v is not None}
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  _check(set(given) <= known, f"unknown model config fields {sorted(set(given) - known)}")
  _check("kind" not in given or given["kind"] == base.kind,
         f"preset {preset} is a {base.kind.upper()} preset")
  values = dataclasses.asdict(base)
  values.update({k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
  num_layers = len(values["encoder_filters"])
  for name in ("encoder_kernels", "strides"):
    seq = tuple(values[name])
    if len(seq) != num_layers and len(set(seq)) == 1 and (name not in given or len(seq) == 1):
      values[name] = seq[:1] * num_layers
  if "encoder_filters" in given and "decoder_filters" not in given:
    values["decoder_filters"] = tuple(reversed(values["encoder_filters"]))
  if defer_image_size and "image_size" not in given:
    values["image_size"] = math.prod(max(int(s), 1) for s in values["strides"])
  return ModelConfig(**values).validate()


def save_config(path, run_config):
  """Writes a run config dict ({"model": ..., "train": ..., ...}) as stable JSON, atomically."""
  text = json.dumps(run_config, indent=2, sort_keys=True, allow_nan=False) + "\n"
  directory = os.path.dirname(os.path.abspath(path))
  tmp_path = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
  try:
    with open(tmp_path, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)


def load_config(path):
  """Reads a run config dict; ModelError naming the file when it is missing or malformed."""
  try:
    with open(path, encoding="utf-8") as f:
      run_config = json.load(f)
  except FileNotFoundError:
    raise ModelError(f"{path} does not exist; is this a run dir written by a trainer?") from None
  except (OSError, ValueError) as error:
    raise ModelError(f"{path} is not readable JSON ({error}); the run dir is damaged") from None
  if not isinstance(run_config, dict) or not isinstance(run_config.get("model"), dict):
    raise ModelError(f"{path} has no 'model' section; the run dir is damaged")
  return run_config


def model_config_from_run(run_config, path="config.json"):
  """The ModelConfig of a run config dict, validated; ModelError naming `path` otherwise."""
  try:
    return ModelConfig.from_dict(run_config["model"]).validate()
  except ModelError as error:
    raise ModelError(f"{path}: {error}") from None
