"""The one way into the filesystem (_fs.py) and a lint that keeps it the only way."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from htsec import _fs

SRC = Path(__file__).resolve().parent.parent / "src" / "htsec"


def test_write_atomic_mode_and_content(tmp_path: Path) -> None:
    p = tmp_path / "s"
    old = os.umask(0)
    try:
        _fs.write_atomic(p, b"one", 0o600)
    finally:
        os.umask(old)
    assert p.read_bytes() == b"one"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    _fs.write_atomic(p, b"two", 0o400)
    assert p.read_bytes() == b"two"
    assert stat.S_IMODE(p.stat().st_mode) == 0o400
    assert [x.name for x in tmp_path.iterdir()] == ["s"]  # no temp files left


def test_write_atomic_failure_leaves_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "s"
    _fs.write_atomic(p, b"old")

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        _fs.write_atomic(p, b"new")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["s"]


def test_write_atomic_does_not_follow_symlink_temp(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    _fs.write_atomic(link, b"x")  # replaces the link itself, never writes through it
    assert target.read_text() == "keep"
    assert not link.is_symlink() and link.read_bytes() == b"x"


def test_ensure_private_dir_refuses_open_dir(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(_fs.FileSecurityError, match="chmod 700"):
        _fs.ensure_private_dir(d)


def test_no_plain_writes_outside_fs() -> None:
    """Secret files are written only through _fs (certbot's os-module-forbidden idea)."""
    bad = re.compile(r"open\([^)]*['\"][wa]b?['\"]|os\.chmod\(|\.write_(text|bytes)\(")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name in ("_fs.py",):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if bad.search(line) and "# fs-ok" not in line:
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert offenders == []


def test_make_dir_sets_exact_mode(tmp_path: Path, strict_umask: None) -> None:
    assert _fs.make_dir(tmp_path / "d", 0o2770)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o2770
    assert not _fs.make_dir(tmp_path / "d", 0o700)  # existing: untouched
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o2770


def test_touch_keeps_or_bumps(tmp_path: Path, strict_umask: None) -> None:
    p = tmp_path / "m"
    assert _fs.touch(p, 0o644)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    os.utime(p, (5, 5))
    assert not _fs.touch(p, update_mtime=False)
    assert p.stat().st_mtime == 5
    assert not _fs.touch(p)
    assert p.stat().st_mtime > 5
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        _fs.touch(link)
    assert not (tmp_path / "elsewhere").exists()


def _nest(top: Path, depth: int) -> None:
    """``top/d/d/.../d/f`` ``depth`` levels deep (made through descriptors: no PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


def test_empty_dir_clears_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    _nest(top, 1500)
    (tmp_path / "outside").write_text("keep")
    os.symlink(tmp_path / "outside", top / "link")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _fs.empty_dir(fd, max_open=8)
    finally:
        os.close(fd)
    assert os.listdir(top) == []
    assert (tmp_path / "outside").read_text() == "keep"


def test_empty_dir_stops_at_its_budget(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_text("x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError, match="too many entries"):
            _fs.empty_dir(fd, budget=5)
    finally:
        os.close(fd)
    assert len(os.listdir(tmp_path)) == 15
