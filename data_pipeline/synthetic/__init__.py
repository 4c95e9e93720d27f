"""The built-in synthetic CelebA: seeded cartoon faces in CelebA's own folder layout.

One more source beside a CelebA download, for demos and tests where real CelebA cannot be
fetched. Three modules, NumPy and PIL only (no TensorFlow):

- `factors.py`: the random factors of one face and the 40 CelebA attributes that follow;
- `render.py`: draws a face from its factors (178x218, CelebA's alignment) and its landmarks;
- `faces.py`: writes a whole dataset, `write_synthetic_celeba` (tools.make_synthetic_faces).

The names below are the package's interface; the rest stays inside its modules.
"""

from data_pipeline.attributes import ATTRIBUTE_NAMES
from data_pipeline.synthetic.factors import FACTOR_NAMES
from data_pipeline.synthetic.factors import attribute_vector
from data_pipeline.synthetic.factors import sample_factors
from data_pipeline.synthetic.faces import GENERATOR_VERSION
from data_pipeline.synthetic.faces import METADATA_FILE
from data_pipeline.synthetic.faces import face_factors
from data_pipeline.synthetic.faces import file_name
from data_pipeline.synthetic.faces import image_rng
from data_pipeline.synthetic.faces import split_sizes
from data_pipeline.synthetic.faces import write_synthetic_celeba
from data_pipeline.synthetic.render import landmarks
from data_pipeline.synthetic.render import render_face

__all__ = [
    "ATTRIBUTE_NAMES", "FACTOR_NAMES", "GENERATOR_VERSION", "METADATA_FILE", "attribute_vector",
    "face_factors", "file_name", "image_rng", "landmarks", "render_face", "sample_factors",
    "split_sizes", "write_synthetic_celeba",
]
