"""The embedding projector: written files, and a real TensorBoard on loopback that serves them."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from evaluation import projector
from evaluation.errors import EvaluationError


def _points(count=40, dim=6, size=16):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(count, dim)).astype(np.float32)
  thumbnails = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
  metadata = {"id": [f"{i + 1:06d}.jpg" for i in range(count)],
              "split": ["train"] * (count - 4) + ["test"] * 4,
              "Male": [1, -1] * (count // 2), "identity": [i // 2 for i in range(count)]}
  return z, thumbnails, metadata


def test_files_hold_vectors_metadata_and_sprite(tmp_path):
  z, thumbnails, metadata = _points()
  info = projector.write_projector(str(tmp_path), z, thumbnails, metadata)
  assert info["num_points"] == 40 and info["columns"] == ["id", "split", "Male", "identity"]
  rows = (tmp_path / projector.VECTORS_FILE).read_text().splitlines()
  np.testing.assert_allclose(np.array([r.split("\t") for r in rows], float), z, rtol=1e-5)
  lines = (tmp_path / projector.METADATA_FILE).read_text().splitlines()
  assert lines[0] == "id\tsplit\tMale\tidentity" and lines[3] == "000003.jpg\ttrain\t1\t1"
  with Image.open(tmp_path / projector.SPRITE_FILE) as sprite:
    assert sprite.size == (7 * 16, 7 * 16)  # ceil(sqrt(40)) = 7 thumbnails a side.
    np.testing.assert_array_equal(np.asarray(sprite)[16:32, 0:16], thumbnails[7])


def test_bad_inputs_are_clear_errors(tmp_path):
  z, thumbnails, metadata = _points()
  with pytest.raises(EvaluationError, match="metadata column split has 39 values"):
    projector.write_projector(str(tmp_path), z, thumbnails, dict(metadata, split=["x"] * 39))
  with pytest.raises(EvaluationError, match="do not fit"):
    projector.write_projector(str(tmp_path), np.zeros((200, 2)),
                              np.zeros((200, 1024, 1024, 3), np.uint8), {})


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get(url, deadline):
  while True:
    try:
      with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()
    except OSError:
      if time.monotonic() > deadline:
        raise
      time.sleep(0.5)


@pytest.mark.slow
def test_tensorboard_serves_the_embedding_with_metadata_and_sprite(tmp_path):
  z, thumbnails, metadata = _points()
  projector.write_projector(str(tmp_path), z, thumbnails, metadata)
  port = _free_port()
  server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  base = f"http://127.0.0.1:{port}/data/plugin/projector"
  try:
    deadline = time.monotonic() + 120
    assert json.loads(_get(f"{base}/runs", deadline)) == ["."]
    info = json.loads(_get(f"{base}/info?run=.", deadline))
    embedding, = info["embeddings"]
    assert embedding["tensorName"] == "z-points" and embedding["tensorShape"] == [40, 6]
    assert embedding["sprite"]["singleImageDim"] == [16, 16]
    text = _get(f"{base}/metadata?run=.&name=z-points&num_rows=3", deadline).decode()
    assert text.splitlines() == ["id\tsplit\tMale\tidentity", "000001.jpg\ttrain\t1\t0",
                                 "000002.jpg\ttrain\t-1\t0", "000003.jpg\ttrain\t1\t1"][:4]
    tensor = np.frombuffer(_get(f"{base}/tensor?run=.&name=z-points", deadline), np.float32)
    np.testing.assert_allclose(tensor.reshape(40, 6), z, rtol=1e-5)
    sprite = _get(f"{base}/sprite_image?run=.&name=z-points", deadline)
    assert sprite == (tmp_path / projector.SPRITE_FILE).read_bytes()
  finally:
    server.terminate()
    server.wait(timeout=30)
