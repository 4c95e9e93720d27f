"""What a user sees on stderr: a tool's own lines, and no TensorFlow start-up noise in the demo.

Every process that imports TensorFlow with oneDNN on prints absl's "All log messages before
absl::InitializeLog()" notice and oneDNN's INFO line before TensorFlow applies
TF_CPP_MIN_LOG_LEVEL (an upstream abseil issue): a tool's raw stderr may show them, the
demo's and the study's step runner (workflows/demo._run_logged) drops them from what it
echoes. Grappler's "remapper failed" error never shows (modeling.networks.leaky_relu). The
settings are applied by tools/_cli.run, not by importing `tools`.
"""

import os
import re
import subprocess
import sys

import pytest

from tests.toolrun import REPO_ROOT
from tools import _cli
from workflows import demo

# The smallest training that still has the graph in question (Conv2D + bias + leaky_relu).
TINY = ("--encoder_filters=8,16", "--encoder_kernels=3", "--strides=2", "--z_dim=8",
        "--batch_size=8", "--epochs=1", "--max_images=16")
# What TensorFlow prints while it is imported, before it applies TF_CPP_MIN_LOG_LEVEL.
STARTUP_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796132226.724532    3812 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
)
# A log line of TensorFlow's C++ code (absl format): severity, date, time, thread, file.cc:line.
CPP_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+\.cc:\d+\] ")
# A log line of the tools' own (absl's Python logging): severity, date, time, thread, file.py:line.
OWN_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \w+\.py:\d+\] ")


def _env(**extra):
  """The test's environment without the settings tools/_cli.run applies: the tools' defaults."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  env.update(PYTHONPATH=REPO_ROOT, **extra)
  return env


def _is_startup_line(line):
  return line == STARTUP_LINES[0] or ("port.cc:" in line and "oneDNN custom operations" in line)


@pytest.mark.slow
def test_training_stderr_is_the_tools_own_lines_after_tensorflows_startup_lines(
    prepared_data_dir, tmp_path):
  model_dir = tmp_path / "vae"
  result = subprocess.run(
      [sys.executable, "-m", "tools.train_vae", f"--data_dir={prepared_data_dir}",
       f"--model_dir={model_dir}", *TINY],
      cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stderr.splitlines() if not _is_startup_line(line)]
  assert not [line for line in lines if "remapper failed" in line], result.stderr
  # Level 1 (the tools' default) hides TensorFlow's other INFO lines.
  assert not [line for line in lines if (m := CPP_LOG_LINE.match(line)) and m.group(1) == "I"], (
      result.stderr)
  for expected in ("training VAE:", "epoch 1 of 1:", f"run dir: {model_dir}"):
    assert any(expected in line and OWN_LOG_LINE.match(line) for line in lines), (
        expected, result.stderr)
  # run() turned oneDNN on (where TensorFlow would not itself); the run dir records it.
  assert '"TF_ENABLE_ONEDNN_OPTS": "1"' in (model_dir / "manifest.json").read_text()


def test_step_runner_echoes_the_output_live_less_tensorflows_startup_lines(tmp_path, capfd):
  # Written as TensorFlow's C++ code does (fd 2, whole lines), around the tool's own output
  # and a progress bar redrawn with "\r".
  noise = "".join(line + "\n" for line in STARTUP_LINES).encode()
  own = (b"I1206 05:56:00.735619 140217 devices.py:206] strategy default\n"
         b"progress 1/2\rprogress 2/2\n"
         b"I1206 05:56:01.791414 140217 train_common.py:211] done\n")
  code = (f"import os; os.write(2, {noise!r}); os.write(1, {own!r}); os.write(2, {noise!r}); "
          "os.write(2, b'W0000 00:00:1796132226.8 3812 some.cc:12] a real warning\\n')")
  log_path = tmp_path / "logs" / "step.log"
  assert demo._run_logged([sys.executable, "-c", code], str(log_path)) == 0
  shown = capfd.readouterr().out.encode()
  assert shown == own + b"W0000 00:00:1796132226.8 3812 some.cc:12] a real warning\n"
  # The log keeps everything the step wrote.
  assert log_path.read_bytes().count(noise) == 2


def test_step_runner_holds_a_split_line_until_it_is_known():
  stream = ("own line\n" + "".join(line + "\n" for line in STARTUP_LINES) + "I1 not TF's\n"
            + "end without a newline").encode()
  for size in (1, 3, 7, 64):
    echo = demo._StartupLineFilter()
    shown = b"".join(echo.feed(stream[i:i + size]) for i in range(0, len(stream), size))
    assert shown + echo.close() == b"own line\nI1 not TF's\nend without a newline", size


def test_run_applies_tensorflows_settings_and_keeps_the_users(monkeypatch):
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
  monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
  _cli._prepare_tensorflow()
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # INFO hidden, warnings shown.
  assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"  # The user's choice.


def test_importing_a_tool_applies_nothing():
  code = ("import os, tools.train_ae; "
          "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ["None", "None"]


def test_missing_tensorflow_is_one_error_line_from_run(monkeypatch, capsys):
  real_find_spec = _cli.importlib.util.find_spec
  monkeypatch.setattr(_cli.importlib.util, "find_spec",
                      lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
  with pytest.raises(SystemExit) as exit_:
    _cli.run(lambda argv: pytest.fail("main ran"))
  assert exit_.value.code == 1
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and "error: TensorFlow is not installed" in lines[0], lines
