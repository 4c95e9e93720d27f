"""The rooms' import rules of docs/ARCHITECTURE.md, read from every module's imports.

data_pipeline and modeling import nothing of ours; evaluation may use both; benchmarks and
workflows use the libraries; nothing but the tools themselves (and tests) imports tools.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

from tests.toolrun import REPO_ROOT

OURS = ("data_pipeline", "modeling", "evaluation", "benchmarks", "workflows", "tools")
ALLOWED = {
    "data_pipeline": {"data_pipeline"},
    "modeling": {"modeling"},
    "evaluation": {"evaluation", "data_pipeline", "modeling"},
    "benchmarks": {"benchmarks", "data_pipeline", "modeling", "evaluation"},
    "workflows": {"workflows", "data_pipeline", "modeling", "evaluation"},
    "tools": set(OURS),
}


def _imported_packages(path):
  """The top-level package of every `import X` / `from X import` in a file, anywhere in it."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_room_imports_only_what_it_may(package):
  root = pathlib.Path(REPO_ROOT, package)
  files = sorted(root.rglob("*.py"))
  assert files, f"{package}/ has no modules"
  wrong = sorted({f"{path.relative_to(REPO_ROOT)} imports {name}"
                  for path in files for name in _imported_packages(path)
                  if name in OURS and name not in ALLOWED[package]})
  assert not wrong, wrong


def _tool_modules():
  return sorted(f"tools.{p.stem}" for p in pathlib.Path(REPO_ROOT, "tools").glob("*.py")
                if p.stem not in ("__init__", "train_common"))


@pytest.mark.parametrize("tool", _tool_modules())
def test_importing_a_tool_loads_no_tensorflow(tool):
  # Tools load TensorFlow inside main, once their flags are good: a flag error or --helpshort
  # answers in a twentieth of a second instead of the seconds of TensorFlow's import.
  code = f"import sys, {tool}; print('tensorflow' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["False"], f"{tool} loads TensorFlow at import"
