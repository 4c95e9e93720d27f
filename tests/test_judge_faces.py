"""tools.judge_faces: face figures of image folders and arrays against real photos, and its
one-line errors for bad paths, empty sets, wrong shapes and too few real photos."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.toolrun import assert_clean_error
from tests.toolrun import run_main


@pytest.fixture(scope="module")
def face_sets(prepared_data_dir_96, tmp_path_factory):
  """{"folder": PNGs of 20 synthetic faces at 64x64, "faces": .npy of 32 more, "noise": .npy}."""
  from data_pipeline import make_dataset  # pylint: disable=g-import-not-at-top  (loads TF)
  faces = np.concatenate([np.asarray(b) for b in make_dataset(
      prepared_data_dir_96, "train", 64, shuffle=False).as_numpy_iterator()])
  root = tmp_path_factory.mktemp("judge_sets")
  folder = root / "folder"
  folder.mkdir()
  for index, image in enumerate(faces[:20]):
    Image.fromarray(image).resize((64, 64)).save(folder / f"{index:03d}.png")
  np.save(root / "faces.npy", faces[20:])
  np.save(root / "noise.npy", np.random.default_rng(0).integers(0, 256, (32, 96, 96, 3),
                                                                 dtype=np.uint8))
  return {"folder": str(folder), "faces": str(root / "faces.npy"),
          "noise": str(root / "noise.npy"), "root": root}


def test_judges_each_set_against_the_reference(face_sets, tmp_path):
  output = tmp_path / "out" / "judged.json"
  images = f"{face_sets['folder']},{face_sets['noise']}"
  result = run_main("judge_faces", f"--images={images}", f"--reference={face_sets['faces']}",
                    f"--output_json={output}", "--seed=1")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert list(report["sets"]) == [face_sets["folder"], face_sets["noise"]]  # Paths as given.
  folder, noise = report["sets"][face_sets["folder"]], report["sets"][face_sets["noise"]]
  assert folder["num_images"] == 20 and noise["num_images"] == 32
  for block in (folder, noise):
    assert set(block) >= {"face_rate", "face_score", "fd_face", "landmark_error"}
    low, high = block["fd_face"]["ci95"]
    assert low <= block["fd_face"]["value"] <= high
  assert folder["face_score"]["mean"] > noise["face_score"]["mean"] + 0.3
  assert folder["fd_face"]["value"] < noise["fd_face"]["value"]
  assert report["reference_images"] == 16 and report["reference"] == face_sets["faces"]
  assert set(report["calibration"]["sets"]) >= {"real", "blur_4", "mean_face", "noise"}
  assert report["judge"]["mtcnn"] == "1.0.0"
  assert set(report["provenance"]["inputs"]) == {face_sets["folder"], face_sets["noise"],
                                                  face_sets["faces"]}
  assert (tmp_path / "out" / "judged.flags.txt").is_file()
  assert f"{face_sets['noise']}: 32 images, face rate 0.00" in result.stderr
  assert f"wrote {output} (reference: 16 of {face_sets['faces']}'s images)" in result.stderr
  again = tmp_path / "again.json"
  assert run_main("judge_faces", f"--images={face_sets['noise']}",
                  f"--reference={face_sets['faces']}", f"--output_json={again}", "--seed=1",
                  "--nocalibration").returncode == 0
  second = json.loads(again.read_text())
  assert second["calibration"] is None
  assert second["sets"][face_sets["noise"]] == noise  # Same inputs and seed, same figures.


def test_bad_inputs_are_one_line_errors(face_sets, tmp_path):
  root = face_sets["root"]
  empty = tmp_path / "empty"
  empty.mkdir()
  np.save(tmp_path / "gray.npy", np.zeros((4, 8, 8), np.uint8))
  np.save(tmp_path / "floats.npy", np.zeros((4, 8, 8, 3), np.float32))
  np.save(tmp_path / "few.npy", np.zeros((5, 96, 96, 3), np.uint8))
  (tmp_path / "broken.png").write_bytes(b"not a png")
  broken = tmp_path / "broken_folder"
  broken.mkdir()
  (broken / "a.png").write_bytes(b"not a png")
  output = tmp_path / "out" / "j.json"
  good = face_sets["faces"]
  for images, reference, expected in (
      (tmp_path / "missing", good, "--images"),
      (empty, good, "holds no .png or .jpg files"),
      (tmp_path / "gray.npy", good, "uint8 [N >= 1, H, W, 3]"),
      (tmp_path / "floats.npy", good, "float32"),
      (broken, good, "cannot read the image"),
      (tmp_path / "broken.png", good, "neither a folder of images nor a .npy file"),
      (root / "noise.npy", tmp_path / "few.npy", "--reference"),
      (root / "noise.npy", tmp_path / "few.npy", "it needs at least 8"),
  ):
    result = run_main("judge_faces", f"--images={images}", f"--reference={reference}",
                      f"--output_json={output}")
    assert_clean_error(result, expected, code=1)
    assert not output.parent.exists()  # Nothing written, the folder it made removed.


def test_benchmark_times_the_judge_on_synthetic_faces():
  from benchmarks import face_judge as bench  # pylint: disable=g-import-not-at-top
  report = bench.run_benchmark(bench.Options(num_images=16, seed=0))
  assert report["inputs"] == {"images": "synthetic faces", "num_images": 16, "seed": 0}
  assert all(report["seconds"][k] > 0 for k in ("load_judge", "judge", "figures"))
  (target,) = report["targets"]
  assert target["value"] == pytest.approx(report["seconds"]["judge"] * 1000 / 16)
  assert target["passed"] == (target["value"] <= 60.0)
  assert report["figures_of_the_second_half"]["num_images"] == 8
  assert "per 1,000 images judged" in report["table"]
