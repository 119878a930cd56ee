"""Token files on the client side, as HTCondor reads and writes them.

FORMATS.md section 7 (``src/condor_utils/token_utils.cpp``, ``src/condor_tools/token_list.cpp``):
files in ``SEC_TOKEN_DIRECTORY`` (and ``SEC_TOKEN_SYSTEM_DIRECTORY`` for root) are read in
sorted order, skipping names matching ``LOCAL_CONFIG_DIR_EXCLUDE_REGEXP`` and files not owned by
the user or with group/other mode bits; one token per line, blank and ``#`` lines ignored.
``condor_token_create -token NAME`` writes ``<token dir>/NAME`` mode 0600 (token + newline).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htsec import _fs
from htsec.config import Settings
from htsec.errors import TokenRejected, UsageError

from .idtoken import MAX_TOKEN_BYTES, parse_unverified

__all__ = [
    "TokenFileEntry",
    "iter_token_files",
    "read_token_arg",
    "read_token_file",
    "token_path",
    "write_token",
]

MAX_TOKEN_FILE = 1 << 20


@dataclass
class TokenFileEntry:
    path: Path
    line: int
    token: str = field(repr=False)
    header: dict[str, Any] | None
    payload: dict[str, Any] | None
    error: str | None = None


def token_path(settings: Settings, name: str) -> Path:
    """A bare name goes to the token directory; anything with a ``/`` is a path."""
    if "/" in name:
        return Path(name).expanduser()
    if name in ("", ".", "..") or "\x00" in name:
        raise UsageError(f"bad token file name {name!r}")
    return settings.token_dir / name


def write_token(settings: Settings, name: str, token: str) -> Path:
    path = token_path(settings, name)
    if path.parent == settings.token_dir:
        _fs.ensure_private_dir(path.parent)
    elif not path.parent.is_dir():
        raise UsageError(f"directory {path.parent} does not exist")
    _fs.write_atomic(path, (token + "\n").encode("ascii"), 0o600)
    return path


def _skip_reason(path: Path, exclude: re.Pattern[str] | None) -> str | None:
    if exclude is not None and exclude.search(path.name):
        return "excluded by LOCAL_CONFIG_DIR_EXCLUDE_REGEXP"
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or "unreadable"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not you"
    if st.st_mode & 0o077:
        return f"mode {st.st_mode & 0o777:04o} lets others read it"
    return None


def iter_token_files(settings: Settings) -> Iterator[TokenFileEntry | tuple[Path, str]]:
    """Tokens in the token directories; a skipped file yields ``(path, reason)``."""
    exclude = None
    if settings.exclude_regexp:
        try:
            exclude = re.compile(settings.exclude_regexp)
        except re.error:
            exclude = None
    seen: set[Path] = set()
    for directory in settings.token_dirs():
        if directory in seen or not directory.is_dir():
            continue
        seen.add(directory)
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            why = _skip_reason(path, exclude)
            if why:
                yield (path, why)
                continue
            with open(path, "rb") as fh:
                data = fh.read(MAX_TOKEN_FILE)
            for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    header, payload = parse_unverified(line)
                    yield TokenFileEntry(path, n, line, header, payload)
                except TokenRejected as exc:
                    yield TokenFileEntry(path, n, line, None, None, str(exc))


def _is_file_argument(value: str) -> bool:
    """Whether a command-line value names a file: it exists, or it is written as a path.

    Tokens are base64url with dots, so they never contain ``/``; a value without one that is
    not an existing file is a token, however malformed (``A.B``), and verification says why.
    """
    if "/" in value or value.startswith("~"):
        return True
    if len(value) > 255 or "\x00" in value:
        return False
    try:
        return Path(value).exists()
    except OSError:
        return False


def _first_token_line(text: str, where: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            return line
    raise UsageError(f"no token found in {where}")


def _read_file(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_TOKEN_FILE).decode("utf-8", "replace")
    except OSError as exc:
        raise UsageError(f"cannot read token file {path}: {exc.strerror}") from None


def read_token_arg(value: str) -> str:
    """A token given on the command line: the token itself, ``-`` for stdin, or a file."""
    import sys

    if value == "-":
        return _first_token_line(sys.stdin.read(MAX_TOKEN_BYTES * 4), "standard input")
    if not _is_file_argument(value):
        return value.strip()
    path = Path(value).expanduser()
    return _first_token_line(_read_file(path), str(path))


def read_token_file(value: str) -> str:
    """The token in the file ``value`` (``-``: standard input) for ``--token-file``.

    A token itself is refused: on a command line it is visible to every user in ``ps``.
    """
    import sys

    if value == "-":
        return _first_token_line(sys.stdin.read(MAX_TOKEN_BYTES * 4), "standard input")
    path = Path(value).expanduser()
    if not _is_file_argument(value):
        looks = value.count(".") == 2 or len(value) > 255
        raise UsageError(
            "--token-file takes a file, not a token: a token on the command line is visible "
            "to every user in 'ps'; save it in a file (mode 0600) or in the token directory"
            if looks
            else f"token file {value} does not exist"
        )
    return _first_token_line(_read_file(path), str(path))
