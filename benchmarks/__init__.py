"""What measures speed and memory: the feeding pipeline and the latent statistics.

Each measurement runs in a fresh child process (`python -m benchmarks.<module> SPEC RESULT`,
child_tasks.py), so that its peak memory is its own. The benchmarks may use every library
package (data_pipeline, modeling, evaluation) but never `tools`; tools.benchmark_pipeline and
tools.benchmark_latents are their command lines.
"""
