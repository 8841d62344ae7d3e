"""What a small bench script's report names and where it goes: the commit (DIRTY TREE when the checkout had
changes to tracked files) and a dated Markdown file in --out."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit() -> str:
    """The checkout's short commit, with " DIRTY TREE" when a tracked file has changes ("unknown" outside git)."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" DIRTY TREE" if _git("status", "--porcelain", "--untracked-files=no") else "")


def report(text: str, out: str | None, stem: str) -> None:
    """Print ``text``; with ``out``, also write it to ``out/<stem>-<date>.md``."""
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"{stem}-{datetime.date.today():%Y%m%d}.md")
        with open(path, "w") as f:
            f.write(text)
        print("wrote", path)
