"""Pending web logins: the ClassAd files the credd leaves for HTCondor's OAuth web server.

shared/FORMATS.md section 3. Confirmed against HTCondor's source (htcondor/htcondor):
``src/condor_credd/credd.cpp`` (``check_creds_continue``): a pending web login is
``<root>/<64 lowercase hex>`` holding one old-syntax ClassAd per missing token, separated by
blank lines, mode ``0640`` (the web server reads it through group ``condor``).
``OAuthCredmon.py`` (``cleanup_key_files``): the credmon removes such a file 12 h after its
ctime. Where the files live is :class:`htsec.creds.creddir.CredDir`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from htsec.creds.files import decode_text
from htsec.creds.names import TokenName, check_name_part
from htsec.errors import BadCredentialName, CredentialError, CredentialFileError

__all__ = [
    "MAX_PENDING_FILE",
    "PENDING_MAX_AGE",
    "PendingLogin",
    "check_key",
    "dump_pending",
    "is_key",
    "parse_pending",
    "pending_url",
]

#: The credmon removes pending-login files older than this (``OAuthCredmon.cleanup_key_files``).
PENDING_MAX_AGE = 12 * 3600
#: htsec's bound on a pending-login file.
MAX_PENDING_FILE = 64 * 1024

# OAuthCredmon.cleanup_key_files: key_file_re; credd writes randomHexKey(32) with "%02x".
_KEY_RE = re.compile(r"[0-9a-f]{64}")

# (attribute, field) in the order credd.cpp check_creds_continue assigns them.
_PENDING_ATTRS = (
    ("Provider", "provider"),
    ("LocalUser", "local_user"),
    ("Handle", "handle"),
    ("Scopes", "scopes"),
    ("Audience", "audience"),
    ("ClientId", "client_id"),
    ("ClientSecret", "client_secret"),
    ("ReturnUrl", "return_url"),
    ("AuthorizationUrl", "authorization_url"),
    ("TokenUrl", "token_url"),
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, repr=False)
class PendingLogin:
    """One token a user still has to log in for: one ClassAd of a ``<root>/<64 hex>`` file.

    Old-syntax ClassAds cannot carry a newline inside a string (``printOld`` writes it raw and
    the parser then drops the attribute), and the credd cuts a client secret at its first
    control character; so no value may hold a control character.

    :raises BadCredentialName: for a provider, handle or user HTCondor would refuse.
    :raises CredentialError: for a value with a control character.
    """

    provider: str
    local_user: str
    handle: str = ""
    scopes: str = ""
    audience: str = ""
    client_id: str = ""
    client_secret: str = ""
    return_url: str = ""
    authorization_url: str = ""
    token_url: str = ""

    def __post_init__(self) -> None:
        for attr, name in _PENDING_ATTRS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str")
            if _CONTROL_RE.search(value):
                raise CredentialError(f"pending login {attr} holds a control character")
        TokenName(self.provider, self.handle)
        # The web server joins the root with LocalUser as is, so it must be a bare local name.
        check_name_part("LocalUser", self.local_user)

    @property
    def name(self) -> TokenName:
        return TokenName(self.provider, self.handle)

    def __repr__(self) -> str:
        return (
            f"PendingLogin(provider={self.provider!r}, handle={self.handle!r}, "
            f"local_user={self.local_user!r}, scopes={self.scopes!r}, "
            f"audience={self.audience!r}, client_id={self.client_id!r}, client_secret=[secure])"
        )


def dump_pending(logins: Sequence[PendingLogin]) -> bytes:
    """The bytes of a pending-login file: old-syntax ClassAds separated by blank lines.

    Each ``Attr = "value"`` line comes from :mod:`classad2`'s own old-syntax printer (one
    attribute at a time, so the order is the credd's); the result is parsed back and compared
    before it is returned.
    """
    import classad2

    if not logins:
        raise TypeError("a pending-login file holds at least one login")
    ads = []
    for login in logins:
        ads.append(
            "".join(
                classad2.ClassAd({attr: getattr(login, name)}).printOld()
                for attr, name in _PENDING_ATTRS
            )
        )
    data = "\n".join(ads).encode("utf-8")
    if parse_pending(data) != list(logins):  # pragma: no cover - guarded by the checks above
        raise CredentialError("pending login does not survive a ClassAd round trip")
    return data


def parse_pending(data: bytes, path: str | Path = "<pending login>") -> list[PendingLogin]:
    """Parse a pending-login file (one ClassAd per token) with :mod:`classad2`.

    ``Provider`` and ``LocalUser`` are required; other attributes default to ``""`` as the
    web server's ``ad.get(..., "")`` does. Every present attribute must be a literal string;
    expressions are never evaluated.

    :raises CredentialFileError: for anything else.
    """
    import classad2

    text = decode_text(data, path)
    try:
        ads = list(classad2.parseAds(text))
    except Exception as exc:  # the C++ parser reports bad input with several exception types
        raise CredentialFileError(path, f"not a list of ClassAds ({type(exc).__name__})") from None
    if not ads:
        raise CredentialFileError(path, "holds no ClassAd")
    out = []
    for n, ad in enumerate(ads, 1):
        values: dict[str, str] = {}
        for attr, name in _PENDING_ATTRS:
            if attr not in ad:
                if attr in ("Provider", "LocalUser"):
                    raise CredentialFileError(path, f"ad {n} has no {attr}")
                continue
            value = ad.get(attr)
            if not isinstance(value, str):
                raise CredentialFileError(path, f"ad {n}: {attr} is not a string literal")
            values[name] = value
        try:
            out.append(PendingLogin(**values))
        except CredentialError as exc:
            raise CredentialFileError(path, f"ad {n}: {exc}") from None
    return out


def pending_url(web_prefix: str, key: str) -> str:
    """The URL condor_submit shows: ``<CREDMON_WEB_PREFIX>/key/<key>`` (credd.cpp, verbatim)."""
    check_key(key)
    return f"{web_prefix}/key/{key}"


def check_key(key: str) -> str:
    """``key`` if it names a pending-login file (what the credd writes and the credmon cleans).

    :raises BadCredentialName: otherwise.
    """
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise BadCredentialName("a pending-login key is 64 lowercase hex digits")
    return key


def is_key(name: str) -> bool:
    """Is the file name ``name`` a pending-login key?"""
    return _KEY_RE.fullmatch(name) is not None
