"""Secrets a process makes for local use (no secret configured): kept in `<data folder>/secrets/`,
the folder 0700 and each file 0600 from the moment it exists, and never seen half-written."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

FOLDER = "secrets"


class InsecureSecretError(ValueError):
    """A secret too weak to use, or kept where others may read it."""


def local_secret(data_dir: str | Path, name: str, make: Callable[[], str]) -> str:
    """The secret `name` in the data folder, made by `make` on first use. Processes starting together
    all get the one that won: it is written whole under a temporary name and linked into place, and a
    link never replaces a file that exists."""
    folder = Path(data_dir) / FOLDER
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(folder, folder.stat(follow_symlinks=False))
    path = folder / name
    if not path.exists():
        draft = folder / f".{name}.{secrets.token_hex(8)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(make())
                file.flush()
                os.fsync(file.fileno())
            # another process linked its own first: that one is the secret
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as file:
        _check_private(path, os.fstat(file.fileno()))
        value = file.read().strip()
    if not value:
        raise InsecureSecretError(f"{path} is empty: delete it and a new secret is made")
    return value


def _check_private(path: Path, info: os.stat_result) -> None:
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise InsecureSecretError(
            f"{path} may be read by others (mode {stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}):"
            " it must be this user's, 0700 for the folder and 0600 for a secret; fix it (chmod) or delete it"
            " and a new secret is made")
