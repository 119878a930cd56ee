"""The ``.top``, ``.use`` and ``.meta`` files of a credential: their formats, parsed and dumped.

shared/FORMATS.md section 3. Confirmed against HTCondor's source (htcondor/htcondor):
``OAuthCredmonWebserver.py`` writes each file with ``json.dump``: ``.top`` is
``{"refresh_token"}`` plus ``"scopes"`` and ``"audience"`` when not empty, with blanks removed
from both; ``.meta`` is ``{"client_id", "client_secret", "token_url", "use_refresh_token"}``;
``.use`` is the provider's token response without ``refresh_token``; all with Python's
``json.dump`` defaults (one line, ``", "`` and ``": "``, ASCII).
``src/condor_filetransfer_plugins/multifile_curl_plugin.cpp``: a ``.use`` file is read line by
line, each line either a JSON object with ``access_token`` or a bare token, so JSON must stay
on one line. ``store_cred.cpp`` (``LOCAL_STORE_CRED``): a local-issuer ``.top`` holds the user
name, not JSON.

Reading and writing the files in the directory is :mod:`htsec.creds.creddir`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from htsec.creds.names import local_user, split_scopes
from htsec.errors import CredentialError, CredentialFileError

__all__ = [
    "MAX_CRED_FILE",
    "SUFFIXES",
    "MetaFile",
    "TopFile",
    "UseFile",
    "decode_text",
    "dump_meta",
    "dump_top",
    "dump_use",
    "parse_meta",
    "parse_top",
    "parse_use",
    "split_suffix",
]

#: htsec's bound on a ``.top``/``.use``/``.meta`` file (real ones are a few KiB).
MAX_CRED_FILE = 256 * 1024
#: The file kinds of one credential, ``<stem>.top``, ``<stem>.use``, ``<stem>.meta``.
SUFFIXES = (".top", ".use", ".meta")


def split_suffix(filename: str) -> tuple[str, str]:
    """``(stem, suffix)`` of a credential file name; suffix ``""`` for any other file
    (hidden ones, such as :mod:`htsec._fs`'s temporary files, included)."""
    if filename.startswith("."):
        return filename, ""
    for suffix in SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)], suffix
    return filename, ""


# -- JSON helpers ----------------------------------------------------------------------------


def decode_text(data: bytes, path: str | Path) -> str:
    """``data`` as UTF-8 text without NUL, or a :class:`CredentialFileError` naming ``path``."""
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


def _extra(extra: Mapping[str, Any], known: tuple[str, ...]) -> Mapping[str, Any]:
    """The keys a file holds beside the ``known`` ones (kept and written back), frozen."""
    clash = set(extra) & set(known)
    if clash:
        raise TypeError(f"extra may not hold {sorted(clash)}; use the fields")
    return _freeze(extra)


# -- .top ------------------------------------------------------------------------------------


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
        object.__setattr__(self, "extra", _extra(self.extra, _TOP_KEYS))
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
    text = decode_text(data, path)
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
    text = decode_text(data, path)
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
        object.__setattr__(self, "extra", _extra(self.extra, _META_KEYS))

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
    obj = _load_object(decode_text(data, path), path)
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
