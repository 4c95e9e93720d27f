"""Errors caused by the user's evaluation inputs (as opposed to bugs)."""


class EvaluationError(Exception):
  """A z-point file, model dir or evaluation setting is unusable."""


class FlagValueError(EvaluationError):
  """A setting that only the inputs can refute (a split the data lacks, a component >= z_dim).

  The message names the flag. The tools report it like a bad flag (exit 2) rather than a bad
  file (exit 1): the user fixes the command, not the data.
  """
