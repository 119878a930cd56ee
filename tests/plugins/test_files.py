"""htsec.plugins.files: a download appears complete or not at all; an upload reads only the
regular file it names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from htsec.errors import TransferFailed
from htsec.plugins.files import Sink, open_source


def test_sink_renames_into_place_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "data"
    with Sink(target) as sink:
        sink.write(b"abc")
        assert not target.exists()
        assert [p.name for p in tmp_path.iterdir()] == [sink.tmp.name]
        sink.commit()
    assert target.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_failed_sink_leaves_nothing_and_keeps_an_old_file(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), Sink(target) as sink:
        sink.write(b"partial")
        raise RuntimeError("cut")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_sink_restart_drops_bytes_after_the_offset(tmp_path: Path) -> None:
    with Sink(tmp_path / "d") as sink:
        sink.write(b"0123456789")
        sink.restart(4)
        sink.write(b"xy")
        sink.commit()
    assert (tmp_path / "d").read_bytes() == b"0123xy"


def test_sink_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "data").symlink_to(outside)
    with Sink(sandbox / "data") as sink:
        sink.write(b"download")
        sink.commit()
    assert outside.read_bytes() == b"precious"
    assert not (sandbox / "data").is_symlink()
    assert (sandbox / "data").read_bytes() == b"download"


def test_open_source_refuses_symlinks_and_non_files(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"x" * 10)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.mkfifo(tmp_path / "fifo")
    f, size = open_source(tmp_path / "real")
    with f:
        assert size == 10 and f.read() == b"x" * 10
    with pytest.raises(TransferFailed, match="symbolic link"):
        open_source(tmp_path / "link")
    with pytest.raises(TransferFailed, match="not a regular file"):
        open_source(tmp_path / "fifo")
    with pytest.raises(TransferFailed, match="not a regular file"):
        open_source(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")
