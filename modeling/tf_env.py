"""Settings that TensorFlow reads once, at its first import: apply them before that import.

TensorFlow-free, so that entry points (tools/_cli.run, benchmarks/child_tasks.child_main, the
tests' pytest_configure) can call it before anything imports TensorFlow.
"""

import os

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def enable_onednn():
  """Turns TensorFlow's oneDNN CPU kernels on, unless TF_ENABLE_ONEDNN_OPTS is set already.

  Why: TensorFlow leaves them off on AMD CPUs, where they make the study's train steps 1.3-1.8x
  faster (docs/benchmarks/README.md); results differ by float rounding only. A user's own
  setting (0 turns it off) is kept.

  Returns:
    The variable's value now in effect ("1" unless the user chose otherwise).
  """
  return os.environ.setdefault(ONEDNN_VARIABLE, "1")
