"""Face figures by the independent judge in generation.json and reconstruction.json.

The models here are crafted functions: a "decoder" that maps each z to one of the synthetic
96x96 cartoon faces (the judge finds faces in about 0.75 of them) and one that returns uniform
noise (none). Face figures that do not tell the two apart fail these tests.
"""

import json

import numpy as np
import pytest

from evaluation import face_judge
from evaluation import generation
from evaluation import reconstruction
from evaluation.errors import EvaluationError
from tests.toolrun import run_main

DIM = 4


@pytest.fixture(scope="module")
def faces(prepared_data_dir_96):
  """The 52 synthetic training faces, uint8 [52, 96, 96, 3]."""
  from data_pipeline import make_dataset  # pylint: disable=g-import-not-at-top  (loads TF)
  batches = make_dataset(prepared_data_dir_96, "train", 64, shuffle=False).as_numpy_iterator()
  return np.concatenate([np.asarray(b) for b in batches])


@pytest.fixture(scope="module")
def judge():
  return face_judge.shared()


def _face_decoder(faces):
  """z -> a stored face, chosen by z[0] (the same z gives the same face)."""
  def decode(z):
    index = (np.abs(np.asarray(z)[:, 0]) * 1e4).astype(np.int64) % len(faces)
    return faces[index].astype(np.float32) / 255.0
  return decode


def _noise_decoder(z):
  seed = int(np.abs(np.asarray(z)[:, 0]).sum() * 1e4)
  return np.random.default_rng(seed).random((len(z), 96, 96, 3), dtype=np.float32)


def _unused_encoder(images):
  raise AssertionError("no real z-points: the Frechet distance must not encode anything")


def _options(**kwargs):
  return generation.Options(samplers=("normal", "uniform"), num_images=2, num_metric_images=24,
                            r_limits=(0.5, 2.0), sharpen=(0.0, 1.0, 7.0), batch_size=12,
                            **kwargs)


def _report(result):
  grids = {group.name: f"{group.name}.png" for group in result.groups}
  return generation.assemble(result.groups, result.records, grids, result.notes, model={},
                             inputs_info={}, flags={}, seed=0, provenance={},
                             reference_info=result.reference, face_judge=result.face_judge,
                             sharpening=result.sharpening)


def test_generated_faces_score_high_and_noise_near_zero(faces, judge):
  real = generation.Inputs(test_images=faces[:24])
  made = generation.generate(_options(), _face_decoder(faces), _unused_encoder, DIM, real,
                             judge=judge)
  report = _report(made)
  faces_table = report["faces"]
  assert set(faces_table) == {"real", "blur_1", "blur_2", "blur_4", "mean_face",
                              "mean_face_noise", "noise", "normal", "uniform"}
  assert set(faces_table["uniform"]) == {"0.5", "2"}
  real, noise = faces_table["real"], faces_table["noise"]
  assert real["num_images"] == 12 and real["face_rate"] >= 0.5 and noise["face_rate"] == 0.0
  normal = faces_table["normal"]
  assert normal["face_score"]["mean"] > noise["face_score"]["mean"] + 0.3, faces_table
  assert normal["fd_face"]["value"] < noise["fd_face"]["value"], faces_table
  setting = report["samplers"]["normal"]["settings"]["N(0,I)"]
  assert setting["face"] == normal and setting["face_rate"] == normal["face_rate"]
  block = report["face_judge"]
  assert block["calibration"]["reference_images"] == 12 and block["max_images_per_setting"] == 500
  assert block["detector"].startswith("MTCNN")
  json.dumps(report, allow_nan=False)

  noise = generation.generate(_options(face_judge_images=10), _noise_decoder, _unused_encoder,
                              DIM, generation.Inputs(), judge=judge)
  faces_table = _report(noise)["faces"]
  assert faces_table["normal"]["face_rate"] <= 0.1, faces_table
  assert max(f["face_rate"] for f in faces_table["uniform"].values()) <= 0.1, faces_table
  # Without test images: noise only, as many images as judged, and no reference figures.
  calibration = noise.face_judge["calibration"]
  assert set(calibration["sets"]) == {"noise"} and "only noise" in calibration["note"]
  assert calibration["sets"]["noise"]["num_images"] == 10
  assert faces_table["normal"]["face_score"] is None


def test_sharpening_block_rises_with_the_factor(faces, judge):
  made = generation.generate(_options(), _face_decoder(faces), _unused_encoder, DIM,
                             generation.Inputs(), judge=judge)
  table = made.sharpening
  assert list(table) == ["0", "1", "7"]
  sharpness = [table[f]["laplacian_variance"] for f in ("0", "1", "7")]
  assert sharpness[0] < sharpness[1] < sharpness[2], table
  assert all(0.0 <= table[f]["checkerboard_energy"] <= 1.0 for f in table)
  only_uniform = generation.generate(
      generation.Options(samplers=("uniform",), num_images=2, num_metric_images=4,
                         r_limits=(1.0,), batch_size=4),
      _face_decoder(faces), _unused_encoder, DIM, generation.Inputs(), judge=judge)
  assert only_uniform.sharpening is None
  assert any("sharpening is null" in note for note in only_uniform.notes)


def test_judge_off_gives_null_face_fields_with_a_note(faces):
  made = generation.generate(_options(face_judge=False), _face_decoder(faces), _unused_encoder,
                             DIM, generation.Inputs(test_images=faces[:4]))
  report = _report(made)
  assert report["face_judge"] is None and report["faces"] is None
  setting = report["samplers"]["normal"]["settings"]["N(0,I)"]
  assert setting["face_rate"] is None and setting["face"] is None
  assert any("--noface_judge" in note for note in report["notes"])
  assert set(report["sharpening"]) == {"0", "1", "7"}  # Not the judge's: still measured.


def test_missing_mtcnn_names_the_flag_that_turns_the_judge_off(monkeypatch):
  def no_mtcnn():
    raise EvaluationError("the face judge needs MTCNN")
  monkeypatch.setattr(face_judge, "shared", no_mtcnn)
  with pytest.raises(EvaluationError, match="--noface_judge"):
    generation.make_judge(True)
  assert generation.make_judge(False) is None


def test_reconstructions_kept_for_the_judge_on_a_seeded_subset(faces):
  rows, chosen = reconstruction.judged_rows(24, 10, seed=3)
  assert len(rows) == 10 and np.all(np.diff(rows) > 0) and rows.max() < 24
  np.testing.assert_array_equal(rows, reconstruction.judged_rows(24, 10, seed=3)[0])
  assert "subset of 10 of the 24" in chosen
  assert reconstruction.judged_rows(24, 24, seed=3)[0] is None
  identity = reconstruction.Subject("identity", "ae", "mse", lambda x: x,
                                    lambda x: np.asarray(x, np.float32) / 255.0)
  noise = reconstruction.Subject("noise", "ae", "mse", lambda x: x, _noise_decoder)
  split = faces[:24]
  batches = [split[start:start + 7] for start in range(0, 24, 7)]  # Subset spans batches.
  result = reconstruction.split_statistics([identity, noise], batches, judge_rows=rows)
  np.testing.assert_array_equal(result.judged, split[rows])
  np.testing.assert_array_equal(result.reconstructions["identity"], split[rows])
  assert result.reconstructions["noise"].shape == (10, 96, 96, 3)
  assert result.stats["identity"]["psnr"]["num_infinite"] == 24  # Every image is measured.
  every = reconstruction.split_statistics([identity], batches, judge_rows=None)
  assert len(every.judged) == 24
  assert reconstruction.split_statistics([identity], batches).judged is None


def test_compare_gives_face_figures_against_the_originals(tiny_runs, prepared_data_dir):
  options = reconstruction.Options(model_dirs=(tiny_runs["ae"],), data_dir=prepared_data_dir,
                                   split="train", num_images=2, face_judge_images=12)
  report, _ = reconstruction.compare(options)
  face = report["models"]["tiny_ae"]["face"]
  assert face["num_images"] == 6 and report["models"]["tiny_ae"]["face_rate"] == face["face_rate"]
  calibration = report["face_judge"]["calibration"]
  assert calibration["reference_images"] == 6 and calibration["sets"]["real"]["num_images"] == 6
  assert "subset of 12" in report["face_judge"]["images_judged"]


def test_compare_without_the_judge(tiny_runs, prepared_data_dir):
  options = reconstruction.Options(model_dirs=(tiny_runs["ae"],), data_dir=prepared_data_dir,
                                   num_images=2, face_judge=False)
  report, _ = reconstruction.compare(options)
  assert report["face_judge"] is None and report["models"]["tiny_ae"]["face_rate"] is None
  assert any("--noface_judge" in note for note in report["notes"])


def test_generate_tool_noface_judge(tiny_runs, tmp_path):
  result = run_main("generate", "--model_dir", tiny_runs["ae"], "--output_dir", tmp_path / "g",
                    "--samplers", "normal", "--num_images", "2", "--num_metric_images", "4",
                    "--sharpen", "1,7", "--noface_judge")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "g" / "generation.json").read_text())
  assert report["face_judge"] is None and report["faces"] is None
  assert report["samplers"]["normal"]["settings"]["N(0,I)"]["face"] is None
  assert report["flags"]["face_judge"] is False
  assert set(report["sharpening"]) == {"1", "7"}
