"""Errors caused by the user's evaluation inputs (as opposed to bugs)."""


class EvaluationError(Exception):
  """A z-point file, model dir or evaluation setting is unusable."""
