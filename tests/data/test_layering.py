"""gpunn.data sits below gpunn.train: no module of gpunn.data imports gpunn.train, at load time or inside
a function, so the two packages form no import cycle."""

import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "gpunn" / "data"


def _imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_gpunn_data_never_imports_gpunn_train():
    offenders = {
        f"{p.name}: {m}"
        for p in sorted(DATA.glob("*.py"))
        for m in _imported_modules(p)
        if m == "gpunn.train" or m.startswith("gpunn.train.")
    }
    assert not offenders, sorted(offenders)
