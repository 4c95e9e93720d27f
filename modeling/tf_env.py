"""Settings that TensorFlow reads once, at its first import: apply them before that import.

TensorFlow-free, so that entry points (tools/__init__.py, benchmarks/__init__.py, the tests'
conftest.py) can call it before anything imports TensorFlow.
"""

import os

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def enable_onednn():
  """Turns TensorFlow's oneDNN CPU kernels on, unless TF_ENABLE_ONEDNN_OPTS is set already.

  TensorFlow turns oneDNN on by itself only on some x86 CPUs (recent Intel Xeons); on others,
  such as AMD CPUs, its older kernels run, much slower for the study's convolutions
  (docs/benchmarks/README.md has the measurement). Results differ from the other kernels' by
  float rounding only, and repeated runs with oneDNN agree. A user's own setting (0 turns it
  off) is kept.

  Returns:
    The variable's value now in effect ("1" unless the user chose otherwise).
  """
  return os.environ.setdefault(ONEDNN_VARIABLE, "1")
