"""Errors caused by the user's data or paths (as opposed to bugs).

The command-line tools print these as one line and exit non-zero, without a traceback.
"""

import errno

# errno values of a write that failed for want of space (a full disk, a quota).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DataError(Exception):
  """A data dir, source folder, shard or manifest is missing, malformed or inconsistent."""
