"""Which token a plugin URL needs, and reading it from ``$_CONDOR_CREDS``.

The starter installs one ``<name>.use`` file per token the job asked for (single-line JSON with
``access_token``, as HTCondor writes it) and replaces it when the credmon refreshes the token,
so a plugin reads the file again before every request (:func:`bearer`) and keeps no copy.

Two naming forms exist (FORMATS.md section 6; HTCondor's box/gdrive/onedrive plugins and
``multifile_curl_plugin.cpp`` ``GetToken``):

* ``service`` (box, gdrive, onedrive): ``<handle>+<service>://...`` -> ``<service>_<handle>.use``,
  ``<service>://...`` -> ``<service>.use``;
* ``cred`` (https, davs): ``<cred>[.<handle>]+https://...`` -> ``<cred>[_<handle>].use`` (every
  ``.`` of the part before the last ``+`` becomes ``_``); plain ``https://`` sends no token.

Nothing here looks anywhere but ``$_CONDOR_CREDS``: no home directory, no token discovery.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Literal

from htsec.errors import TransferFailed

__all__ = ["MAX_TOKEN_FILE", "TokenForm", "bearer", "read_token", "split_scheme", "token_name"]

#: The largest ``.use`` file read (a JWT with many claims is a few KiB).
MAX_TOKEN_FILE = 64 * 1024
#: The longest token file name accepted (HTCondor's names are far shorter).
_MAX_NAME = 200

TokenForm = Literal["service", "cred"]

# RFC 3986 scheme characters (ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CRED_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")
# What may go into an Authorization header: RFC 6750 b64token is narrower, but an opaque
# token of any visible ASCII is sent as is; control characters and spaces never are.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


def _auth_error(message: str) -> TransferFailed:
    return TransferFailed(
        message, kind="Authorization", failure_type="Authentication", error_code=1
    )


def split_scheme(url: str) -> tuple[str, str]:
    """``(prefix, method)`` of ``url``'s scheme: the text before its last ``+`` and the method
    after it (``work+box://x`` -> ``("work", "box")``; ``https://x`` -> ``("", "https")``).

    :raises TransferFailed: (``Parameter``) when ``url`` has no valid scheme.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise TransferFailed(f"not a URL with a scheme: {url[:200]!r}", kind="Parameter")
    prefix, _, method = scheme.rpartition("+")
    return prefix, method.lower()


def token_name(url: str, form: TokenForm) -> str | None:
    """The stem of the ``.use`` file ``url`` needs, or None when it needs no token (only in the
    ``cred`` form, for a plain ``https://`` or ``davs://`` URL).

    :raises TransferFailed: (``Parameter``) for a scheme that names no valid token file.
    """
    prefix, method = split_scheme(url)
    if form == "service":
        if not prefix:
            return method
        if "+" in prefix or not _PART_RE.fullmatch(prefix):
            raise TransferFailed(
                f"bad token handle {prefix!r} in {method}:// URL: expected <handle>+{method}://",
                kind="Parameter",
            )
        name = f"{method}_{prefix}"
    else:
        if not prefix:
            return None
        name = prefix.replace(".", "_")
        if not _CRED_RE.fullmatch(name):
            raise TransferFailed(
                f"bad credential name {prefix!r} in URL: expected <cred>[.<handle>]+{method}://",
                kind="Parameter",
            )
    if len(name) > _MAX_NAME:
        raise TransferFailed(f"token name longer than {_MAX_NAME} characters", kind="Parameter")
    return name


def _read_bounded(directory: str, filename: str) -> bytes:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(
            filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
        )
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _auth_error(f"{os.path.join(directory, filename)} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_TOKEN_FILE:
            chunk = os.read(fd, MAX_TOKEN_FILE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_TOKEN_FILE:
        raise _auth_error(
            f"{os.path.join(directory, filename)} is larger than {MAX_TOKEN_FILE} bytes"
        )
    return b"".join(chunks)


def _parse(data: bytes, path: str) -> str:
    """The access token in a ``.use`` file: the first line that is neither blank nor a ``#``
    comment, either JSON with ``access_token`` or the bare token (as ``GetToken`` accepts).
    Messages never quote the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _auth_error(f"{path} is not UTF-8 text") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line[0] in "{[":
            try:
                doc = json.loads(line)
            except ValueError:
                raise _auth_error(f"{path} is not valid JSON") from None
            token = doc.get("access_token") if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise _auth_error(f"{path} has no access_token")
        else:
            token = line
        if not _TOKEN_RE.fullmatch(token):
            raise _auth_error(f"{path}: the access token holds characters a header cannot")
        return token
    raise _auth_error(f"{path} holds no token")


def read_token(name: str) -> str:
    """The access token in ``$_CONDOR_CREDS/<name>.use``, read now (never cached).

    Opened without following a symlink at the file, refused when not a regular file or over
    :data:`MAX_TOKEN_FILE` bytes.

    :raises TransferFailed: (``Authorization``) when the variable is unset, the file is missing,
        unreadable, too large or holds no token; the message names the file, never its content.
    """
    directory = os.environ.get("_CONDOR_CREDS", "")
    filename = f"{name}.use"
    if not directory:
        raise _auth_error(
            f"no credential directory for {filename}: $_CONDOR_CREDS is not set "
            "(does the job's submit file request the service in use_oauth_services?)"
        )
    path = os.path.join(directory, filename)
    try:
        data = _read_bounded(directory, filename)
    except FileNotFoundError:
        raise _auth_error(
            f"no token file {path} (does the job's submit file request this service and "
            "handle in use_oauth_services?)"
        ) from None
    except OSError as exc:
        raise _auth_error(f"cannot read {path}: {exc.strerror}") from None
    return _parse(data, path)


def bearer(url: str, form: TokenForm) -> str | None:
    """The token ``url`` needs, read from its ``.use`` file now; None when it needs none."""
    name = token_name(url, form)
    return None if name is None else read_token(name)
