"""Command-line tools of celeba-stream: thin absl entry points over the libraries."""

import importlib.util
import os
import sys

# TensorFlow's C++ INFO lines (CPU features, buffer sizes) drown the tools' own output. Level 1
# hides INFO only: TensorFlow's warnings and errors still show (2 would hide the warnings). A
# level the user set is kept; 0 shows everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# oneDNN's CPU kernels, where TensorFlow would not turn them on itself (modeling/tf_env.py:
# much faster training on AMD CPUs); before TensorFlow is imported, which reads it once.
from modeling import tf_env  # pylint: disable=g-import-not-at-top,wrong-import-position

tf_env.enable_onednn()

# Every tool needs TensorFlow, which is an extra (CPU and CUDA builds differ): say which one
# to install instead of failing deep inside an import with a traceback.
if importlib.util.find_spec("tensorflow") is None:
  sys.stderr.write("error: TensorFlow is not installed. Install the project with the extra that "
                   "fits this machine: pip install -e '.[cpu]' (CPU) or pip install -e '.[gpu]' "
                   "(NVIDIA GPU).\n")
  sys.exit(1)

# TensorFlow prints a few lines (oneDNN, absl's logging notice) before it reads the level above;
# drop those below the level while TensorFlow is first imported (tools/_tf_startup.py).
from tools import _tf_startup  # pylint: disable=g-import-not-at-top,wrong-import-position

_tf_startup.install()
