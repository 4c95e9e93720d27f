"""Tiny untrained AE/VAE run dirs (config.json + model.keras), all that load_run needs.

Training would add time and prove nothing about shapes, determinism and bookkeeping; tests that
need a trained model train one themselves.
"""

import os

import numpy as np

Z_DIM = 8
SIZE = 32


def save_run(path, kind, image_size=SIZE, z_dim=Z_DIM):
  """Builds an untrained tiny model of `kind` ("ae"/"vae") and saves it as a run dir at path."""
  # pylint: disable=g-import-not-at-top
  from modeling import config as config_lib
  from modeling import training
  from modeling.config import ModelConfig
  # pylint: enable=g-import-not-at-top
  config = ModelConfig(kind=kind, image_size=image_size, z_dim=z_dim, encoder_filters=(8, 16),
                       encoder_kernels=(3, 3), strides=(2, 2), decoder_filters=(16, 8),
                       kl_factor=1.0 if kind == "vae" else 0.0)
  model = training.build_model(config, sampling_seed=0)
  model(np.zeros((1, image_size, image_size, 3), np.uint8))  # Builds the weights before saving.
  os.makedirs(path)
  config_lib.save_config(os.path.join(path, "config.json"),
                         training.make_run_config(config, training.TrainConfig()))
  model.save(os.path.join(path, "model.keras"))
  return str(path)
