"""The closed choice lists that flags, validators and libraries share, each defined once.

Pure Python (no TensorFlow, no NumPy): the tools' flag definitions import it, so that --help and
flag errors answer at once. It lives in `modeling` because that is the lowest package that all
its users may import (modeling itself, evaluation, benchmarks, tools). `data_pipeline` imports
nothing of ours outside its own package, so it keeps the data lists it validates against
(`data_pipeline.manifest.SPLITS`, `data_pipeline.records.ENCODINGS`); tests/test_choices.py
checks that they equal the ones here.
"""

# The splits of a prepared data dir, in CelebA's order (list_eval_partition.txt codes 0, 1, 2).
SPLITS = ("train", "validation", "test")
# How the shards store an image: raw uint8 pixels, or PNG or JPEG bytes.
ENCODINGS = ("raw", "png", "jpeg")
# Where tools.prepare_data reads CelebA from: a download (folder or zip), or a TFDS celeb_a.
SOURCES = ("celeba_folder", "tfds")
# The model file of a run dir that evaluation loads: model.keras (after the last epoch) or
# best.keras (lowest validation loss); modeling.run_dir.checkpoint_path maps them to files.
CHECKPOINTS = ("final", "best")
# tf.distribute strategies of the trainers (modeling.devices.make_strategy).
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored")
# Mixed precision of the trainers: auto (bf16 where the hardware runs it natively, else
# float32; modeling.devices.resolve_precision), off (float32), bf16 or fp16.
PRECISIONS = ("auto", "off", "bf16", "fp16")
# tools.generate's samplers, in the order they run (evaluation.generation).
SAMPLERS = ("normal", "uniform", "gaussian", "gmm", "interpolate", "attribute")
# Samplers fitted to real z-points (--z_points, or encoded from --data_dir) ...
FITTED_SAMPLERS = ("gaussian", "gmm")
# ... and samplers that move real test faces (they need --data_dir).
FACE_SAMPLERS = ("interpolate", "attribute")
