"""Fetching data set files: each from the first mirror that gives it whole and with the published MD5,
written atomically (a temporary name in the same folder, then renamed), never over a file that exists.

>>> fetch_all(folder, ["https://a.example/mnist/"], [("train-labels-idx1-ubyte.gz", "d53e...")])
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

__all__ = ["fetch_all", "fetch_file", "DownloadError"]

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """No mirror gave a file whole and with its checksum (the message names the files to place by hand)."""


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_target(folder: Path, name: str):
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    return os.fdopen(fd, "wb"), Path(tmp)


def _try_mirror(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Download ``url`` to ``dest`` (atomically) or raise an exception saying what went wrong."""
    out, tmp = _atomic_target(dest.parent, dest.name)
    try:
        with out:
            request = urllib.request.Request(url, headers={"User-Agent": "gpunn"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                expected = response.headers.get("Content-Length")
                got = 0
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    got += len(chunk)
            if expected is not None and got != int(expected):
                raise OSError(f"connection cut: got {got} of {expected} bytes")
        digest = _md5(tmp)
        if md5 is not None and digest != md5:
            raise ValueError(f"MD5 mismatch: got {digest}, expected {md5} (a corrupt or different file)")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def fetch_file(name: str, folder, mirrors, md5: str | None = None, timeout: float = 30.0) -> Path:
    """``folder/name`` from the first of ``mirrors`` (URL prefixes) that serves it whole with ``md5``.
    Raises ``DownloadError`` listing each mirror's failure."""
    folder = Path(folder)
    dest = folder / name
    errors = []
    for mirror in mirrors:
        url = mirror + name
        try:
            _try_mirror(url, dest, md5, timeout)
            return dest
        except (urllib.error.URLError, HTTPException, OSError, ValueError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            errors.append(f"{url}: {type(exc).__name__}: {reason}")
    raise DownloadError("; ".join(errors) or "no mirror given")


def _gunzip(path: Path) -> Path:
    """Beside ``x.gz`` write ``x`` (atomically), as torchvision's raw folder holds both."""
    plain = path.with_name(path.name[: -len(".gz")])
    out, tmp = _atomic_target(path.parent, plain.name)
    try:
        with out, gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK)
        os.replace(tmp, plain)
    finally:
        if tmp.exists():
            tmp.unlink()
    return plain


def fetch_all(folder, mirrors, resources, timeout: float = 30.0, what: str = "data set") -> None:
    """Every ``(file name, md5)`` of ``resources`` into ``folder`` (made if needed), ``.gz`` files also
    unpacked. Tries all files; if any fails, raises one ``DownloadError`` naming every missing file, where
    to put it, and why each mirror failed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, md5 in resources:
        try:
            path = fetch_file(name, folder, mirrors, md5, timeout)
        except DownloadError as exc:
            failures.append((name, md5, str(exc)))
            continue
        if name.endswith(".gz"):
            _gunzip(path)
    if failures:
        lines = [
            f"could not download {what}: {len(failures)} of {len(resources)} files failed. "
            f"Place these files by hand in {str(folder)!r} (gzipped or not):"
        ]
        for name, md5, why in failures:
            lines.append(f"  {name} (md5 {md5}) -- tried {why}")
        raise DownloadError("\n".join(lines))
