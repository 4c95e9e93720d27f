"""tools.prepare_data and tools.verify_data as a user runs them: results and one-line errors.

prepare_data runs once as a real process (its spawned workers included); the rest run the
tools' entry points in-process (tests/toolrun.run_main), with the same flags and exit codes.
"""

import os
import shutil

import pytest

from data_pipeline import manifest as manifest_lib
from tests.toolrun import assert_clean_error
from tests.toolrun import run_main
from tests.toolrun import run_tool


@pytest.mark.slow
def test_prepare_then_verify(synthetic_celeba_dir, tmp_path):
  out = tmp_path / "data"
  result = run_tool("prepare_data", f"--source_dir={synthetic_celeba_dir}", f"--output_dir={out}",
                    "--image_size=16", "--encoding=png", "--num_workers=2", "--shard_mb=0.005",
                    "--max_images=40", "--noprogress")
  assert result.returncode == 0, result.stderr
  manifest = manifest_lib.read_manifest(out)
  assert manifest["encoding"] == "png" and manifest["image_size"] == 16
  assert sum(v["num_examples"] for v in manifest["splits"].values()) == 40
  assert manifest["splits"]["train"]["num_shards"] >= 2
  assert "tools.prepare_data" in manifest["provenance"]["command_line"]
  flags_text = (out / "flags.txt").read_text()
  assert "--encoding=png" in flags_text and "--max_images=40" in flags_text
  assert {"features.json", "dataset_info.json"} <= set(os.listdir(out))

  result = run_main("verify_data", f"--data_dir={out}", "--noprogress")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("OK ") and "40 records" in lines[0]

  # One flipped byte: a non-zero exit naming the shard.
  shard = manifest_lib.split_shards(manifest, "train", out)[1]
  data = bytearray(open(shard["path"], "rb").read())
  data[len(data) // 2] ^= 0x10
  with open(shard["path"], "wb") as f:
    f.write(bytes(data))
  result = run_main("verify_data", f"--data_dir={out}", "--noprogress")
  assert_clean_error(result, shard["file"], code=1)


@pytest.mark.parametrize("args, expected", [
    (["--output_dir=OUT"], "--source_dir is required"),
    (["--source_dir=SRC"], "output_dir"),
    (["--source_dir=SRC", "--output_dir=OUT", "--crop=0,40,179,218"], "crop"),
    (["--source_dir=SRC", "--output_dir=OUT", "--jpeg_quality=0"], "jpeg_quality"),
    (["--source_dir=SRC", "--output_dir=OUT", "--encoding=webp"], "encoding"),
    (["--source_dir=SRC", "--output_dir=OUT", "--name=Bad-Name"], "--name must be snake_case"),
    (["--source_dir=SRC", "--output_dir=OUT", "--shard_mb=0"], "--shard_mb"),
    (["--source_dir=SRC", "--output_dir=OUT", "--tfds_data_dir=X"], "--source=tfds"),
    (["--source_dir=SRC", "--output_dir=SRC"], "--output_dir must differ"),
    (["--source_dir=SRC", "--output_dir=OUT", "extra"], "positional"),
])
def test_prepare_bad_flags_exit_2(tmp_path, args, expected):
  args = [a.replace("SRC", str(tmp_path / "src")).replace("OUT", str(tmp_path / "out"))
          for a in args]
  assert_clean_error(run_main("prepare_data", *args), expected, code=2)
  assert not os.path.exists(tmp_path / "out")


def test_bad_paths_exit_1(synthetic_celeba_dir, tmp_path):
  result = run_main("prepare_data", f"--source_dir={tmp_path / 'nowhere'}",
                    f"--output_dir={tmp_path / 'out'}")
  assert_clean_error(result, "nowhere", "does not exist", code=1)
  source = tmp_path / "src"
  shutil.copytree(synthetic_celeba_dir, source)
  os.remove(source / "list_eval_partition.txt")
  result = run_main("prepare_data", f"--source_dir={source}", f"--output_dir={tmp_path / 'out'}")
  assert_clean_error(result, "list_eval_partition.txt not found", code=1)
  assert not os.path.exists(tmp_path / "out")
  assert_clean_error(run_main("verify_data", f"--data_dir={tmp_path / 'out'}"),
                     "does not exist", code=1)
  assert_clean_error(run_main("verify_data"), "data_dir", code=2)
