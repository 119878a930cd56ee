"""Import scanner: every credential of an existing HTCondor OAuth credential directory.

:func:`import_dir` reads a directory as HTCondor's credd and credmons leave it (shared/FORMATS.md
section 3) and reports what it cannot use without stopping; :mod:`htsec.creds.importer` puts
what it finds into the store.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from htsec import _fs
from htsec.creds.files import (
    MAX_CRED_FILE,
    MetaFile,
    TopFile,
    UseFile,
    parse_meta,
    parse_top,
    parse_use,
    split_suffix,
)
from htsec.creds.names import TokenName, is_local_user
from htsec.creds.safety import read_limited
from htsec.errors import BadCredentialName, CredentialFileError, FileSecurityError

__all__ = ["FoundCredential", "ImportProblem", "import_dir"]


@dataclass(frozen=True)
class ImportProblem:
    """A file or directory :func:`import_dir` could not use, and why."""

    path: Path
    message: str


@dataclass(frozen=True)
class FoundCredential:
    """One credential found by :func:`import_dir`.

    A file that exists but could not be read or parsed leaves its field None and adds an
    entry to ``problems``; check :attr:`ok` before trusting the absence of a file.
    """

    user: str
    name: TokenName
    top: TopFile | None
    meta: MetaFile | None
    use: UseFile | None
    problems: tuple[ImportProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def import_dir(root: str | os.PathLike[str]) -> Iterator[FoundCredential | ImportProblem]:
    """Every credential in an existing HTCondor credential directory, in sorted order.

    Yields a :class:`FoundCredential` per ``<user>/<stem>`` that has any of ``.top``,
    ``.use`` or ``.meta`` (problems with those files ride along in ``problems``), and an
    :class:`ImportProblem` for what cannot belong to a credential: an unreadable root or user
    directory, a user or token name HTCondor would refuse, a symlinked user directory. Nothing
    raises for one bad entry; the rest are still read. Files other than the three kinds
    (temporary files, ``.mark``, pending logins, ``pid``) are ignored.
    """
    base = Path(root)
    try:
        st = os.stat(base)
        entries = sorted(_scandir_strict(base), key=lambda e: e.name)
    except OSError as exc:
        yield ImportProblem(base, f"cannot read the credential directory: {exc.strerror}")
        return
    if st.st_mode & 0o007:
        yield ImportProblem(
            base,
            f"mode {stat.S_IMODE(st.st_mode):04o} gives others access; "
            "HTCondor's credmon refuses such a directory (chmod 2770)",
        )
    for entry in entries:
        path = base / entry.name
        if entry.is_symlink():
            if entry.is_dir():
                yield ImportProblem(path, "user directory is a symbolic link; not followed")
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue
        if not is_local_user(entry.name):
            yield ImportProblem(path, "not a user name HTCondor accepts; skipped")
            continue
        yield from _import_user(path, entry.name)


def _scandir_strict(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return list(it)


def _import_user(user_path: Path, user: str) -> Iterator[FoundCredential | ImportProblem]:
    # The directory is opened once without following a symlink and everything in it is read
    # relative to that descriptor: swapping it for a link after the scan changes nothing.
    try:
        fd = _fs.open_dir(user_path)
    except FileNotFoundError:
        return  # removed while we looked: as if never there
    except FileSecurityError as exc:
        yield ImportProblem(user_path, f"skipped: {exc}")
        return
    except OSError as exc:
        yield ImportProblem(user_path, f"cannot read the user directory: {exc.strerror}")
        return
    try:
        yield from _import_user_at(fd, user_path, user)
    finally:
        os.close(fd)


def _import_user_at(
    fd: int, user_path: Path, user: str
) -> Iterator[FoundCredential | ImportProblem]:
    try:
        with os.scandir(fd) as it:
            entries = list(it)
    except OSError as exc:
        yield ImportProblem(user_path, f"cannot read the user directory: {exc.strerror}")
        return
    stems: dict[str, set[str]] = {}
    for entry in entries:
        stem, suffix = split_suffix(entry.name)
        if suffix:
            stems.setdefault(stem, set()).add(suffix)
    for stem in sorted(stems):
        try:
            name = TokenName.parse_stem(stem)
        except BadCredentialName as exc:
            for suffix in sorted(stems[stem]):
                yield ImportProblem(user_path / f"{stem}{suffix}", f"skipped: {exc}")
            continue
        problems: list[ImportProblem] = []
        parsed: dict[str, Any] = {}
        for suffix, parse in ((".top", parse_top), (".meta", parse_meta), (".use", parse_use)):
            if suffix not in stems[stem]:
                continue
            path = user_path / f"{stem}{suffix}"
            try:
                parsed[suffix] = parse(read_limited(path, MAX_CRED_FILE, dir_fd=fd), path)
            except FileNotFoundError:
                continue  # removed while we looked: as if never there
            except CredentialFileError as exc:
                problems.append(ImportProblem(path, exc.detail))
        yield FoundCredential(
            user=user,
            name=name,
            top=parsed.get(".top"),
            meta=parsed.get(".meta"),
            use=parsed.get(".use"),
            problems=tuple(problems),
        )
