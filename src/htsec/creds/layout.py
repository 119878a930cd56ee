"""HTCondor's OAuth credential directory (``SEC_CREDENTIAL_DIRECTORY_OAUTH``), read and written.

shared/FORMATS.md section 3. The directory is the contract between HTCondor's credd, schedd,
shadow, starter and any credmon; htsec writes it as an output of its store and reads an
existing one to import it. Confirmed against HTCondor's source (htcondor/htcondor):

- ``src/condor_utils/store_cred.cpp`` (``okay_for_oauth_filename``, ``OAUTH_STORE_CRED``):
  user, service and handle names use only ``A-Za-z0-9`` and ``- + = _ .``; the file stem is
  ``<service>`` or ``<service>_<handle>``; the root should be ``2770 root:condor`` and user
  directories are made ``0700``.
- ``credmon/utils/utils.py`` (``VALID_PROVIDER_NAME_CHARS_RE``, ``get_cred_dir``,
  ``atomic_rename``, ``drop_pid``, ``credmon_complete``) and ``OAuthCredmon.py``: since HTCondor
  25.13.2 provider (service) names are only ``A-Za-z0-9-`` unless
  ``CREDMON_ALLOW_SPECIAL_CHAR_NAMES`` (which disables handles): the credmon splits a stem at its
  first ``_``; credential files are renamed into place with mode ``0400``; the credmon refuses a
  root that "other" can access; pending-login files are ``[a-f0-9]{64}`` and removed 12 h after
  their ctime.
- ``OAuthCredmonWebserver.py`` (run as user ``condor``): it makes a user directory with
  ``os.makedirs`` (default mode: ``2755`` under umask 022 in a ``2770`` root) and writes each
  file with ``mkstemp`` in that directory, ``json.dump``, ``chmod 0400`` and ``rename``;
  ``.top`` is ``{"refresh_token"}`` plus ``"scopes"`` and ``"audience"`` when not empty, with
  blanks removed from both; ``.meta`` is ``{"client_id", "client_secret", "token_url",
  "use_refresh_token"}``; ``.use`` is the provider's token response without ``refresh_token``;
  all written with Python's ``json.dump`` defaults (one line, ``", "`` and ``": "``, ASCII).
- ``src/condor_utils/credmon_interface.cpp``: ``<root>/<user>.mark`` (user name cut at its first
  ``@``) is created ``0600`` only when the user directory exists, never re-created if present,
  and the user is swept once ``now - mtime >= SEC_CREDENTIAL_SWEEP_DELAY`` (3600); a ``.mark``
  that is a directory is skipped; ``<root>/pid`` is read as at most 255 bytes of decimal;
  ``CREDMON_COMPLETE`` is unlinked and touched.
- ``src/condor_credd/credd.cpp`` (``check_creds_continue``): a pending web login is
  ``<root>/<64 lowercase hex>`` holding one old-syntax ClassAd per missing token, separated by
  blank lines, mode ``0640`` (the web server reads it through group ``condor``).
- ``src/condor_shadow.V6.1/NTreceivers.cpp`` (``CONDOR_getcreds``): the shadow reads
  ``<root>/<Owner>/<stem>.use`` as root and refuses it unless owned by the shadow's uid with no
  group or other bits (``read_secure_file``); ``src/condor_utils/cred_dir.cpp`` and
  ``src/condor_starter.V6.1/jic_shadow.cpp``: the starter writes ``<sandbox>/.condor_creds/
  <stem>.use`` as the job user, mode ``0600``, and points ``_CONDOR_CREDS`` at it.
- ``src/condor_filetransfer_plugins/multifile_curl_plugin.cpp``: a ``.use`` file is read line by
  line, each line either a JSON object with ``access_token`` or a bare token, so JSON must stay
  on one line.

Every write goes through :mod:`htsec._fs` (temporary file with its final mode, fsync, rename,
fsync of the directory).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pwd
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from htsec import _fs
from htsec.errors import (
    BadCredentialName,
    CredentialError,
    CredentialFileError,
    FileSecurityError,
)

__all__ = [
    "CREDMON_COMPLETE",
    "MAX_CRED_FILE",
    "MAX_NAME",
    "MAX_PENDING_FILE",
    "PENDING_MAX_AGE",
    "SWEEP_DELAY",
    "CredDir",
    "FoundCredential",
    "ImportProblem",
    "MetaFile",
    "PendingLogin",
    "TokenName",
    "TopFile",
    "UseFile",
    "deliver",
    "dump_meta",
    "dump_pending",
    "dump_top",
    "dump_use",
    "import_dir",
    "local_user",
    "parse_meta",
    "parse_pending",
    "parse_top",
    "parse_use",
    "pending_url",
    "split_scopes",
]

#: ``SEC_CREDENTIAL_SWEEP_DELAY`` default (``credmon_interface.cpp``).
SWEEP_DELAY = 3600
#: The credmon removes pending-login files older than this (``OAuthCredmon.cleanup_key_files``).
PENDING_MAX_AGE = 12 * 3600
#: Name of the file a credmon deletes when a pass starts and touches when it ends.
CREDMON_COMPLETE = "CREDMON_COMPLETE"
#: htsec's bound on a ``.top``/``.use``/``.meta`` file (real ones are a few KiB).
MAX_CRED_FILE = 256 * 1024
#: htsec's bound on a pending-login file.
MAX_PENDING_FILE = 64 * 1024
#: htsec's bound on a user name or token stem: leaves room for ``.meta`` and _fs's temp name
#: (``.<name>.<12 hex>.tmp``) under the usual 255-byte file-name limit.
MAX_NAME = 200

_CRED_MODE = 0o400  # credmon atomic_rename(mode=S_IRUSR)
_USER_DIR_MODE = 0o700  # store_cred.cpp mkdir(user_cred_path, 0700)
_EFFECTIVE_IDS = os.access in os.supports_effective_ids
_ROOT_MODE = 0o2770  # store_cred.cpp comment; credmon get_cred_dir makes S_ISGID|0770
_MARK_MODE = 0o600  # credmon_mark_creds_for_sweeping: safe_fcreate_keep_if_exists(..., 0600)
_PENDING_MODE = 0o640  # credd.cpp write_secure_file(..., group_readable=true)
_PUBLIC_MODE = 0o644  # pid and CREDMON_COMPLETE: Python open() under umask 022
_SANDBOX_MODE = 0o600  # cred_dir.cpp: replace_secure_file as the job user
_MAX_PID_FILE = 255  # credmon_kick: a read of 256 bytes or more is ignored

# store_cred.cpp okay_for_oauth_filename: isalpha/isdigit (C locale, so ASCII) and "-+=_.".
_FILENAME_RE = re.compile(r"[A-Za-z0-9\-+=_.]+")
# credmon/utils/utils.py VALID_PROVIDER_NAME_CHARS_RE (HTCondor >= 25.13.2 default).
_SERVICE_RE = re.compile(r"[A-Za-z0-9\-]+")
# OAuthCredmon.cleanup_key_files: key_file_re; credd writes randomHexKey(32) with "%02x".
_KEY_RE = re.compile(r"[0-9a-f]{64}")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); HTCondor joins scopes
# with "," so a scope may not contain one either.
_SCOPE_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]+")
_SUFFIXES = (".top", ".use", ".meta")
_Kind = Literal["top", "use", "meta"]


# -- names -----------------------------------------------------------------------------------


def _check_filename_part(what: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise BadCredentialName(f"{what} is empty")
    if len(value) > MAX_NAME:
        raise BadCredentialName(f"{what} is longer than {MAX_NAME} characters")
    if not pattern.fullmatch(value):
        raise BadCredentialName(f"{what} {value!r} is not accepted by HTCondor: {rule}")
    if value in (".", "..") and what != "handle":  # a handle is only ever part of a stem
        raise BadCredentialName(f"{what} {value!r} would name a directory, not a file")
    return value


def local_user(user: str) -> str:
    """The local user name for a directory: ``user`` cut at its first ``@``, validated.

    ``credmon_interface.cpp`` ``credmon_user_filename`` drops everything from the first ``@``;
    ``store_cred.cpp`` then refuses any character outside ``A-Za-z0-9-+=_.``. htsec also refuses
    ``.`` and ``..`` (which that check lets through) and names over :data:`MAX_NAME`.

    :raises BadCredentialName: for a name HTCondor would refuse or that leaves the directory.
    """
    if not isinstance(user, str):
        raise TypeError(f"user must be a str, not {type(user).__name__}")
    return _check_filename_part(
        "user name", user.split("@", 1)[0], _FILENAME_RE, "only A-Za-z0-9 and - + = _ ."
    )


@dataclass(frozen=True, order=True)
class TokenName:
    """One credential of a user: a service (provider) and an optional handle.

    Files use the stem ``<service>`` or ``<service>_<handle>``; the job ad
    (``OAuthServicesNeeded``) and the wire use ``<service>*<handle>``
    (``submit_utils.cpp``, ``NTreceivers.cpp`` ``CONDOR_getcreds``)::

        >>> TokenName("box", "read").stem, TokenName.parse_wire("box*read").stem
        ('box_read', 'box_read')

    The service is ``A-Za-z0-9-`` (HTCondor's credmon since 25.13.2 splits a stem at its first
    ``_``, so a service with ``_`` would never be refreshed); a handle is ``A-Za-z0-9-+=_.``
    (``store_cred.cpp`` ``okay_for_oauth_filename``); an empty handle means "none".

    :raises BadCredentialName: for names HTCondor would refuse.
    """

    service: str
    handle: str = ""

    def __post_init__(self) -> None:
        _check_filename_part(
            "service name",
            self.service,
            _SERVICE_RE,
            "only A-Za-z0-9 and - (the credmon splits file names at the first _; "
            "see CREDMON_ALLOW_SPECIAL_CHAR_NAMES)",
        )
        if not isinstance(self.handle, str):
            raise TypeError(f"handle must be a str, not {type(self.handle).__name__}")
        if self.handle:
            _check_filename_part(
                "handle", self.handle, _FILENAME_RE, "only A-Za-z0-9 and - + = _ ."
            )
        if len(self.stem) > MAX_NAME:
            raise BadCredentialName(f"token name is longer than {MAX_NAME} characters")

    @property
    def stem(self) -> str:
        """The file-name form, ``service`` or ``service_handle``."""
        return f"{self.service}_{self.handle}" if self.handle else self.service

    @property
    def wire(self) -> str:
        """The job-ad form, ``service`` or ``service*handle``."""
        return f"{self.service}*{self.handle}" if self.handle else self.service

    def __str__(self) -> str:
        return self.wire

    @classmethod
    def parse_wire(cls, text: str) -> TokenName:
        """Parse ``service`` or ``service*handle`` (split at the first ``*``)."""
        if not isinstance(text, str):
            raise TypeError(f"token name must be a str, not {type(text).__name__}")
        service, star, handle = text.partition("*")
        if star and not handle:
            raise BadCredentialName(f"token name {text!r} has an empty handle after '*'")
        return cls(service, handle)

    @classmethod
    def parse_stem(cls, text: str) -> TokenName:
        """Parse a file stem ``service`` or ``service_handle`` (split at the first ``_``).

        A stem ending in ``_`` is refused, as the credmon skips it (``OAuthCredmon.py``).
        """
        if not isinstance(text, str):
            raise TypeError(f"token stem must be a str, not {type(text).__name__}")
        service, sep, handle = text.partition("_")
        if sep and not handle:
            raise BadCredentialName(f"token file stem {text!r} has an empty handle after '_'")
        return cls(service, handle)


# -- JSON helpers ----------------------------------------------------------------------------


def _decode(data: bytes, path: str | Path) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialFileError(
            path, f"not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    if "\x00" in text:
        raise CredentialFileError(path, "contains a NUL character")
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Parsers disagree on which duplicate wins; a smuggled second key is refused.
            raise ValueError("an object has the same key twice")
        out[key] = value
    return out


def _finite_float(text: str) -> float:
    """``1e400`` parses to infinity, which no JSON writer can write back (a rotated refresh
    token could then not be mirrored into the ``.top``): refused like ``Infinity``."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _load_object(text: str, path: str | Path) -> dict[str, Any]:
    try:
        obj = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_pairs,
        )
    except json.JSONDecodeError as exc:
        # exc.msg and the position only; str(exc) never quotes the document, but be explicit.
        raise CredentialFileError(
            path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise CredentialFileError(path, "not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # our hooks, or an integer with too many digits
        raise CredentialFileError(path, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CredentialFileError(path, f"holds a JSON {type(obj).__name__}, not an object")
    return obj


def _dump_json(obj: Mapping[str, Any]) -> bytes:
    # json.dump's defaults, as HTCondor's Python credmon and web server write these files:
    # separators ", " and ": ", ensure_ascii (so the result is ASCII and one line: every
    # control character inside a string is escaped), no trailing newline.
    text = json.dumps(dict(obj), allow_nan=False)
    assert "\n" not in text and "\r" not in text
    return text.encode("ascii")


def _opt_str(obj: Mapping[str, Any], key: str, path: str | Path) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise CredentialFileError(path, f'"{key}" is a JSON {type(value).__name__}, not a string')
    return value


def _freeze(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


# -- .top ------------------------------------------------------------------------------------


def split_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes as a tuple: a string is split at commas and blanks, empty items dropped.

    HTCondor keeps scopes as one comma-separated string (the web server removes blanks, the
    credd stores what condor_submit sent); both read back to the same tuple here.

    :raises CredentialError: for a scope that is not an RFC 6749 scope-token or holds a comma.
    """
    items = re.split(r"[,\s]+", scopes) if isinstance(scopes, str) else list(scopes)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"scopes must be strings, not {type(item).__name__}")
        if not item:
            continue
        if not _SCOPE_RE.fullmatch(item):
            raise CredentialError(
                f"scope {item!r} is not an OAuth scope-token without commas (RFC 6749 3.3)"
            )
        out.append(item)
    return tuple(out)


_TOP_KEYS = ("refresh_token", "scopes", "audience")


@dataclass(frozen=True, repr=False)
class TopFile:
    """``<stem>.top``: the refresh token and what it was granted for.

    JSON ``{"refresh_token": ..., "scopes": "<a,b>", "audience": ...}``; keys htsec does not
    know (a Vault credmon's ``vault_token``/``vault_url`` ...) are kept in ``extra`` and written
    back. A local-issuer ``.top`` is not JSON: the credd writes the user name into it and only
    its existence matters (``store_cred.cpp`` ``LOCAL_STORE_CRED``); such a file reads as
    ``placeholder`` (its text), see :meth:`local`.

    ``refresh_token`` is None when the key is absent and ``""`` when the provider gave none
    (the web server writes an empty string then). ``audience`` is written as given: the web
    server deletes blanks from it, which turns a list of audiences into one wrong string.
    """

    refresh_token: str | None = None
    scopes: tuple[str, ...] = ()
    audience: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    placeholder: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", split_scopes(self.scopes))
        if self.refresh_token is not None and not isinstance(self.refresh_token, str):
            raise TypeError("refresh_token must be a str or None")
        if not isinstance(self.audience, str):
            raise TypeError("audience must be a str")
        clash = set(self.extra) & set(_TOP_KEYS)
        if clash:
            raise TypeError(f"extra may not hold {sorted(clash)}; use the fields")
        object.__setattr__(self, "extra", _freeze(self.extra))
        if self.placeholder is not None and (
            self.refresh_token is not None or self.scopes or self.audience or self.extra
        ):
            raise TypeError("a placeholder .top holds nothing else")

    @classmethod
    def local(cls, user: str) -> TopFile:
        """The placeholder the credd writes for a local-issuer or client-credentials service."""
        return cls(placeholder=local_user(user))

    def __repr__(self) -> str:
        if self.placeholder is not None:
            return f"TopFile(placeholder={self.placeholder!r})"
        token = "None" if self.refresh_token is None else "[secure]"
        return (
            f"TopFile(refresh_token={token}, scopes={self.scopes!r}, "
            f"audience={self.audience!r}, extra_keys={sorted(self.extra)!r})"
        )


def parse_top(data: bytes, path: str | Path = "<.top>") -> TopFile:
    """Parse a ``.top`` file; text that does not start with ``{`` is a placeholder.

    :raises CredentialFileError: for bad UTF-8, bad JSON or a known key of the wrong type.
    """
    text = _decode(data, path)
    if not text.lstrip().startswith("{"):
        return TopFile(placeholder=text)
    obj = _load_object(text, path)
    refresh = _opt_str(obj, "refresh_token", path)
    scopes = _opt_str(obj, "scopes", path) or ""
    audience = _opt_str(obj, "audience", path) or ""
    try:
        return TopFile(
            refresh_token=refresh,
            scopes=split_scopes(scopes),
            audience=audience,
            extra={k: v for k, v in obj.items() if k not in _TOP_KEYS},
        )
    except CredentialError as exc:
        raise CredentialFileError(path, str(exc)) from None


def dump_top(top: TopFile) -> bytes:
    """The bytes of a ``.top`` file: known keys first, then ``extra`` in its order."""
    if top.placeholder is not None:
        return top.placeholder.encode("utf-8")
    obj: dict[str, Any] = {}
    if top.refresh_token is not None:
        obj["refresh_token"] = top.refresh_token
    if top.scopes:
        obj["scopes"] = ",".join(top.scopes)
    if top.audience:
        obj["audience"] = top.audience
    obj.update(top.extra)
    return _dump_json(obj)


# -- .use ------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True, repr=False)
class UseFile:
    """``<stem>.use``: what a job gets, the token response without the refresh token.

    ``fields`` keeps the provider's keys and order (``access_token``, ``token_type``,
    ``expires_in``, maybe ``expires_at``, ``scope`` ...). ``bare`` is a file holding only the
    token on one line, as the local issuer writes with ``LOCAL_CREDMON_TOKEN_USE_JSON = False``.

    :raises CredentialError: if ``fields`` has a ``refresh_token`` or no string ``access_token``.
    """

    fields: Mapping[str, Any]
    bare: bool = False

    def __post_init__(self) -> None:
        if "refresh_token" in self.fields:
            raise CredentialError(
                "a .use file must not hold a refresh_token: HTCondor copies it into every "
                "job sandbox; strip it with UseFile.from_response()"
            )
        token = self.fields.get("access_token")
        if not isinstance(token, str):
            raise CredentialError('a .use file needs a string "access_token"')
        if self.bare and (set(self.fields) != {"access_token"} or not _bare_ok(token)):
            raise CredentialError("a bare .use token is one line without blanks")
        object.__setattr__(self, "fields", _freeze(self.fields))

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> UseFile:
        """A provider's token response minus ``refresh_token`` (the web server's ``pop``)."""
        return cls({k: v for k, v in response.items() if k != "refresh_token"})

    @classmethod
    def bare_token(cls, token: str) -> UseFile:
        return cls({"access_token": token}, bare=True)

    @property
    def access_token(self) -> str:
        token: str = self.fields["access_token"]
        return token

    @property
    def token_type(self) -> str | None:
        value = self.fields.get("token_type")
        return value if isinstance(value, str) else None

    @property
    def expires_in(self) -> float | None:
        """Seconds of validity at issue; the credmon accepts numbers and numeric strings."""
        return _number(self.fields.get("expires_in"))

    @property
    def expires_at(self) -> float | None:
        """Absolute expiry (epoch seconds) if the writer recorded it (requests-oauthlib does)."""
        return _number(self.fields.get("expires_at"))

    @property
    def scope(self) -> str | None:
        value = self.fields.get("scope")
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        # Only these keys are known to be harmless; tokens (access, id ...) and anything
        # unknown are masked.
        public = ("token_type", "expires_in", "expires_at", "scope")
        shown = {k: (v if k in public else "[secure]") for k, v in self.fields.items()}
        return f"UseFile(fields={shown!r}, bare={self.bare})"


def _bare_ok(token: str) -> bool:
    return not any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in token)


def parse_use(data: bytes, path: str | Path = "<.use>") -> UseFile:
    """Parse a ``.use`` file: one line of JSON with ``access_token``, or one bare token.

    Like HTCondor's curl plugin, blank lines and lines starting with ``#`` are skipped. A JSON
    document that spans several lines is refused (the plugin would fail on it), and so is one
    that holds a ``refresh_token``.

    :raises CredentialFileError: for anything HTCondor's readers would not accept.
    """
    text = _decode(data, path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        # The local issuer writes an empty token (just "\n") to deny a user; keep it as such.
        return UseFile.bare_token("")
    first = lines[0].strip()
    if first.startswith(("{", "[")):
        if len(lines) > 1:
            raise CredentialFileError(
                path, "JSON spans several lines; HTCondor's curl plugin reads one line"
            )
        obj = _load_object(first, path)
        try:
            return UseFile(obj)
        except CredentialError as exc:
            raise CredentialFileError(path, str(exc)) from None
    if len(lines) > 1 or not _bare_ok(first):
        raise CredentialFileError(path, "neither one line of JSON nor one bare token")
    return UseFile.bare_token(first)


def dump_use(use: UseFile | Mapping[str, Any]) -> bytes:
    """The bytes of a ``.use`` file: one line of JSON (no newline), or ``token\\n`` if bare.

    :raises CredentialError: for a mapping that holds ``refresh_token``.
    """
    if not isinstance(use, UseFile):
        use = UseFile(use)
    if use.bare:
        return (use.access_token + "\n").encode("utf-8")
    return _dump_json(use.fields)


# -- .meta -----------------------------------------------------------------------------------

_META_KEYS = ("client_id", "client_secret", "token_url", "use_refresh_token")


@dataclass(frozen=True, repr=False)
class MetaFile:
    """``<stem>.meta``: how HTCondor's OAuth credmon refreshes the token.

    HTCondor stores ``client_secret`` here in clear; htsec keeps secrets in its store and
    writes the file without it (``client_secret=None``). Such a file is only right for services
    htsec refreshes: HTCondor's ``OAuthCredmon.refresh_access_token`` indexes
    ``["client_secret"]`` and would fail. ``use_refresh_token`` false means "never refresh"
    (``OAuthCredmon.should_renew``); an absent key reads as true, as there.
    """

    client_id: str | None = None
    client_secret: str | None = None
    token_url: str | None = None
    use_refresh_token: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("client_id", "client_secret", "token_url"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{key} must be a str or None")
        if not isinstance(self.use_refresh_token, bool):
            raise TypeError("use_refresh_token must be a bool")
        clash = set(self.extra) & set(_META_KEYS)
        if clash:
            raise TypeError(f"extra may not hold {sorted(clash)}; use the fields")
        object.__setattr__(self, "extra", _freeze(self.extra))

    def __repr__(self) -> str:
        secret = "None" if self.client_secret is None else "[secure]"
        return (
            f"MetaFile(client_id={self.client_id!r}, client_secret={secret}, "
            f"token_url={self.token_url!r}, use_refresh_token={self.use_refresh_token}, "
            f"extra_keys={sorted(self.extra)!r})"
        )


def parse_meta(data: bytes, path: str | Path = "<.meta>") -> MetaFile:
    """Parse a ``.meta`` file.

    :raises CredentialFileError: for bad UTF-8, bad JSON or a known key of the wrong type.
    """
    obj = _load_object(_decode(data, path), path)
    use_refresh = obj.get("use_refresh_token", True)
    if not isinstance(use_refresh, bool):
        raise CredentialFileError(path, '"use_refresh_token" is not true or false')
    return MetaFile(
        client_id=_opt_str(obj, "client_id", path),
        client_secret=_opt_str(obj, "client_secret", path),
        token_url=_opt_str(obj, "token_url", path),
        use_refresh_token=use_refresh,
        extra={k: v for k, v in obj.items() if k not in _META_KEYS},
    )


def dump_meta(meta: MetaFile) -> bytes:
    """The bytes of a ``.meta`` file, keys in the web server's order; None fields left out."""
    obj: dict[str, Any] = {}
    if meta.client_id is not None:
        obj["client_id"] = meta.client_id
    if meta.client_secret is not None:
        obj["client_secret"] = meta.client_secret
    if meta.token_url is not None:
        obj["token_url"] = meta.token_url
    obj["use_refresh_token"] = meta.use_refresh_token
    obj.update(meta.extra)
    return _dump_json(obj)


# -- pending web logins ----------------------------------------------------------------------

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
        _check_filename_part(
            "LocalUser", self.local_user, _FILENAME_RE, "only A-Za-z0-9 and - + = _ ."
        )

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

    text = _decode(data, path)
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
    _check_key(key)
    return f"{web_prefix}/key/{key}"


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise BadCredentialName("a pending-login key is 64 lowercase hex digits")
    return key


# -- reading files ---------------------------------------------------------------------------


def _check_user_dir(
    path: Path, st: os.stat_result, root: os.stat_result, owner: int | None = None
) -> None:
    """Is ``path`` (``st``, not following a link) a user directory htsec may publish into?

    HTCondor makes user directories in two ways: condor_credd (``store_cred.cpp``) ``0700``
    as root, and its OAuth web server (``OAuthCredmonWebserver.py``) with ``os.makedirs`` as
    user ``condor``: ``2755`` under umask 022 in a ``2770`` root. What keeps their files
    private is the root without "other" bits and the files' own ``0400``; so a user directory
    is refused only when someone else could change what is in it: group or others may write
    it, or it belongs to a uid that could not write the root anyway (root, this process, the
    root's owner or, for a group-writable root, a member of its group can) and is not
    ``owner``, the one htsec gives its own files.
    """
    _check_root_mode(path.parent, root)
    if not stat.S_ISDIR(st.st_mode):
        raise FileSecurityError(
            f"user credential directory {path} is not a directory (a symlink or a file); "
            f"fix: replace it with a directory (mkdir -m 700 {path})"
        )
    if st.st_mode & 0o022:
        raise FileSecurityError(
            f"user credential directory {path} has mode {stat.S_IMODE(st.st_mode):04o}: group "
            f"or others may write into it and replace its tokens; fix: chmod go-w {path}"
        )
    if st.st_uid != owner and not _may_write_root(st.st_uid, root):
        raise FileSecurityError(
            f"user credential directory {path} belongs to uid {st.st_uid}, who cannot write "
            f"the credential directory and should not own a user's tokens; "
            f"fix: chown {os.geteuid()} {path}"
        )


def _check_root_mode(root_path: Path, st: os.stat_result) -> None:
    if st.st_mode & 0o007:
        raise FileSecurityError(
            f"credential directory {root_path} has mode {stat.S_IMODE(st.st_mode):04o}: others "
            f"have access, and HTCondor's credmon refuses to run then; "
            f"fix: chown root:condor {root_path} && chmod 2770 {root_path}"
        )


def _may_write_root(uid: int, root: os.stat_result) -> bool:
    if uid in (0, os.geteuid(), root.st_uid):
        return True
    return bool(root.st_mode & stat.S_IWGRP) and _in_group(uid, root.st_gid)


@functools.lru_cache(maxsize=1024)
def _in_group(uid: int, gid: int) -> bool:
    """Is ``uid`` a member of ``gid`` (primary or supplementary)? Cached: the name service
    may be LDAP, and a pass asks once per user directory."""
    try:
        user = pwd.getpwuid(uid)
        return gid in os.getgrouplist(user.pw_name, user.pw_gid)
    except (KeyError, OSError):
        return False


def _read_limited(
    path: Path, limit: int, *, dir_fd: int | None = None, owners: Iterable[int] | None = None
) -> bytes:
    """Read a regular file of at most ``limit`` bytes, never through a symlink or a FIFO
    (with ``dir_fd``: ``path``'s name in that open directory; with ``owners``: only a file
    one of those uids owns).

    :raises FileNotFoundError: if it does not exist (callers turn that into None).
    :raises CredentialFileError: for everything else that stops the read.
    """
    try:
        fd = os.open(
            path.name if dir_fd is not None else path,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=dir_fd,
        )
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise CredentialFileError(path, "is a symbolic link; refusing to follow it") from None
        raise CredentialFileError(path, f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialFileError(path, "is not a regular file")
        if owners is not None and st.st_uid not in set(owners):
            raise CredentialFileError(path, f"is owned by uid {st.st_uid}, not by the credmon")
        if st.st_size > limit:
            raise CredentialFileError(path, f"is larger than {limit} bytes")
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise CredentialFileError(path, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise CredentialFileError(path, f"is larger than {limit} bytes")
    return b"".join(chunks)


# -- the directory ---------------------------------------------------------------------------


class CredDir:
    """HTCondor's OAuth credential directory at ``root`` (``SEC_CREDENTIAL_DIRECTORY_OAUTH``).

    ::

        creds = CredDir("/var/lib/condor/oauth_credentials", gid=condor_gid)
        creds.check_root()
        name = TokenName("box", "read")
        creds.store("alice@example.org", name, top=..., meta=..., use=...)

    Layout: ``<root>/<user>/`` (0700; 2755 when HTCondor's web server made it) holds
    ``<stem>.top``, ``<stem>.use`` and ``<stem>.meta`` (0400 each); ``<root>/<user>.mark``
    (0600), ``<root>/<64 hex>`` pending logins (0640), ``<root>/pid`` and
    ``<root>/CREDMON_COMPLETE`` (0644). ``uid``/``gid``, when given, own every file and
    directory htsec creates (the shadow insists that ``.use`` files belong to its own uid,
    root in a root install, ``NTreceivers.cpp``).

    User arguments may carry ``@domain``; it is dropped, as HTCondor does.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, uid: int | None = None, gid: int | None = None
    ) -> None:
        self.root = Path(root)
        self.uid = uid
        self.gid = gid

    def __repr__(self) -> str:
        return f"CredDir({str(self.root)!r}, uid={self.uid}, gid={self.gid})"

    # root ----------------------------------------------------------------------------------

    def check_root(self) -> None:
        """Refuse a root that HTCondor's credmon would refuse (``credmon/utils`` get_cred_dir).

        :raises FileSecurityError: if it is missing, not a directory, open to "other" in any
            way, or not readable, writable and searchable by this process.
        """
        root = self.root
        fix = f"fix: chown root:condor {root} && chmod 2770 {root}"
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise FileSecurityError(
                f"credential directory {root} does not exist; "
                f"create it: mkdir -m 2770 {root} && chown root:condor {root}"
            ) from None
        except OSError as exc:
            raise FileSecurityError(f"cannot inspect {root}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise FileSecurityError(f"credential directory {root} is not a directory")
        _check_root_mode(root, st)
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise FileSecurityError(
                f"credential directory {root} is not readable, writable and searchable by "
                f"uid {os.geteuid()}; {fix} and run htsec as root or in group condor"
            )

    def ensure_root(self) -> None:
        """Create the root as ``2770`` (owned by ``uid``/``gid``) if missing, then check it.

        :raises CredentialError: if the parent directory does not exist.
        :raises FileSecurityError: as :meth:`check_root`.
        """
        if not self.root.parent.is_dir():
            raise CredentialError(
                f"cannot create {self.root}: {self.root.parent} is not a directory"
            )
        _fs.make_dir(self.root, _ROOT_MODE, uid=self.uid, gid=self.gid)
        self.check_root()

    # names and paths -----------------------------------------------------------------------

    def user_dir(self, user: str) -> Path:
        """``<root>/<local user>`` (not created)."""
        return self.root / local_user(user)

    def path(self, user: str, name: TokenName, kind: _Kind) -> Path:
        """``<root>/<user>/<stem>.<kind>``."""
        if kind not in ("top", "use", "meta"):
            raise TypeError(f"kind must be top, use or meta, not {kind!r}")
        if not isinstance(name, TokenName):
            raise TypeError("name must be a TokenName")
        return self.user_dir(user) / f"{name.stem}.{kind}"

    def ensure_user_dir(self, user: str) -> Path:
        """Create ``<root>/<user>`` as 0700 or check an existing one (see :meth:`check_user_dir`).

        :raises FileSecurityError: if it is unsafe to write into.
        """
        path = self.user_dir(user)
        if not _fs.make_dir(path, _USER_DIR_MODE, uid=self.uid, gid=self.gid):
            _check_user_dir(path, os.lstat(path), self._root_stat(), self.uid)
        return path

    def check_user_dir(self, user: str) -> None:
        """Could ``user``'s files be written now? The credmon asks before it redeems a refresh
        token, so that a new one is never fetched into a directory it cannot publish to.

        The directory may be missing (it is then created ``0700``); an existing one must be a
        real directory that group and others cannot write, owned by someone who can write the
        root anyway, and writable by this process -- HTCondor's ``0700`` and its web server's
        ``2755`` both qualify.

        :raises FileSecurityError: with the fix, for a directory that is not fit.
        """
        root = self._root_stat()
        path = self.user_dir(user)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path = self.root  # created on the first write: the root must take it
        else:
            _check_user_dir(path, st, root, self.uid)
        if not os.access(path, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE_IDS):
            raise FileSecurityError(
                f"{path} is not writable by uid {os.geteuid()}; fix: run the credmon as the "
                f"directory's owner or as root (chown {os.geteuid()} {path})"
            )

    def _root_stat(self) -> os.stat_result:
        try:
            return os.stat(self.root)
        except OSError as exc:
            raise FileSecurityError(
                f"cannot inspect the credential directory {self.root}: {exc.strerror}"
            ) from None

    def users(self) -> list[str]:
        """Names of the user directories (invalid names skipped; see :func:`import_dir`)."""
        out = []
        for entry in _scandir(self.root):
            if entry.is_dir(follow_symlinks=False) and _valid_user(entry.name):
                out.append(entry.name)
        return sorted(out)

    def names(self, user: str) -> list[TokenName]:
        """Tokens of ``user`` that have any of ``.top``/``.use``/``.meta`` (invalid skipped)."""
        found = set()
        for entry in _scandir(self.user_dir(user)):
            stem, suffix = _split_suffix(entry.name)
            if suffix:
                try:
                    found.add(TokenName.parse_stem(stem))
                except BadCredentialName:
                    continue
        return sorted(found)

    # credential files ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _user_dir_fd(self, user: str, *, write: bool) -> Iterator[int]:
        """The user's directory, opened without following a symlink: what is then written,
        read or removed relative to it cannot be redirected by swapping the directory
        meanwhile. For ``write`` it is created if missing and checked on the open descriptor
        (see :func:`_check_user_dir`).

        :raises FileNotFoundError: if it does not exist (and ``write`` is false).
        """
        if write:
            self.ensure_user_dir(user)
        path = self.user_dir(user)
        fd = _fs.open_dir(path)
        try:
            if write:
                _check_user_dir(path, os.fstat(fd), self._root_stat(), self.uid)
            yield fd
        finally:
            os.close(fd)

    def _write(self, user: str, name: TokenName, kind: _Kind, data: bytes) -> Path:
        path = self.path(user, name, kind)
        with self._user_dir_fd(user, write=True) as fd:
            _fs.write_atomic(path, data, _CRED_MODE, uid=self.uid, gid=self.gid, dir_fd=fd)
        return path

    def write_top(
        self, user: str, name: TokenName, top: TopFile, *, keep_unknown: bool = True
    ) -> Path:
        """Write ``<stem>.top`` (0400, atomically).

        With ``keep_unknown`` the keys of an existing readable ``.top`` that ``top`` does not
        set survive (another credmon's additions); a corrupt old file is simply replaced.
        """
        if keep_unknown and top.placeholder is None:
            try:
                old = self.read_top(user, name)
            except CredentialFileError:
                old = None
            if old is not None and old.extra:
                merged = {**old.extra, **top.extra}
                top = TopFile(top.refresh_token, top.scopes, top.audience, merged)
        return self._write(user, name, "top", dump_top(top))

    def write_use(self, user: str, name: TokenName, use: UseFile | Mapping[str, Any]) -> Path:
        """Write ``<stem>.use`` (0400, one line, atomically).

        :raises CredentialError: if ``use`` holds a ``refresh_token``.
        """
        return self._write(user, name, "use", dump_use(use))

    def write_meta(self, user: str, name: TokenName, meta: MetaFile) -> Path:
        """Write ``<stem>.meta`` (0400, atomically)."""
        return self._write(user, name, "meta", dump_meta(meta))

    def store(
        self,
        user: str,
        name: TokenName,
        *,
        top: TopFile | None = None,
        meta: MetaFile | None = None,
        use: UseFile | Mapping[str, Any] | None = None,
    ) -> None:
        """Write the given files in the order ``.meta``, ``.top``, ``.use``.

        The credd and schedd take the appearance of ``.use`` as "stored and ready"
        (``CREDD_POLLING_TIMEOUT``), so it goes last, after everything it depends on.
        """
        if use is not None:
            dump_use(use)  # refuse a refresh_token before anything is written
        if meta is not None:
            self.write_meta(user, name, meta)
        if top is not None:
            self.write_top(user, name, top)
        if use is not None:
            self.write_use(user, name, use)

    def rotate_refresh_token(self, user: str, name: TokenName, refresh_token: str) -> TopFile:
        """Replace the refresh token in ``.top``, keeping scopes, audience and unknown keys.

        :raises CredentialError: if there is no ``.top`` or it is a placeholder.
        :raises CredentialFileError: if it cannot be read.
        """
        old = self.read_top(user, name)
        if old is None or old.placeholder is not None:
            raise CredentialError(f"{user}/{name.stem}.top holds no refresh token to replace")
        new = TopFile(refresh_token, old.scopes, old.audience, old.extra)
        self.write_top(user, name, new, keep_unknown=False)
        return new

    def _read(self, user: str, name: TokenName, kind: _Kind) -> tuple[Path, bytes] | None:
        path = self.path(user, name, kind)
        try:
            with self._user_dir_fd(user, write=False) as fd:
                return path, _read_limited(path, MAX_CRED_FILE, dir_fd=fd)
        except FileNotFoundError:
            return None
        except FileSecurityError as exc:
            raise CredentialFileError(path, str(exc)) from None

    def read_top(self, user: str, name: TokenName) -> TopFile | None:
        """The parsed ``.top``, or None if there is none.

        :raises CredentialFileError: if it is unreadable, too large or malformed.
        """
        got = self._read(user, name, "top")
        return None if got is None else parse_top(got[1], got[0])

    def read_use(self, user: str, name: TokenName) -> UseFile | None:
        """The parsed ``.use``, or None (see :func:`parse_use`)."""
        got = self._read(user, name, "use")
        return None if got is None else parse_use(got[1], got[0])

    def read_meta(self, user: str, name: TokenName) -> MetaFile | None:
        """The parsed ``.meta``, or None (see :func:`parse_meta`)."""
        got = self._read(user, name, "meta")
        return None if got is None else parse_meta(got[1], got[0])

    def delete(self, user: str, name: TokenName) -> bool:
        """Remove ``.use``, ``.top`` and ``.meta`` (in that order); True if any existed.

        The credd's delete removes only ``.top`` and ``.use``; htsec also drops ``.meta``,
        which nothing reads without them.
        """
        kinds: tuple[_Kind, ...] = ("use", "top", "meta")
        removed = False
        try:
            with self._user_dir_fd(user, write=False) as fd:
                for kind in kinds:
                    removed |= _fs.remove(self.path(user, name, kind), dir_fd=fd)
        except FileNotFoundError:  # no user directory: nothing to remove
            return False
        return removed

    # mark and sweep ------------------------------------------------------------------------

    def mark_path(self, user: str) -> Path:
        return self.root / f"{local_user(user)}.mark"

    def touch_mark(self, user: str) -> bool:
        """Mark ``user`` for sweeping as the schedd does when the user has no jobs left.

        Nothing happens if the user has no directory; an existing mark keeps its mtime
        (``safe_fcreate_keep_if_exists``). True if a mark was created.
        """
        if not self.user_dir(user).is_dir():
            return False
        return _fs.touch(
            self.mark_path(user), _MARK_MODE, update_mtime=False, uid=self.uid, gid=self.gid
        )

    def clear_mark(self, user: str) -> bool:
        """Remove the mark (the credd does on every store, query or delete for the user)."""
        return _fs.remove(self.mark_path(user))

    def mark_time(self, user: str) -> float | None:
        """The mark's mtime, or None if there is no mark file (a directory is no mark)."""
        try:
            st = os.lstat(self.mark_path(user))
        except FileNotFoundError:
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_mtime

    def sweepable(self, *, now: float | None = None, delay: float = SWEEP_DELAY) -> list[str]:
        """Users whose mark is at least ``delay`` seconds old (``process_cred_mark_dir``)."""
        now = time.time() if now is None else now
        out = []
        for entry in _scandir(self.root):
            if not entry.name.endswith(".mark") or entry.is_dir(follow_symlinks=False):
                continue
            user = entry.name[: -len(".mark")]
            if not _valid_user(user):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if now - mtime >= delay:
                out.append(user)
        return sorted(out)

    # pending web logins --------------------------------------------------------------------

    def pending_path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def write_pending(self, logins: Sequence[PendingLogin], *, key: str | None = None) -> str:
        """Write a pending-login file (0640 for the web server's group); returns its key."""
        key = secrets.token_hex(32) if key is None else _check_key(key)
        _fs.write_atomic(
            self.pending_path(key), dump_pending(logins), _PENDING_MODE, uid=self.uid, gid=self.gid
        )
        return key

    def read_pending(self, key: str) -> list[PendingLogin] | None:
        """The logins in ``<root>/<key>``, or None if there is no such file.

        :raises CredentialFileError: if it is unreadable or malformed.
        """
        path = self.pending_path(key)
        try:
            data = _read_limited(path, MAX_PENDING_FILE)
        except FileNotFoundError:
            return None
        return parse_pending(data, path)

    def pending_keys(self) -> list[str]:
        return sorted(
            e.name
            for e in _scandir(self.root)
            if _KEY_RE.fullmatch(e.name) and not e.is_dir(follow_symlinks=False)
        )

    def stale_pending(
        self, *, now: float | None = None, max_age: float = PENDING_MAX_AGE
    ) -> list[str]:
        """Keys whose file's ctime is more than ``max_age`` ago (``cleanup_key_files``)."""
        now = time.time() if now is None else now
        out = []
        for key in self.pending_keys():
            try:
                ctime = os.lstat(self.root / key).st_ctime
            except FileNotFoundError:
                continue
            if now - ctime > max_age:
                out.append(key)
        return out

    def remove_pending(self, key: str) -> bool:
        return _fs.remove(self.pending_path(key))

    # pid and CREDMON_COMPLETE --------------------------------------------------------------

    def write_pid(self, pid: int | None = None) -> None:
        """Write ``<root>/pid`` (decimal, no newline, 0644) so the credd can SIGHUP us."""
        pid = os.getpid() if pid is None else pid
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise TypeError("pid must be a positive int")
        _fs.write_atomic(
            self.root / "pid", str(pid).encode("ascii"), _PUBLIC_MODE, uid=self.uid, gid=self.gid
        )

    def read_pid(self) -> int | None:
        """The credmon's pid from ``<root>/pid``, or None if there is no file.

        Parsed as the credd does (``credmon_kick``): leading blanks, then decimal digits. The
        root is group-writable by design, so the file is read without blocking (a FIFO is
        refused), never through a symlink, at most 255 bytes, and only if it is owned by the
        credmon's user: ``uid`` when given, else ours, or root.

        :raises CredentialFileError: if it is too long, not a regular file of the credmon's
            user, or holds no positive number.
        """
        path = self.root / "pid"
        owners = {os.geteuid(), 0} if self.uid is None else {self.uid, 0}
        try:
            data = _read_limited(path, _MAX_PID_FILE, owners=owners)
        except FileNotFoundError:
            return None
        match = re.match(rb"\s*\+?([0-9]{1,9})", data)
        if not match or int(match.group(1)) <= 0:
            raise CredentialFileError(path, "holds no positive process id")
        return int(match.group(1))

    def clear_complete(self) -> bool:
        """Remove ``CREDMON_COMPLETE`` at the start of a pass; True if it existed."""
        return _fs.remove(self.root / CREDMON_COMPLETE)

    def touch_complete(self) -> None:
        """Create or touch ``CREDMON_COMPLETE`` at the end of a pass."""
        _fs.touch(self.root / CREDMON_COMPLETE, _PUBLIC_MODE, uid=self.uid, gid=self.gid)

    def is_complete(self) -> bool:
        return (self.root / CREDMON_COMPLETE).exists()


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _valid_user(name: str) -> bool:
    try:
        return local_user(name) == name
    except BadCredentialName:
        return False


def _split_suffix(filename: str) -> tuple[str, str]:
    if filename.startswith("."):  # _fs temporary files and other hidden files
        return filename, ""
    for suffix in _SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)], suffix
    return filename, ""


# -- import ----------------------------------------------------------------------------------


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
        if not _valid_user(entry.name):
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
        stem, suffix = _split_suffix(entry.name)
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
                parsed[suffix] = parse(_read_limited(path, MAX_CRED_FILE, dir_fd=fd), path)
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


# -- delivery to a job -----------------------------------------------------------------------


def deliver(
    sandbox_creds_dir: str | os.PathLike[str],
    name: TokenName | str,
    use_json: UseFile | Mapping[str, Any],
    *,
    uid: int | None = None,
    gid: int | None = None,
    mode: int = _SANDBOX_MODE,
) -> Path:
    """Write ``<sandbox_creds_dir>/<stem>.use`` for a job, as the starter does.

    The starter (``cred_dir.cpp`` ``WriteToCredDir`` via ``jic_shadow.cpp``) writes each
    token the job ad's ``OAuthServicesNeeded`` names into ``<sandbox>/.condor_creds`` as the
    job user, mode 0600, and sets ``_CONDOR_CREDS`` to that directory. ``name`` may be a
    :class:`TokenName` or its wire form ``svc*handle``. A missing directory is created 0700
    (HTCondor uses 0755; nothing but the job needs to look inside).

    :raises CredentialError: if ``use_json`` holds a ``refresh_token`` (jobs get access
        tokens only) or the sandbox does not exist.
    """
    if not isinstance(name, TokenName):
        name = TokenName.parse_wire(name)
    if isinstance(use_json, Mapping) and "refresh_token" in use_json:
        raise CredentialError(
            f"refusing to deliver {name.wire}: the token holds a refresh_token, and jobs get "
            "access tokens only"
        )
    data = dump_use(use_json)
    directory = Path(sandbox_creds_dir)
    if not directory.parent.is_dir():
        raise CredentialError(f"cannot deliver into {directory}: the sandbox does not exist")
    if not _fs.make_dir(directory, 0o700, uid=uid, gid=gid):
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise FileSecurityError(f"{directory} is not a directory (a symlink or a file)")
    path = directory / f"{name.stem}.use"
    _fs.write_atomic(path, data, mode, uid=uid, gid=gid)
    return path
