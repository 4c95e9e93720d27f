"""The shared choice lists (modeling.choices) are the ones the libraries accept.

`data_pipeline` may not import modeling, so it keeps its own lists; the modeling and evaluation
libraries validate against names of their own too. Each check below feeds every shared name to
the library that must accept it, or compares the library's list where no call is cheap.
"""

import os

import pytest

from data_pipeline import manifest
from evaluation import generation
from modeling import choices
from modeling import run_dir
from modeling import training
from modeling.errors import ModelError


def test_data_lists_equal_the_data_pipelines_own():
  from data_pipeline import records  # pylint: disable=g-import-not-at-top  (loads TensorFlow)
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  assert manifest.SPLITS == choices.SPLITS
  assert records.ENCODINGS == choices.ENCODINGS
  assert (sources.CelebAFolderSource.kind, sources.TfdsSource.kind) == choices.SOURCES


def test_training_accepts_every_strategy_and_precision():
  for strategy in choices.STRATEGIES:
    training.TrainConfig(strategy=strategy).validate()
  for precision in choices.PRECISIONS:
    training.TrainConfig(mixed_precision=precision).validate()
  from modeling import devices  # pylint: disable=g-import-not-at-top  (loads TensorFlow)
  assert devices.STRATEGIES == choices.STRATEGIES
  # "auto" is no policy of its own: it resolves to one of the others, each with a name.
  assert devices.resolve_precision("auto")[0] in choices.PRECISION_POLICIES
  assert set(choices.PRECISION_NAMES) == set(choices.PRECISION_POLICIES)


def test_checkpoint_path_names_each_checkpoints_file(tmp_path):
  files = [run_dir.checkpoint_path(str(tmp_path), c) for c in choices.CHECKPOINTS]
  assert files == [os.path.join(tmp_path, "model.keras"), os.path.join(tmp_path, "best.keras")]
  with pytest.raises(ModelError, match="'final' or 'best'"):
    run_dir.checkpoint_path(str(tmp_path), "last")


def test_generation_runs_the_shared_samplers():
  assert generation.SAMPLERS is choices.SAMPLERS
  assert set(choices.FITTED_SAMPLERS) | set(choices.FACE_SAMPLERS) < set(choices.SAMPLERS)
