"""The latent cloud in TensorBoard's embedding projector: z-points, face thumbnails, metadata.

`write_projector(log_dir, ...)` writes what `tensorboard --logdir LOG_DIR` needs to show the
z-points under PCA, t-SNE or UMAP with each point drawn as its face:

  LOG_DIR/projector_config.pbtxt   the ProjectorConfig (tensorboard.plugins.projector)
  LOG_DIR/z_points.tsv             the vectors, one row per point, tab-separated float32
  LOG_DIR/metadata.tsv             a header line, then one row per point (id, split, ...)
  LOG_DIR/sprite.png               the thumbnails in one square grid, row-major

The vectors go into a TSV (`tensor_path`) rather than a checkpoint, so that no TensorFlow
variable is needed. The sprite is at most 8192 x 8192 pixels (TensorBoard's limit), which
bounds points x thumbnail size: `max_points(thumbnail)`.
Format: https://www.tensorflow.org/tensorboard/tensorboard_projector_plugin.
"""

import io
import math
import os

import numpy as np
from PIL import Image
from tensorboard.plugins import projector

from evaluation.errors import EvaluationError

TENSOR_NAME = "z-points"
CONFIG_FILE = "projector_config.pbtxt"
VECTORS_FILE = "z_points.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
SPRITE_LIMIT = 8192  # TensorBoard's largest sprite side, in pixels.


def max_points(thumbnail):
  """The most points whose `thumbnail`-pixel images fit into one sprite."""
  per_side = SPRITE_LIMIT // thumbnail
  return per_side * per_side


def sprite(thumbnails):
  """The thumbnails (uint8 [N, h, w, 3]) as one square grid, row-major, as PNG bytes."""
  count, height, width = thumbnails.shape[:3]
  side = math.ceil(math.sqrt(count))
  grid = np.zeros((side * height, side * width, 3), dtype=np.uint8)
  for index, image in enumerate(thumbnails):
    row, col = divmod(index, side)
    grid[row * height:(row + 1) * height, col * width:(col + 1) * width] = image
  buffer = io.BytesIO()
  Image.fromarray(grid).save(buffer, format="PNG")
  return buffer.getvalue()


def _tsv_cell(value):
  text = str(value)
  return text.replace("\t", " ").replace("\n", " ")


def write_projector(log_dir, vectors, thumbnails, metadata):
  """Writes an embedding projector for `vectors` into `log_dir` (created if needed).

  Args:
    log_dir: the folder to give `tensorboard --logdir`.
    vectors: float [N, D] z-points.
    thumbnails: uint8 [N, h, w, 3] the images of the points (e.g. 48x48 resized faces).
    metadata: {column name: N values} (e.g. "id", "split", attributes, "identity"); the
      columns keep their order.

  Returns:
    {"num_points": N, "dim": D, "thumbnail": [h, w], "columns": [...], "files": [...]}.

  Raises:
    EvaluationError: mismatched lengths, or more points than a sprite can hold.
  """
  vectors = np.asarray(vectors, dtype=np.float32)
  thumbnails = np.asarray(thumbnails)
  count = len(vectors)
  if vectors.ndim != 2 or count == 0:
    raise EvaluationError(f"the projector needs z-points [N, D] with N > 0, got {vectors.shape}")
  if thumbnails.shape[0] != count or thumbnails.ndim != 4 or thumbnails.dtype != np.uint8:
    raise EvaluationError(f"the projector needs one uint8 [h, w, 3] thumbnail per z-point, got "
                          f"{thumbnails.shape} {thumbnails.dtype} for {count} points")
  if thumbnails.shape[1] != thumbnails.shape[2]:
    raise EvaluationError("the projector's thumbnails must be square")
  limit = max_points(thumbnails.shape[1])
  if count > limit:
    raise EvaluationError(f"{count} points of {thumbnails.shape[1]} px do not fit into one "
                          f"{SPRITE_LIMIT} px sprite (at most {limit}); pass fewer points")
  for name, values in metadata.items():
    if len(values) != count:
      raise EvaluationError(f"metadata column {name} has {len(values)} values for {count} "
                            "points")
  os.makedirs(log_dir, exist_ok=True)
  with open(os.path.join(log_dir, VECTORS_FILE), "w", encoding="utf-8") as f:
    for row in vectors:
      f.write("\t".join(f"{v:.6g}" for v in row) + "\n")
  columns = list(metadata)
  with open(os.path.join(log_dir, METADATA_FILE), "w", encoding="utf-8") as f:
    f.write("\t".join(columns) + "\n")
    for index in range(count):
      f.write("\t".join(_tsv_cell(metadata[c][index]) for c in columns) + "\n")
  with open(os.path.join(log_dir, SPRITE_FILE), "wb") as f:
    f.write(sprite(thumbnails))
  config = projector.ProjectorConfig()
  embedding = config.embeddings.add()
  embedding.tensor_name = TENSOR_NAME
  embedding.tensor_path = VECTORS_FILE
  embedding.metadata_path = METADATA_FILE
  embedding.sprite.image_path = SPRITE_FILE
  embedding.sprite.single_image_dim.extend([thumbnails.shape[2], thumbnails.shape[1]])
  projector.visualize_embeddings(log_dir, config)
  return {"num_points": count, "dim": int(vectors.shape[1]),
          "thumbnail": [int(thumbnails.shape[1]), int(thumbnails.shape[2])],
          "columns": columns,
          "files": [CONFIG_FILE, VECTORS_FILE, METADATA_FILE, SPRITE_FILE]}
