"""The override file that switches flocking off at once, trusted only when root made it.

Seed 001 used ``/tmp/flockoff``: anyone on the host could create it (or hold its name). Here the
path must be absolute and not under a world-writable directory (checked when the config is
read), and the file counts only when it and every directory above it is owned by root and not
writable by group or others, and it is not a symbolic link. A path that exists but fails these
checks is *suspect*: the shepherd lends nothing while it is there and says why (fail safe).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from htsec.errors import ConfigError

__all__ = ["DEFAULT_OVERRIDE", "OverrideState", "check_override", "validate_override_path"]

DEFAULT_OVERRIDE = Path("/etc/htsec/flock.off")


@dataclass(frozen=True, slots=True)
class OverrideState:
    active: bool
    suspect: bool
    detail: str


def validate_override_path(path: Path) -> Path:
    """Refuse a relative path or one under /tmp, /var/tmp or /dev/shm (world-writable)."""
    if not path.is_absolute():
        raise ConfigError(f"override path {path} must be absolute")
    for bad in ("/tmp", "/var/tmp", "/dev/shm"):  # noqa: S108 -- refused, not used
        if path == Path(bad) or Path(bad) in path.parents:
            raise ConfigError(
                f"override path {path} is under world-writable {bad}; use a root-owned directory "
                f"such as {DEFAULT_OVERRIDE.parent}"
            )
    return path


def _unsafe(st: os.stat_result, root_uid: int) -> str | None:
    if st.st_uid != root_uid:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def check_override(path: Path, *, root_uid: int = 0) -> OverrideState:
    """Whether the override is on. ``root_uid`` is for tests that cannot run as root."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return OverrideState(False, False, "absent")
    except OSError as exc:
        return OverrideState(False, True, f"{path}: cannot stat: {exc.strerror}")
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        return OverrideState(False, True, f"{path} is not a regular file")
    if why := _unsafe(st, root_uid):
        return OverrideState(False, True, f"{path} is {why}")
    for parent in path.parents:
        try:
            pst = os.lstat(parent)
        except OSError as exc:
            return OverrideState(False, True, f"{parent}: cannot stat: {exc.strerror}")
        if stat.S_ISLNK(pst.st_mode):
            return OverrideState(False, True, f"{parent} is a symbolic link")
        if why := _unsafe(pst, root_uid):
            return OverrideState(False, True, f"directory {parent} is {why}")
    return OverrideState(True, False, f"{path} present (root-owned)")
