"""The closed choices of the tools' flags, each list defined once.

Each list is the choices of a flag (--split, --encoding, --source, --checkpoint, --strategy,
--mixed_precision, --samplers) or what a choice implies (a precision's dtype policy, which
samplers need z-points or test faces); the libraries validate their arguments against the same
lists. Pure Python (no TensorFlow, no NumPy), so --help and flag errors answer at once. It lives
in `modeling`, though it names data and evaluation choices too, because that is the lowest
package all its users may import (modeling, evaluation, benchmarks, tools). `data_pipeline`
imports nothing of ours outside itself, so it keeps the data lists it validates against
(`data_pipeline.manifest.SPLITS`, `data_pipeline.records.ENCODINGS`);
tests/test_flag_choices.py checks that they equal the ones here.
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
# The resolved mixed-precision modes of the trainers -> the Keras dtype policy each sets
# (modeling.devices.set_precision) and the name reports show for it.
PRECISION_POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
PRECISION_NAMES = {"off": "float32", "bf16": "bf16", "fp16": "fp16"}
# Mixed precision of the trainers: auto (bf16 where the hardware runs it natively, else
# float32; modeling.devices.resolve_precision), or one of the resolved modes.
PRECISIONS = ("auto", *PRECISION_POLICIES)
# tools.generate's samplers, in the order they run (evaluation.generation).
SAMPLERS = ("normal", "uniform", "gaussian", "gmm", "interpolate", "attribute")
# Samplers that draw their points (one setting each, no parameter swept).
DRAWN_SAMPLERS = ("normal", "gaussian", "gmm")
# Samplers fitted to real z-points (--z_points, or encoded from --data_dir) ...
FITTED_SAMPLERS = ("gaussian", "gmm")
# ... and samplers that move real test faces (they need --data_dir).
FACE_SAMPLERS = ("interpolate", "attribute")
