"""Atomic file writes: write to a temporary file in the target's folder, fsync, then ``os.replace``.

A crash or an exception mid-write leaves the previous file untouched and no temporary file behind.

Re-saving keeps the owner's choices: an existing file's permission bits (and, where allowed, its owner
and group) carry over to the new file. Saving through a symbolic link writes the file the link points
to (the link stays a link, as with a plain ``open(path, "w")``); a dangling link creates its target.
"""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _keep_metadata(tmp: str, target: str) -> None:
    """Give ``tmp`` the mode (and owner) of the file it will replace, or a new file's usual mode."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a new file gets normal permissions
        return
    try:
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            os.chown(tmp, st.st_uid, st.st_gid)
    except (PermissionError, AttributeError):  # only root may give a file away; Windows has no chown
        pass
    os.chmod(tmp, stat.S_IMODE(st.st_mode))  # after chown, which may clear set-id bits


@contextmanager
def atomic_path(path, suffix: str = ""):
    """Yields a temporary path next to ``path``'s real file; on success it replaces that file.

    A symlink at ``path`` is followed (its target is replaced); an existing file's permission bits are
    kept; a new file gets mode 0666 & ~umask."""
    path = os.fspath(path)
    target = os.path.realpath(path)  # through symlinks: replacing the link itself would cut it
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the folder {folder!r} for {path!r} does not exist")
    if os.path.isdir(target):
        raise IsADirectoryError(f"{path!r} is a folder, not a file")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _keep_metadata(tmp, target)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)
