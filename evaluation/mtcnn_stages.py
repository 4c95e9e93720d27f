"""MTCNN's pipeline with its refinement stages skipped when the stage before found nothing.

mtcnn 1.0 runs RNet and ONet on zero candidates, lets TensorFlow fail, and catches the error as
"no face"; TensorFlow logs each such failure as a "Local rendezvous is aborting" warning, which
users take for a fault. These stages return the same empty result without the failure.
Imported by evaluation.face_judge when it builds its detector (mtcnn loads TensorFlow).
"""

import numpy as np
from mtcnn.stages import StageONet
from mtcnn.stages import StagePNet
from mtcnn.stages import StageRNet

# A detection row as ONet returns it: image index, box (x1, y1, x2, y2), confidence and the
# five landmarks' (x, y).
_ROW = 16


class _SkipWhenEmpty:
  """Returns no detections, without running the network, when given no candidates."""

  def __call__(self, images_normalized, bboxes_batch, **kwargs):
    if len(bboxes_batch) == 0:
      return np.empty((0, _ROW))
    return super().__call__(images_normalized, bboxes_batch, **kwargs)


class RNet(_SkipWhenEmpty, StageRNet):
  pass


class ONet(_SkipWhenEmpty, StageONet):
  pass


# For mtcnn.MTCNN(stages=...): its own "face_and_landmarks_detection" with the two above.
STAGES = (StagePNet, RNet, ONet)
