"""What a user sees on a tool's stderr: its own lines, not TensorFlow's start-up noise.

Three noise lines are known: absl's "All log messages before absl::InitializeLog()"
notice and the "oneDNN custom operations are on" INFO line, which TensorFlow prints while it is
imported, before it reads TF_CPP_MIN_LOG_LEVEL (tools/_tf_startup.py filters them), and the
"remapper failed" error of Grappler on the training graph (modeling.networks.leaky_relu avoids
it). All three need oneDNN, which TensorFlow turns on by itself only on some x86 CPUs, so the
training test turns it on with TF_ENABLE_ONEDNN_OPTS=1 to see them on every machine.

The filter's own rules (what passes, what does not, a crash in the import) are tested with a
stand-in `tensorflow` package that writes the lines itself: no real TensorFlow, no seconds.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.toolrun import REPO_ROOT

NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
         "remapper failed")
# The smallest training that still has the graph in question (Conv2D + bias + leaky_relu).
TINY = ("--encoder_filters=8,16", "--encoder_kernels=3", "--strides=2", "--z_dim=8",
        "--batch_size=8", "--epochs=1", "--max_images=16")
# A log line of TensorFlow's C++ code (absl format): severity, date, time, thread, file.cc:line.
CPP_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+\.cc:\d+\] ")


def _env(**extra):
  """The test's environment, without TF_CPP_MIN_LOG_LEVEL unless given: the tools' default."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env.update(PYTHONPATH=REPO_ROOT, **extra)
  return env


@pytest.mark.slow
def test_training_shows_the_tools_lines_and_no_tensorflow_noise(prepared_data_dir, tmp_path):
  model_dir = tmp_path / "vae"
  result = subprocess.run(
      [sys.executable, "-m", "tools.train_vae", f"--data_dir={prepared_data_dir}",
       f"--model_dir={model_dir}", *TINY],
      cwd=REPO_ROOT, env=_env(TF_ENABLE_ONEDNN_OPTS="1"), capture_output=True, text=True,
      timeout=600, check=False)
  assert result.returncode == 0, result.stderr
  lines = result.stderr.splitlines()
  assert not [line for line in lines if any(noise in line for noise in NOISE)], result.stderr
  # Level 1 (the tools' default) hides TensorFlow's INFO lines, also those of the import.
  assert not [line for line in lines if (m := CPP_LOG_LINE.match(line)) and m.group(1) == "I"], (
      result.stderr)
  for own in ("training VAE:", "epoch 1 of 1:", f"run dir: {model_dir}"):
    assert any(own in line for line in lines), (own, result.stderr)


# What the stand-in `tensorflow` writes to fd 2 (as TensorFlow's C++ code does) while imported.
_IMPORT_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796132226.724532    3812 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results.",
    "W0000 00:00:1796132226.800595    3812 some_warning.cc:12] a real warning",
    "E0000 00:00:1796132238.295233    3812 some_error.cc:967] a real error",
)


@pytest.fixture
def fake_tensorflow(tmp_path):
  """A directory with a stand-in `tensorflow` package; its import writes _IMPORT_LINES."""
  package = tmp_path / "site" / "tensorflow"
  package.mkdir(parents=True)
  lines = "".join(line + "\n" for line in _IMPORT_LINES)
  (package / "__init__.py").write_text(textwrap.dedent(f"""
      import os, sys
      os.write(2, {lines.encode()!r})
      sys.stderr.write("a Python warning during the import\\n")
      if os.environ.get("FAKE_TF_ABORT"):
        os.write(2, b"F0000 00:00:1796132226.9 3812 cpu_feature_guard.cc:1] fatal: no AVX\\n")
        os.abort()
      """))
  return str(tmp_path / "site")


def _import_through_tools(site, **env):
  """`import tools; import tensorflow` (the stand-in), then a line after the import.

  A look-up of tensorflow comes first, as libraries do before importing it; it must not use up
  the hook.
  """
  code = ("import importlib.util, os, tools; importlib.util.find_spec('tensorflow'); "
          "import tensorflow; "
          "print(os.environ['TF_CPP_MIN_LOG_LEVEL']); "
          "os.write(2, b'I0000 00:00:1796132240.1 3812 after.cc:1] after the import\\n')")
  full_env = _env(**env)
  full_env["PYTHONPATH"] = os.pathsep.join([site, REPO_ROOT])
  return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=full_env,
                        capture_output=True, text=True, timeout=60, check=False)


def test_import_filter_drops_info_lines_and_keeps_warnings_errors_and_python_output(
    fake_tensorflow):
  result = _import_through_tools(fake_tensorflow)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "1"  # the tools' default level
  assert result.stderr.splitlines() == [
      "W0000 00:00:1796132226.800595    3812 some_warning.cc:12] a real warning",
      "E0000 00:00:1796132238.295233    3812 some_error.cc:967] a real error",
      "a Python warning during the import",
      # Only the import is filtered; TensorFlow itself applies the level after it.
      "I0000 00:00:1796132240.1 3812 after.cc:1] after the import"]


@pytest.mark.parametrize("level, dropped", [("0", 0), ("2", 3)])
def test_a_level_the_user_set_is_kept_and_applied_to_the_import(fake_tensorflow, level, dropped):
  result = _import_through_tools(fake_tensorflow, TF_CPP_MIN_LOG_LEVEL=level)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == level
  shown = result.stderr.splitlines()
  # 0: every line; 2: the warning goes too (the user asked for it), the error stays.
  assert len(shown) == len(_IMPORT_LINES) + 2 - dropped, result.stderr
  assert "E0000 00:00:1796132238.295233    3812 some_error.cc:967] a real error" in shown


def test_a_fatal_line_written_just_before_a_crash_in_the_import_still_shows(fake_tensorflow):
  result = _import_through_tools(fake_tensorflow, FAKE_TF_ABORT="1")
  assert result.returncode != 0
  assert "cpu_feature_guard.cc:1] fatal: no AVX" in result.stderr, result.stderr
  assert "a real error" in result.stderr
