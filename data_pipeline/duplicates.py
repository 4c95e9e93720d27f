"""Content duplicates among the source photos: the same bytes under two names.

The writer's workers hash every photo they encode (`digest`); `summarize` groups equal digests
once all shards are written. A photo listed in two splits leaks test images into training, and
copies within a split weigh one face twice, so prepare_data logs both counts, keeps every
group's ids in manifest.json (`duplicates`) and, when asked, refuses the source.
"""

import collections
import hashlib

import numpy as np

MAX_GROUPS = 1000  # Groups listed in manifest.json; the counts cover all of them.


def digest(data):
  """A 64-bit hex digest of a photo's stored bytes (or of a decoded uint8 array)."""
  if isinstance(data, np.ndarray):
    data = np.ascontiguousarray(data).tobytes()
  return hashlib.sha256(data).hexdigest()[:16]


def summarize(entries):
  """Groups of byte-identical photos.

  Args:
    entries: iterable of (split, file_name, digest), one per photo written.

  Returns:
    {"num_checked": photos hashed, "num_groups": groups of two or more, "num_copies": photos
    beyond the first of each group, "across_splits": groups spanning splits, "within_split":
    groups inside one split, "groups": up to MAX_GROUPS lists of "split/file_name", sorted}.
  """
  by_digest = collections.defaultdict(list)
  count = 0
  for split, file_name, value in entries:
    by_digest[value].append((split, file_name))
    count += 1
  groups = sorted(sorted(members) for members in by_digest.values() if len(members) > 1)
  across = sum(1 for members in groups if len({split for split, _ in members}) > 1)
  return {"num_checked": count, "num_groups": len(groups),
          "num_copies": sum(len(members) - 1 for members in groups),
          "across_splits": across, "within_split": len(groups) - across,
          "groups": [[f"{split}/{name}" for split, name in members]
                     for members in groups[:MAX_GROUPS]]}


def describe(summary):
  """One line for the log and errors, e.g. '3 photos are byte-identical copies ...'."""
  example = " = ".join(summary["groups"][0]) if summary["groups"] else ""
  return (f"{summary['num_copies']} photo(s) are byte-identical copies of another "
          f"({summary['across_splits']} group(s) across splits, {summary['within_split']} "
          f"within a split; e.g. {example})")
