"""Where the cloud plugins connect and which file a URL names.

:func:`remote_path` turns ``<service>://first/second/name`` into folder and file names, as
HTCondor's own ``box_plugin.py``, ``gdrive_plugin.py`` and ``onedrive_plugin.py`` read it (the
host part is the first folder), refusing traversal before any request. :func:`base_url` gives a
provider's API root, which only the test suite may point elsewhere, and only at this machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse

from htsec.errors import TransferFailed

__all__ = ["base_url", "remote_path"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url(variable: str, default: str) -> str:
    """The provider's base URL: ``default``, or for the test suite only the loopback URL in the
    environment variable ``variable`` (an ``HTSEC_TEST_*`` name, never read from the job's ad).

    A URL that is not on this machine is refused: the override exists for the local fakes of
    tests/plugins/fakes/, and must never send a token anywhere else.
    """
    raw = os.environ.get(variable)
    if not raw:
        return default
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not _loopback(parts.hostname or ""):
        raise TransferFailed(
            f"{variable} is for the test suite and must be an http(s) URL on 127.0.0.1 or "
            f"localhost, not {raw[:80]!r}; unset it"
        )
    return raw.rstrip("/")


_SEGMENT_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


def remote_path(url: str) -> list[str]:
    """The folder names and file name of ``<scheme>://first/second/name`` (HTCondor's cloud
    plugins read the host part as the first folder), percent-decoded.

    Empty segments are skipped; ``.``, ``..`` (also percent-encoded twice), control characters
    and encoded ``/`` or ``\\`` are refused, as are a query or fragment (write ``?`` and ``#``
    in names as ``%3F``, ``%23``).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise TransferFailed(f"{url}: a '?' or '#' in a file name must be written %3F or %23")
    raw = [parts.netloc, *parts.path.split("/")]
    names: list[str] = []
    for segment in raw:
        if not segment:
            continue
        name = urllib.parse.unquote(segment, errors="strict")
        again = urllib.parse.unquote(name)  # encoded twice: refused as if decoded twice
        if name in (".", "..") or _SEGMENT_BAD.search(name) or again in (".", ".."):
            raise TransferFailed(
                f"{url}: path segment {segment!r} is not a plain name ('.', '..', '/', '\\' "
                "and control characters are refused)"
            )
        names.append(name)
    if not names:
        raise TransferFailed(f"{url}: no file name in the URL")
    return names
