"""Settings that TensorFlow reads once, at its first import: apply them before that import.

TensorFlow-free, so that entry points (tools/__init__.py, benchmarks/__init__.py, the tests'
conftest.py) can call it before anything imports TensorFlow.
"""

import os

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def enable_onednn():
  """Turns TensorFlow's oneDNN CPU kernels on, unless TF_ENABLE_ONEDNN_OPTS is set already.

  TensorFlow 2.21 turns oneDNN on by itself only on some x86 CPUs (recent Intel Xeons); on
  others, such as the project's AMD EPYC test machine, its older kernels run, much slower for
  the study's convolutions. Measured there side by side (2 cores, float32, batch 64, a train
  step on a constant batch): ae_z256 5.16 -> 2.91 s per step (1.78x), vae_fact5 1.57 -> 1.24 s
  (1.27x); tf.image.ssim of 64 96x96 images 0.82 -> 0.10 s. The numbers differ from the other
  kernels' by float rounding only (the first losses agree to 5 digits), and repeated runs with
  oneDNN give identical numbers. A user's own setting (0 turns it off) is kept.

  Returns:
    The variable's value now in effect ("1" unless the user chose otherwise).
  """
  return os.environ.setdefault(ONEDNN_VARIABLE, "1")
