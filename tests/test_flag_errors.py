"""Every tool answers a bad flag with one line naming the flag, exit code 2 and no traceback.

Missing required flags, malformed and out-of-range numbers, unknown enum values, empty and
mismatched lists. Flag errors are caught before a tool loads TensorFlow, so each case is a
short process; they run two at a time.
"""

import concurrent.futures
import os

import pytest

from tests.toolrun import assert_clean_error
from tests.toolrun import run_tool

# (tool, arguments, text the one error line must contain). The paths need not exist: flags
# are checked before any file is opened.
CASES = [
    ("make_synthetic_faces", ["--output_dir=o"], "--num_images"),
    ("make_synthetic_faces", ["--output_dir=o", "--num_images=-5"], "--num_images"),
    ("make_synthetic_faces", ["--output_dir=o", "--num_images=many"], "--num_images"),
    ("prepare_data", ["--source_dir=s"], "--output_dir"),
    ("prepare_data", ["--source_dir=s", "--output_dir=o", "--encoding=webp"], "--encoding"),
    ("prepare_data", ["--source_dir=s", "--output_dir=o", "--image_size=0"], "--image_size"),
    ("prepare_data", ["--source_dir=s", "--output_dir=o", "--crop=0,40,178"], "--crop"),
    ("verify_data", [], "--data_dir"),
    ("verify_data", ["--flagfile=no_such_flags.txt"], "--flagfile [Errno 2] No such file"),
    ("encode", ["--model_dir=m", "--data_dir=d", "--output=Z.npy", "--projector_dir=p",
                "--projector_thumbnail=9000"], "--projector_thumbnail must be 1..8192 pixels"),
    ("judge_faces", ["--images=a", "--output_json=j.json"], "--reference"),
    ("judge_faces", ["--images=", "--reference=r", "--output_json=j.json"], "--images"),
    ("train_ae", ["--data_dir=d"], "--model_dir"),
    ("train_ae", ["--data_dir=d", "--model_dir=m", "--preset=ae_z9"], "--preset"),
    ("train_ae", ["--data_dir=d", "--model_dir=m", "--batch_size=0"], "--batch_size"),
    ("train_ae", ["--data_dir=d", "--model_dir=m", "--encoder_filters=8,16",
                  "--encoder_kernels=3,3,3"], "encoder_kernels has 3 values"),
    ("train_ae", ["--data_dir=d", "--model_dir=m", "--encoder_filters="], "--encoder_filters"),
    ("train_vae", ["--data_dir=d", "--model_dir=m", "--kl_factor=-1"], "--kl_factor"),
    ("train_vae", ["--data_dir=d", "--model_dir=m", "--mixed_precision=fp8"],
     "--mixed_precision"),
    ("encode", ["--model_dir=m", "--data_dir=d"], "--output"),
    ("encode", ["--model_dir=m", "--data_dir=d", "--output=Z.npy", "--split=dev"], "--split"),
    ("encode", ["--model_dir=m", "--data_dir=d", "--output=Z.npy", "--batch_size=0"],
     "--batch_size"),
    ("analyze_latents", ["--z_points=Z.npy", "--output_dir=o", "--thresholds="], "--thresholds"),
    ("analyze_latents", ["--z_points=Z.npy", "--output_dir=o", "--inside_quantile=1.5"],
     "--inside_quantile"),
    ("analyze_latents", ["--z_points=Z.npy", "--output_dir=o", "--kind=gan"], "--kind"),
    ("analyze_latents", ["--z_points=Z.npy", "--output_dir=o", "--slice_components=3"],
     "--slice_components"),
    ("generate", ["--model_dir=m"], "--output_dir"),
    ("generate", ["--model_dir=m", "--output_dir=o", "--samplers=normal,gan"], "--samplers"),
    ("generate", ["--model_dir=m", "--output_dir=o", "--r_limits=1,-2"], "--r_limits"),
    ("generate", ["--model_dir=m", "--output_dir=o", "--sharpen="], "--sharpen"),
    ("compare_reconstructions", ["--model_dirs=a,b", "--data_dir=d"], "--output_dir"),
    ("compare_reconstructions", ["--model_dirs=a,a", "--data_dir=d", "--output_dir=o"],
     "--model_dirs"),
    ("compare_reconstructions", ["--model_dirs=a", "--data_dir=d", "--output_dir=o",
                                 "--split=dev"], "--split"),
    ("benchmark_pipeline", ["--data_dir=d"], "--output_json"),
    ("benchmark_pipeline", ["--data_dir=d", "--output_json=b.json", "--sizes=10,x"], "--sizes"),
    ("benchmark_latents", ["--output_json=l.json", "--num_vectors=0"], "--num_vectors"),
    ("demo", ["--epochs=0"], "--epochs"),
    ("demo", ["--num_images=10"], "--num_images"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  cwd = tmp_path_factory.mktemp("flag_errors")
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = [pool.submit(run_tool, tool, *(a.replace("=o", f"={cwd}/o") for a in args),
                           timeout=120) for tool, args, _ in CASES]
    return [future.result() for future in futures]


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{tool}:{' '.join(args)}" for tool, args, _ in CASES])
def test_bad_flag_is_one_line_with_exit_code_2(results, index):
  _, _, flag = CASES[index]
  assert_clean_error(results[index], flag, code=2)


def test_a_tilde_in_a_path_flag_means_home(tmp_path, monkeypatch):
  # Quoted on a command line or read from a flagfile, `~` reaches the tool unexpanded; it must
  # mean the home folder, never a folder named `~` in the current directory.
  from tests.toolrun import run_main  # pylint: disable=g-import-not-at-top
  home, cwd = tmp_path / "home", tmp_path / "cwd"
  home.mkdir()
  cwd.mkdir()
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.chdir(cwd)
  flagfile = tmp_path / "flags.txt"
  flagfile.write_text("--output_dir=~/faces\n--num_images=3\n")
  assert run_main("make_synthetic_faces", f"--flagfile={flagfile}").returncode == 0
  assert len(os.listdir(home / "faces" / "img_align_celeba")) == 3
  result = run_main("compare_reconstructions", "--model_dirs=~/a,~/b", "--data_dir=~/d",
                    "--output_dir=~/out")
  assert_clean_error(result, f"data dir {home}/d does not exist", code=1)
  result = run_main("judge_faces", "--images=~/a,~/b", "--reference=~/r",
                    "--output_json=~/j.json")  # A list flag: each item expanded.
  assert_clean_error(result, f"--images {home}/a", code=1)
  assert os.listdir(cwd) == []
