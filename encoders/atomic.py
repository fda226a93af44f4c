"""Atomic writes: a file or a directory appears whole at its final path, or not at all.

Files are created with mode ``0o666`` and directories with ``0o777``, less the umask (the kernel
applies it, or a default ACL where the directory has one), like ``open``/``mkdir``: outputs on
a shared cluster are as readable as the user's other files, not private like ``tempfile``'s.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_TRIES = 100


def _fresh(path: Path, make) -> Path:
    """Create a new, unused ``.<name>.<random>.tmp`` beside ``path`` with ``make(candidate)``."""
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            make(tmp)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no unused temporary name beside {path}")


def _new_file(tmp: Path) -> None:
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(path, _new_file)
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``.

    An existing ``path`` is moved aside first and deleted only after the new one is in place,
    so a crash leaves either the old or the new directory (plus a ``.old`` or ``.tmp`` leftover
    that no loader treats as whole).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(path, lambda p: os.mkdir(p, 0o777))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
