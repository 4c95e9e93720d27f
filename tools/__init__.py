"""Command-line tools of celeba-stream: thin absl entry points over the libraries."""

import importlib.util
import os
import sys

# TensorFlow's C++ start-up banners (oneDNN, CPU features) drown the tools' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Every tool needs TensorFlow, which is an extra (CPU and CUDA builds differ): say which one
# to install instead of failing deep inside an import with a traceback.
if importlib.util.find_spec("tensorflow") is None:
  sys.stderr.write("error: TensorFlow is not installed. Install the project with the extra that "
                   "fits this machine: pip install -e '.[cpu]' (CPU) or pip install -e '.[gpu]' "
                   "(NVIDIA GPU).\n")
  sys.exit(1)
