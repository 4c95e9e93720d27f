"""Errors caused by the user's run dirs or model settings (as opposed to bugs)."""


class ModelError(Exception):
  """A run dir, config or model setting is missing, inconsistent or impossible."""
