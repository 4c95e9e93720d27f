"""The study's slice: z-points near the plane spanned by two chosen components.

The study kept the vectors whose components all stay below a threshold (2.0) in absolute
value except two chosen ones (c1 < c2, e.g. 177 and 195), in three stages, printing the count
after each: components [0, c1), then (c1, c2), then (c2, dim). Of its 5,000 random vectors
101, 80 and 60 remained. `study_slice` reproduces that selection over any rows of a z-point
file, streamed in chunks.
"""

import numpy as np

from evaluation import zpoints
from evaluation.errors import EvaluationError


def stage_ranges(components, dim):
  """The three stages' component ranges [(start, stop), ...] around c1 < c2."""
  indices = sorted(int(c) for c in components)
  # Checked before unpacking: one or three indices must give this message, not a ValueError.
  if len(indices) != 2 or indices[0] == indices[1] or indices[0] < 0 or indices[1] >= dim:
    raise EvaluationError(f"--slice_components needs two different component indices in "
                          f"[0, {dim - 1}], got {list(components)}")
  c1, c2 = indices
  return [(0, c1), (c1 + 1, c2), (c2 + 1, dim)]


def study_slice(z, components, threshold, rows=None, chunk_rows=16384):
  """Counts and selects the slice's vectors.

  Args:
    z: [N, dim] z-points.
    components: the two components left free (any order).
    threshold: every other component must satisfy |z_j| < threshold.
    rows: optional sorted indices of the rows considered (the correlation subset).
    chunk_rows: rows per chunk.

  Returns:
    ({"components": [c1, c2], "threshold", "num_considered", "stages": [{"components":
    "[a, b)", "count"}, ...], "count"}, indices into z of the selected rows).
  """
  if threshold <= 0:
    raise EvaluationError(f"--slice_threshold must be > 0, got {threshold}")
  ranges = stage_ranges(components, z.shape[1])
  counts = np.zeros(len(ranges), np.int64)
  selected = []
  considered = len(z) if rows is None else len(rows)
  start = 0
  for chunk in zpoints.iter_chunks(z, chunk_rows, rows):
    keep = np.ones(len(chunk), bool)
    for stage, (lo, hi) in enumerate(ranges):
      if hi > lo:
        keep &= (np.abs(chunk[:, lo:hi]) < threshold).all(axis=1)
      counts[stage] += int(keep.sum())
    index = np.arange(start, start + len(chunk))
    selected.append(index[keep] if rows is None else np.asarray(rows)[index[keep]])
    start += len(chunk)
  stages = [{"components": f"[{lo}, {hi})", "count": int(n)}
            for (lo, hi), n in zip(ranges, counts)]
  c1, c2 = sorted(int(c) for c in components)
  return ({"components": [c1, c2], "threshold": float(threshold),
           "num_considered": int(considered), "stages": stages, "count": int(counts[-1])},
          np.concatenate(selected) if selected else np.zeros(0, np.int64))
