"""Peak memory of this process, for the benchmarks' child processes."""

import resource
import sys

_MB = 1e6


def ru_maxrss_mb():
  """getrusage's ru_maxrss of this process, in MB (Linux reports KiB, macOS bytes)."""
  scale = 1 if sys.platform == "darwin" else 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / _MB


def peak_rss_mb():
  """This process's own peak resident set size so far, in MB (10**6 bytes).

  On Linux VmHWM from /proc/self/status, not ru_maxrss: the kernel carries ru_maxrss across
  execve from the address space that exec replaces, and subprocess starts children by vfork,
  so a child's ru_maxrss begins at its PARENT's peak. VmHWM belongs to the child's own address
  space. Elsewhere ru_maxrss.
  """
  try:
    with open("/proc/self/status", "r", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024 / _MB  # kB.
  except (OSError, ValueError, IndexError):
    pass
  return ru_maxrss_mb()
