"""Generation and reconstruction on tiny untrained models: library in-process, tools end to end.

The models are built with modeling's builders and saved as a run dir (config.json +
model.keras), which is all that load_run needs; training them would add time and prove
nothing about shapes, determinism and bookkeeping.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from evaluation import generation
from evaluation import image_ops
from evaluation import image_quality
from evaluation import reconstruction
from evaluation.errors import EvaluationError
from tests.tiny_runs import SIZE
from tests.tiny_runs import Z_DIM
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main


@pytest.fixture(scope="module")
def runs(tiny_runs):
  """{"ae": run dir, "vae": run dir} of tiny untrained models (image_size 32, z_dim 8)."""
  return tiny_runs


@pytest.fixture(scope="module")
def ae(runs):
  from modeling import run_dir  # pylint: disable=g-import-not-at-top
  return run_dir.load_run(runs["ae"])


def _fns(loaded):
  return (lambda z: np.asarray(loaded.model.decode(z)),
          lambda x: np.asarray(loaded.model.encode(x)))


def _real_inputs(n_fit=120, n_test=12, seed=0):
  rng = np.random.default_rng(seed)
  fit_z = rng.normal(size=(n_fit, Z_DIM)) * np.linspace(0.1, 1.0, Z_DIM) + 0.3
  attributes = np.where(rng.random((n_fit, 40)) < 0.5, 1, -1).astype(np.int32)
  test_z = rng.normal(size=(n_test, Z_DIM)) * 0.5
  return generation.Inputs(fit_z=fit_z, attribute_z=fit_z, attribute_values=attributes,
                           test_z=test_z)


def test_interpolation_measures_about_num_metric_images_points():
  face_z = np.random.default_rng(0).standard_normal((100, Z_DIM))
  capped = generation.interpolate_group(face_z, 8, 4, num_metric=200)
  assert [len(rows) for rows in capped.settings.values()] == [200]  # 25 of the 50 pairs.
  assert capped.params["num_pairs"] == 25 and len(capped.grid_rows) == 4 * 8
  # Never fewer lines than the grid shows, never more than the faces give.
  assert generation.interpolate_group(face_z, 8, 4, num_metric=16).params["num_pairs"] == 4
  assert generation.interpolate_group(face_z, 8, 4, num_metric=10**6).params["num_pairs"] == 50
  assert generation.interpolate_group(face_z, 8, 4).params["num_pairs"] == 50


def test_every_sampler_gives_grids_and_records_deterministically(ae):
  decode, encode = _fns(ae)
  options = generation.Options(samplers=generation.SAMPLERS, num_images=5, num_metric_images=40,
                               r_limits=(0.5, 8.0), gmm_components=10, sharpen=(1.0, 7.0),
                               attribute_index=31, attribute_scales=(-1.0, 0.0, 1.0),
                               interpolation_steps=4, interpolation_pairs=2, attribute_faces=3,
                               batch_size=16)
  result = generation.generate(options, decode, encode, Z_DIM, _real_inputs(), " | tiny")
  groups, records, grids, notes, reference = result[:5]
  names = [g.name for g in groups]
  assert names == ["normal", "uniform_r0.5", "uniform_r8", "gaussian", "gmm", "interpolate",
                   "attribute_Smiling"]
  # 120 points for 8 dims: the Gaussian is fitted plainly, 10 full mixture components would
  # need 180, so the mixture gets diagonal covariances and says so.
  assert any("gmm" in note and "diagonal" in note for note in notes)
  assert not any(note.startswith("gaussian") for note in notes)
  for group in groups:
    grid = grids[group.name]
    tiles = min(len(group.grid_rows), group.columns)
    assert grid.width >= 2 * tiles * 96  # Two factors side by side, tiles upscaled to 96 px.
    for label, record in records[group.name].items():
      assert record["num_points"] == len(group.settings[label])
      assert 0.0 <= record["inside_data_cloud"]["fraction"] <= 1.0
      assert set(record["frechet_distance_encoder_space"]) == {"1", "7"}
      assert all(np.isfinite(v) and v >= 0
                 for v in record["frechet_distance_encoder_space"].values())
      assert 0.0 <= record["face_rate"] <= 1.0, (group.name, label)
  assert len(groups[0].z) == 40 and len(groups[0].grid_rows) == 5
  assert list(records["attribute_Smiling"]) == ["scale=-1", "scale=0", "scale=1"]
  assert records["interpolate"]["steps=4"]["num_points"] == 6 * 4  # 12 test faces = 6 pairs.
  # Points far from the data (uniform r=8 in 8 dims) fall outside the cloud; r=0.5 is closer.
  far = records["uniform_r8"]["r=8"]["inside_data_cloud"]["fraction"]
  near = records["uniform_r0.5"]["r=0.5"]["inside_data_cloud"]["fraction"]
  assert far < near and far < 0.05
  assert reference["num_images"] == 12
  report = generation.assemble(groups, records, {n: f"{n}.png" for n in names}, notes,
                               model={"kind": "ae"}, inputs_info={}, flags={}, seed=0,
                               provenance={}, reference_info=reference,
                               face_judge=result.face_judge, sharpening=result.sharpening)
  assert report["samplers"]["uniform"]["settings"]["r=8"]["r"] == 8.0
  assert report["samplers"]["attribute"]["settings"]["scale=1"]["grid"] == (
      "attribute_Smiling.png")
  assert report["samplers"]["attribute"]["params"]["vector"]["num_with"] > 0
  assert "NOT the FID" in report["definitions"]["frechet_distance_encoder_space"]
  assert "own encoder space" in report["definitions"]["frechet_distance_encoder_space"]
  assert {"face_rate", "face", "face_judge", "faces", "sharpening"} <= set(report["definitions"])
  # No test images here: noise is the only calibration set, and no figure needs a reference.
  assert set(report["faces"]) == {"noise", "normal", "uniform", "gaussian", "gmm"}
  assert 0.0 <= report["faces"]["noise"]["face_rate"] <= 1.0
  assert report["faces"]["normal"]["face_score"] is None
  assert set(report["faces"]["uniform"]) == {"0.5", "8"}
  assert set(report["sharpening"]) == {"1", "7"}
  json.dumps(report, allow_nan=False)
  again = generation.generate(options, decode, encode, Z_DIM, _real_inputs(), " | tiny")
  for name in names:
    assert image_ops.png_bytes(grids[name]) == image_ops.png_bytes(again[2][name])
  assert again.records == records
  assert (again.face_judge, again.sharpening) == (result.face_judge, result.sharpening)


def test_without_real_points_the_data_comparisons_are_null(ae):
  decode, encode = _fns(ae)
  options = generation.Options(samplers=("normal",), num_images=3, num_metric_images=4,
                               sharpen=(1.0,), batch_size=8)
  _, records, _, notes, reference = generation.generate(options, decode, encode, Z_DIM,
                                                        generation.Inputs())[:5]
  record = records["normal"]["N(0,I)"]
  assert record["inside_data_cloud"] is None
  assert record["frechet_distance_encoder_space"] is None and reference is None
  assert any("inside_data_cloud is null" in note for note in notes)
  # z-points alone: they are the data cloud and, lacking test images, the real set too.
  only_z = generation.Inputs(fit_z=_real_inputs().fit_z)
  _, records, _, notes, reference = generation.generate(options, decode, encode, Z_DIM,
                                                        only_z)[:5]
  assert set(records["normal"]["N(0,I)"]["frechet_distance_encoder_space"]) == {"1"}
  assert reference["num_images"] == 4  # Capped at num_metric_images.
  assert any("compares with the z-points" in note for note in notes)
  with pytest.raises(EvaluationError, match="gaussian needs real z-points"):
    generation.generate(generation.Options(samplers=("gaussian",)), decode, encode, Z_DIM,
                        generation.Inputs())


def _pixel_codec():
  """A model without weights: decode writes z[k] into pixel (0, k) of channel 0, encode reads it.

  Grey level g stands for z = g * 16 / 255 - 8, so the round trip through uint8 images gives z
  back to within 0.032 (for |z| < 8), and the Frechet distance in this "encoder space" is that
  of the z-points themselves.
  """
  def decode(z):
    images = np.full((len(z), SIZE, SIZE, 3), 0.5, np.float32)
    images[:, 0, :Z_DIM, 0] = np.clip((np.asarray(z, np.float32) + 8.0) / 16.0, 0.0, 1.0)
    return images

  def encode(images):
    return np.asarray(images, np.float64)[:, 0, :Z_DIM, 0] * 16.0 / 255.0 - 8.0
  return decode, encode


@pytest.mark.parametrize("shift", [0.0, 10.0])
def test_cloud_fraction_and_frechet_distance_on_known_clouds(shift):
  """N(0, I) samples against real z-points from N(0, I) (shift 0) or moved 10 along z[0]."""
  decode, encode = _pixel_codec()
  real = np.random.default_rng(5).standard_normal((4000, Z_DIM))
  real[:, 0] += shift
  options = generation.Options(samplers=("normal",), num_images=3, num_metric_images=400,
                               sharpen=(1.0,), batch_size=100)
  result = generation.generate(options, decode, encode, Z_DIM, generation.Inputs(fit_z=real))
  groups, records = result.groups, result.records
  record = records["normal"]["N(0,I)"]
  fraction = record["inside_data_cloud"]["fraction"]
  distance = record["frechet_distance_encoder_space"]["1"]
  # What the z-points alone give: the codec must not change the distance.
  assert distance == pytest.approx(image_quality.frechet_distance(real, groups[0].z), abs=0.05)
  if shift == 0:
    # Points of the cloud's own distribution: about the quantile (0.99) of them lie inside,
    # and the distance is only the sampling noise of 400 and 4,000 points in 8 dimensions.
    assert 0.97 <= fraction <= 1.0
    assert distance < 0.3
  else:
    # 10 standard deviations away: squared Mahalanobis distances near 100 + 8, far beyond
    # chi-square(8)'s 0.99 quantile (20.1); the distance is the squared shift, 100.
    assert fraction < 0.01
    assert 97.0 < distance < 103.0


def test_collect_inputs_encodes_the_data_dir(ae, prepared_data_dir, tmp_path):
  _, encode = _fns(ae)
  options = generation.Options(samplers=("gaussian", "attribute"), num_metric_images=4,
                               batch_size=16)
  inputs, files, info = generation.collect_inputs(options, encode, Z_DIM,
                                                  data_dir=prepared_data_dir, max_fit_images=30)
  assert inputs.fit_z.shape == (30, Z_DIM) and inputs.attribute_values.shape == (30, 40)
  assert inputs.test_z.shape == (4, Z_DIM)
  assert inputs.test_images.shape == (4, SIZE, SIZE, 3) and inputs.test_images.dtype == np.uint8
  assert info["fit"]["split"] == "train" and info["real"]["num_images"] == 4
  assert list(files) == [os.path.join(prepared_data_dir, "manifest.json")]
  z_path = str(tmp_path / "z.npy")
  np.save(z_path, inputs.fit_z.astype(np.float32))
  from_file, files, info = generation.collect_inputs(
      generation.Options(samplers=("gmm",), seed=1), encode, Z_DIM, z_points=z_path,
      max_fit_images=20)
  assert from_file.fit_z.shape == (20, Z_DIM) and from_file.test_z is None
  assert any("subset of 20 of the 30" in note for note in from_file.notes)
  assert info["fit"]["source"] == "z_points" and z_path in files
  with pytest.raises(EvaluationError, match="z_dim is 4"):
    generation.collect_inputs(options, encode, 4, z_points=z_path)


def test_reconstruction_statistics_of_identity_noise_and_a_model(ae, runs):
  rng = np.random.default_rng(0)
  batches = [rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
  identity = reconstruction.Subject("identity", "ae", "mse", lambda x: x,
                                    lambda z: np.asarray(z, np.float32) / 255.0)
  noise = reconstruction.Subject(
      "noise", "ae", "mse", lambda x: x,
      lambda z: np.random.default_rng(1).random(np.shape(z)).astype(np.float32))
  decode, encode = _fns(ae)
  model = reconstruction.Subject("tiny_ae", "ae", "bce", encode, decode)
  stats, grid, judged, kept = reconstruction.split_statistics(
      [identity, noise, model], batches, factors=(1.0, 7.0), num_grid=7)
  assert judged is None and kept is None  # Nothing kept for a judge.
  assert stats["identity"]["psnr"]["num_infinite"] == 15
  assert stats["identity"]["ssim"]["mean"] == pytest.approx(1.0)
  assert stats["identity"]["reconstruction_loss"]["max"] == pytest.approx(0.0, abs=1e-6)
  assert stats["noise"]["psnr"]["max"] < 10.0 and stats["noise"]["ssim"]["max"] < 0.1
  assert stats["tiny_ae"]["psnr"]["count"] == 15
  assert stats["tiny_ae"]["reconstruction_loss"]["mean"] > 0
  assert set(stats["tiny_ae"]["sharpened"]) == {"7"}
  assert grid["originals"].shape == (7, SIZE, SIZE, 3)
  np.testing.assert_array_equal(grid["originals"], np.concatenate(batches)[:7])
  assert grid["tiny_ae"].shape == (7, SIZE, SIZE, 3)
  picture = reconstruction.comparison_grid(grid["originals"], grid, [identity, model],
                                           (1.0, 7.0), "test")
  assert picture.width >= 5 * 96 and picture.height >= 7 * 96  # original + 2 x 2 columns.


def test_generate_tool_end_to_end_is_reproducible(runs, prepared_data_dir, tmp_path):
  common = ["--model_dir", runs["vae"], "--data_dir", prepared_data_dir, "--num_images", "4",
            "--num_metric_images", "12", "--r_limits", "1,8", "--sharpen", "1,7",
            "--max_fit_images", "40", "--batch_size", "16", "--seed", "3"]
  first = run_main("generate", *common, "--output_dir", tmp_path / "a")
  assert first.returncode == 0, first.stderr[-3000:]
  second = run_main("generate", *common, "--output_dir", tmp_path / "b")
  assert second.returncode == 0, second.stderr[-3000:]
  pngs = sorted(n for n in os.listdir(tmp_path / "a") if n.endswith(".png"))
  assert pngs == ["attribute_Smiling.png", "gaussian.png", "gmm.png", "interpolate.png",
                  "normal.png", "uniform_r1.png", "uniform_r8.png"]
  for name in pngs:
    data = (tmp_path / "a" / name).read_bytes()
    assert data == (tmp_path / "b" / name).read_bytes(), name
    assert min(Image.open(io.BytesIO(data)).size) >= 96
  report = json.loads((tmp_path / "a" / "generation.json").read_text())
  other = json.loads((tmp_path / "b" / "generation.json").read_text())
  for key in ("samplers", "reference", "face_judge", "faces", "sharpening"):
    assert report[key] == other[key], key
  assert report["seed"] == 3 and report["model"]["kind"] == "vae"
  # 40 training z-points in 8 dims: the mixture was reduced, and the JSON says so.
  assert report["samplers"]["gmm"]["params"]["fit"]["components"] == 4
  assert any("gmm" in note for note in report["notes"])
  inputs = report["provenance"]["inputs"]
  assert os.path.join(runs["vae"], "model.keras") in inputs
  assert os.path.join(prepared_data_dir, "manifest.json") in inputs
  normal = report["samplers"]["normal"]["settings"]["N(0,I)"]
  assert normal["num_points"] == 12 and set(normal["frechet_distance_encoder_space"]) == {"1",
                                                                                          "7"}
  assert report["data"]["real"]["num_images"] == 6  # The fixture's whole test split.
  assert 0.0 <= normal["face_rate"] <= 1.0
  calibration = report["face_judge"]["calibration"]
  # 6 test images: 3 for a reference are too few, and the calibration says so.
  assert calibration["reference_images"] == 3 and "are null" in calibration["note"]
  assert calibration["sets"]["real"]["num_images"] == 3
  assert report["face_judge"]["detector"].startswith("MTCNN")
  assert report["faces"]["real"] == calibration["sets"]["real"]
  assert set(report["faces"]["uniform"]) == {"1", "8"}
  assert set(report["sharpening"]) == {"1", "7"}
  assert (tmp_path / "a" / "flags.txt").exists()


def test_generate_tool_errors(runs, tmp_path):
  missing_data = run_main("generate", "--model_dir", runs["ae"], "--output_dir", tmp_path / "o",
                          "--samplers", "interpolate")
  assert_clean_error(missing_data, "--samplers", "--data_dir", code=2)
  missing_z = run_main("generate", "--model_dir", runs["ae"], "--output_dir", tmp_path / "o",
                       "--samplers", "normal,gmm")
  assert_clean_error(missing_z, "--z_points", "--data_dir", code=2)
  bad_dir = run_main("generate", "--model_dir", tmp_path / "no_run", "--output_dir",
                     tmp_path / "o", "--samplers", "normal")
  assert_clean_error(bad_dir, "no_run", code=1)
  assert not (tmp_path / "o").exists()


def test_compare_reconstructions_tool(runs, prepared_data_dir, tmp_path):
  photo = tmp_path / "me.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 260, 3), np.uint8)).save(photo)
  out = tmp_path / "rec"
  result = run_main("compare_reconstructions", "--model_dirs", f"{runs['ae']},{runs['vae']}",
                    "--data_dir", prepared_data_dir, "--output_dir", out, "--num_images", "3",
                    "--sharpen", "1,7", "--image", photo, "--face_judge_images", "4")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / "reconstruction.json").read_text())
  assert set(report["models"]) == {"tiny_ae", "tiny_vae"}
  for name, stats in report["models"].items():
    assert stats["psnr"]["count"] == 6 and stats["ssim"]["count"] == 6
    assert stats["reconstruction_loss"]["mean"] > 0 and "summed" in stats["loss_units"]
    assert set(stats["sharpened"]) == {"7"}
    assert 0.0 <= stats["face_rate"] <= 1.0
  assert report["face_judge"]["calibration"]["sets"]["real"]["num_images"] == 2
  assert "subset of 4 of the 6" in report["face_judge"]["images_judged"]
  assert report["models"]["tiny_vae"]["kind"] == "vae"
  assert str(photo) in report["provenance"]["inputs"]
  grid = Image.open(out / "reconstructions.png")
  assert grid.width >= 5 * 96 and grid.height >= 3 * 96
  assert Image.open(out / "own_images.png").height >= 96
  bad_image = run_main("compare_reconstructions", "--model_dirs", runs["ae"], "--data_dir",
                       prepared_data_dir, "--output_dir", tmp_path / "x", "--image",
                       tmp_path / "missing.jpg")
  assert_clean_error(bad_image, "missing.jpg", code=1)
  assert not (tmp_path / "x").exists()

