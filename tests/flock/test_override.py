"""htsec.flock.override: only a root-owned file in a root-owned directory switches flocking off."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.errors import ConfigError
from htsec.flock.override import check_override, validate_override_path


@pytest.fixture
def root_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the override must be owned by root (CI runs as root)")
    d = Path("/run") / f"htsec-test-override-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def test_override_absent_is_off(root_dir: Path) -> None:
    st = check_override(root_dir / "flock.off")
    assert (st.active, st.suspect) == (False, False)


def test_override_root_owned_file_is_on(root_dir: Path) -> None:
    (root_dir / "flock.off").touch(mode=0o644)
    assert check_override(root_dir / "flock.off").active


def test_override_file_of_another_user_is_suspect_not_trusted(root_dir: Path) -> None:
    f = root_dir / "flock.off"
    f.touch(mode=0o644)
    os.chown(f, 65534, 65534)
    st = check_override(f)
    assert (st.active, st.suspect) == (False, True) and "uid 65534" in st.detail


def test_override_in_world_writable_directory_is_suspect(tmp_path: Path) -> None:
    f = tmp_path / "flock.off"
    f.touch(mode=0o644)
    os.chmod(tmp_path, 0o777)
    st = check_override(f, root_uid=os.geteuid())
    assert st.suspect and not st.active


def test_override_symlink_is_suspect(root_dir: Path) -> None:
    (root_dir / "real").touch()
    (root_dir / "flock.off").symlink_to(root_dir / "real")
    assert check_override(root_dir / "flock.off").suspect


@pytest.mark.parametrize("bad", ["/tmp/flockoff", "/var/tmp/x", "/dev/shm/x", "relative/x"])
def test_override_path_under_tmp_or_relative_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        validate_override_path(Path(bad))
