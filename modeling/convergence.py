"""When a run has converged: the early-stopping rule, replayed from a run's validation losses.

The rule is Keras' EarlyStopping's (monitor val_loss, mode min) with a *relative* min_delta: an
epoch improves on the best so far when its loss is below best * (1 - min_delta). Training stops
once `patience` epochs in a row have not improved, but not before `min_epochs` epochs (Keras'
start_from_epoch plays that part there). The trainers' callback
(modeling.callbacks.EarlyStoppingFromHistory) and the study's records both call `replay`, so a
resumed run stops where an uninterrupted one would, and a report can tell from history.csv
alone whether a run converged.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class State:
  """The rule's state after a run's epochs.

  Attributes:
    best: the lowest validation loss that counted as an improvement (None before any epoch).
    best_epoch: its 0-based epoch (-1 before any epoch).
    wait: epochs since then that did not improve.
    stopped_epoch: the 0-based epoch at whose end training stopped, or None.
  """
  best: float | None
  best_epoch: int
  wait: int
  stopped_epoch: int | None

  @property
  def converged(self):
    return self.stopped_epoch is not None


def improves(loss, best, min_delta):
  """Whether `loss` improves on `best` by more than the fraction `min_delta` of it."""
  if not math.isfinite(loss):
    return False
  return best is None or loss < best - abs(best) * min_delta


def replay(val_losses, patience, min_delta=0.0, min_epochs=1):
  """The rule's state after epochs with validation losses `val_losses` (in epoch order).

  Args:
    val_losses: floats, one per epoch (NaN: an epoch without a validation loss, which never
      improves).
    patience: epochs without improvement after which training stops (>= 1).
    min_delta: the relative improvement that counts (0.01: 1 % below the best so far).
    min_epochs: the fewest epochs of a run: no stop before this many.

  Returns:
    State; epochs after a stop are ignored.
  """
  best, best_epoch, wait = None, -1, 0
  for epoch, loss in enumerate(val_losses):
    if improves(loss, best, min_delta):
      best, best_epoch, wait = loss, epoch, 0
      continue
    wait += 1
    if wait >= patience and epoch + 1 >= min_epochs:
      return State(best, best_epoch, wait, epoch)
  return State(best, best_epoch, wait, None)
