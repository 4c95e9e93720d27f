"""What measures speed and memory: the feeding pipeline and the latent statistics.

Each measurement runs in a fresh child process (`python -m benchmarks.<module> SPEC RESULT`,
child_tasks.py), so that its peak memory is its own. The benchmarks may use every library
package (data_pipeline, modeling, evaluation) but never `tools`; tools.benchmark_pipeline and
tools.benchmark_latents are their command lines.
"""

from modeling import tf_env  # pylint: disable=g-import-not-at-top,wrong-import-position

# The tools' CPU kernels (modeling/tf_env.py), so that a benchmark measures what they run.
tf_env.enable_onednn()
