"""The closed choices of the flags (modeling.flag_choices) are the ones the libraries accept.

`data_pipeline` may not import modeling, so it keeps its own lists; the modeling and evaluation
libraries validate against names of their own too. Each check below feeds every shared name to
the library that must accept it, or compares the library's list where no call is cheap.
"""

import os

import pytest

from data_pipeline import manifest
from evaluation import generation
from modeling import flag_choices
from modeling import run_dir
from modeling import training
from modeling.errors import ModelError


def test_data_lists_equal_the_data_pipelines_own():
  from data_pipeline import records  # pylint: disable=g-import-not-at-top  (loads TensorFlow)
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  assert manifest.SPLITS == flag_choices.SPLITS
  assert records.ENCODINGS == flag_choices.ENCODINGS
  assert (sources.CelebAFolderSource.kind, sources.TfdsSource.kind) == flag_choices.SOURCES


def test_training_accepts_every_strategy_and_precision():
  for strategy in flag_choices.STRATEGIES:
    training.TrainConfig(strategy=strategy).validate()
  for precision in flag_choices.PRECISIONS:
    training.TrainConfig(mixed_precision=precision).validate()
  from modeling import devices  # pylint: disable=g-import-not-at-top  (loads TensorFlow)
  assert devices.STRATEGIES == flag_choices.STRATEGIES
  # "auto" is no policy of its own: it resolves to one of the others, each with a name.
  assert devices.resolve_precision("auto")[0] in flag_choices.PRECISION_POLICIES
  assert set(flag_choices.PRECISION_NAMES) == set(flag_choices.PRECISION_POLICIES)


def test_checkpoint_path_names_each_checkpoints_file(tmp_path):
  files = [run_dir.checkpoint_path(str(tmp_path), c) for c in flag_choices.CHECKPOINTS]
  assert files == [os.path.join(tmp_path, "model.keras"), os.path.join(tmp_path, "best.keras")]
  with pytest.raises(ModelError, match="'final' or 'best'"):
    run_dir.checkpoint_path(str(tmp_path), "last")


def test_generation_runs_the_shared_samplers():
  assert generation.SAMPLERS is flag_choices.SAMPLERS
  assert (set(flag_choices.FITTED_SAMPLERS) | set(flag_choices.FACE_SAMPLERS)
          < set(flag_choices.SAMPLERS))
