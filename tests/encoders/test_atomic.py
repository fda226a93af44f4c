"""Atomic writes: whole-or-nothing, and permissions that follow the umask (not tempfile's 0600)."""

from __future__ import annotations

import os
import stat

import pytest
from radalign.encoders.atomic import atomic_dir, atomic_write

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"),
    [
        (0o022, 0o644, 0o755),
        (0o077, 0o600, 0o700),
        (0o002, 0o664, 0o775),
    ],
)
def test_modes_follow_umask(umask, tmp_path, mask, file_mode, dir_mode):
    umask(mask)
    with atomic_write(tmp_path / "out" / "a.json", "w") as fh:
        fh.write("{}")
    assert _mode(tmp_path / "out" / "a.json") == file_mode
    with atomic_dir(tmp_path / "index") as d:
        (d / "x.npy").write_bytes(b"1")
    assert _mode(tmp_path / "index") == dir_mode
    assert (tmp_path / "index" / "x.npy").read_bytes() == b"1"


def test_replacing_keeps_new_default_mode(umask, tmp_path):
    umask(0o022)
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    with atomic_write(target) as fh:
        fh.write(b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o644
    (tmp_path / "d").mkdir(mode=0o700)
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
    assert _mode(tmp_path / "d") == 0o755 and (tmp_path / "d" / "f").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "d"]  # no leftovers


def test_failure_leaves_old_content_and_no_leftovers(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
