"""celeba-stream's models: config and presets, the AE and the VAE, and their training routine.

Modules are imported by name (modeling.config, modeling.training, modeling.run_dir, ...);
this package imports nothing itself, so that the pure-Python modeling.config stays usable
without loading TensorFlow (the trainers' flag validators rely on it).
"""
