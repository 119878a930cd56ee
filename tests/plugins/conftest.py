"""Helpers for the plugin tests: input files as a starter writes them, output files parsed;
the local Box API fake of test_box*.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import classad2
import pytest

from tests.conftest import REPO
from tests.plugins.fakes.box import BoxFake

#: What the starter writes into the output file before running a plugin
#: (file_transfer.cpp: (16 * 1204) / 64 lines of 64 spaces).
PREFILL = b" " * (64 * ((16 * 1204) // 64))


def input_ads(*files: tuple[str, str], extra: Sequence[Mapping[str, Any]] = ()) -> str:
    """The input file a starter writes: optional non-file ads, then one ad per (url, path)."""
    ads = [classad2.ClassAd(dict(e)) for e in extra]
    ads += [classad2.ClassAd({"Url": u, "LocalFileName": p}) for u, p in files]
    return "".join(str(a) for a in ads)


def starter_files(tmp: Path, text: str) -> tuple[Path, Path]:
    """``.plugin.in`` holding ``text`` and ``.plugin.in.out`` pre-filled, as the starter does."""
    infile = tmp / ".plugin.in"
    outfile = tmp / ".plugin.in.out"
    infile.write_text(text)
    outfile.write_bytes(PREFILL)
    return infile, outfile


def results(outfile: Path) -> list[Any]:
    return list(classad2.parseAds(outfile.read_text(), classad2.ParserType.New))


def run_plugin(
    module: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def box(tmp_path: Path) -> Iterator[BoxFake]:
    """The local Box API fake (tests/plugins/fakes/box.py), running."""
    fake = BoxFake(tmp_path / "box").start()
    yield fake
    fake.stop()
