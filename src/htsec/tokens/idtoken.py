"""HTCondor ID tokens (IDTOKENS): minting and strict verification.

What HTCondor mints (FORMATS.md section 7; ``src/condor_io/condor_auth_passwd.cpp``
``generate_token``): a JWS compact serialization (RFC 7515 section 7.1), base64url without
padding, HS256, header exactly ``{"alg":"HS256","kid":"<key>"}``, payload with sorted keys
written compactly by picojson (``/`` as ``\\/``, control characters and DEL as ``\\u00xx``,
other UTF-8 raw) holding ``exp`` (only with a lifetime), ``iat``, ``iss`` (the trust domain),
``jti`` (32 lowercase hex digits), ``scope`` (only with authorizations) and ``sub``.

htsec's verifier is stricter than an HTCondor daemon on purpose (DESIGN.md invariants) and still
accepts every token HTCondor mints: HS256 only, no ``crit``/``jku``/``jwk``/``x5u``/``x5c``,
``kid`` a plain existing key name, at most 8 KiB, ``iss`` equal to ``TRUST_DOMAIN``, ``iat`` at
most 60 s ahead, not expired (no leeway, like HTCondor), not revoked.
"""

from __future__ import annotations

import binascii
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from htsec._b64 import b64url_decode, b64url_encode
from htsec._time import utc_text
from htsec.errors import BadKeyName, FileSecurityError, HtsecError, TokenRejected, UsageError
from htsec.tokens.keys import Keyring, SigningKey, validate_key_name

__all__ = [
    "AUTHORIZATIONS",
    "MAX_TOKEN_BYTES",
    "VerifiedToken",
    "Verifier",
    "condor_json",
    "mint",
    "normalize_authz",
    "parse_unverified",
    "scope_of",
]

#: Tokens larger than this are refused before any parsing (DESIGN.md invariants).
MAX_TOKEN_BYTES = 8 * 1024
#: How far in the future ``iat`` may be (clock skew between hosts).
MAX_IAT_SKEW = 60
#: HTCondor's authorization levels that may appear as ``condor:/LEVEL`` in ``scope``
#: (``src/condor_includes/condor_perms.h``).
AUTHORIZATIONS = (
    "ALLOW",
    "READ",
    "WRITE",
    "NEGOTIATOR",
    "ADMINISTRATOR",
    "OWNER",
    "CONFIG",
    "DAEMON",
    "ADVERTISE_STARTD",
    "ADVERTISE_SCHEDD",
    "ADVERTISE_MASTER",
)
_FORBIDDEN_HEADERS = ("crit", "jku", "jwk", "x5u", "x5c")
MAX_LIFETIME = 10 * 365 * 86400
# The 43rd character of a 32-byte signature carries 4 bits: its 2 low bits must be zero.
_SIG_LAST = b"AEIMQUYcgkosw048"
_MAX_TIME = 2**53  # times beyond JSON's exact integers are nonsense (and overflow time.gmtime)
_SCOPE_PREFIX = "condor:/"


def condor_json(obj: Mapping[str, Any]) -> bytes:
    """Serialize like HTCondor's picojson writer: sorted keys, compact, ``/`` as ``\\/``.

    Python's encoder already writes ``\\b \\f \\n \\r \\t``, other control characters as
    lowercase ``\\u00xx`` and passes other UTF-8 through with ``ensure_ascii=False``; picojson
    additionally escapes ``/`` and DEL (0x7f), which never occur inside another escape.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("/", "\\/").replace("\x7f", "\\u007f").encode("utf-8")


def normalize_authz(authz: Iterable[str]) -> list[str]:
    """Upper-case, check and de-duplicate authorization names, keeping their order."""
    out: list[str] = []
    for item in authz:
        name = item.strip().upper()
        if name.startswith(_SCOPE_PREFIX.upper()):
            name = name[len(_SCOPE_PREFIX) :]
        if name not in AUTHORIZATIONS:
            raise UsageError(
                f"unknown authorization {item!r}; choose from {', '.join(AUTHORIZATIONS)}"
            )
        if name not in out:
            out.append(name)
    return out


_MINT_HEADERS: dict[str, str] = {}
_HEADER_CACHE = 256


def mint(
    key: SigningKey,
    *,
    issuer: str,
    subject: str,
    lifetime: int | None = None,
    authz: Sequence[str] = (),
    now: int | None = None,
    jti: str | None = None,
) -> str:
    """Mint an ID token exactly as ``condor_token_create`` does.

    ``lifetime`` None means no ``exp`` (HTCondor's default); 0 is a token that expires at once.
    ``authz`` becomes ``scope = "condor:/A condor:/B"`` in the given order.
    """
    if not issuer or " " in issuer or "," in issuer:
        raise UsageError(f"trust domain {issuer!r} must be non-empty without spaces or commas")
    iat = int(time.time()) if now is None else int(now)
    claims: dict[str, Any] = {
        "iat": iat,
        "iss": issuer,
        "jti": jti if jti is not None else secrets.token_hex(16),
        "sub": subject,
    }
    if lifetime is not None:
        if not 0 <= lifetime <= MAX_LIFETIME:
            raise UsageError(
                f"lifetime must be 0 to {MAX_LIFETIME} seconds (10 years); "
                "leave it out for a token without expiry"
            )
        claims["exp"] = iat + int(lifetime)
    if authz:
        claims["scope"] = " ".join(_SCOPE_PREFIX + a for a in authz)
    header = _MINT_HEADERS.get(key.name)
    if header is None:
        header = b64url_encode(condor_json({"alg": "HS256", "kid": key.name}))
        if len(_MINT_HEADERS) < _HEADER_CACHE:
            _MINT_HEADERS[key.name] = header
    signing_input = header + "." + b64url_encode(condor_json(claims))
    signature = hmac.digest(key.hmac_key, signing_input.encode("ascii"), "sha256")
    return signing_input + "." + b64url_encode(signature)


def scope_of(claims: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The ``condor:/`` authorizations of a token; None when it is not restricted."""
    scope = claims.get("scope")
    if not isinstance(scope, str):
        return None
    # HTCondor's server splits the scope on commas as well as whitespace.
    items = scope.replace(",", " ").split()
    return tuple(item[len(_SCOPE_PREFIX) :] for item in items if item.startswith(_SCOPE_PREFIX))


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed verification, with its claims."""

    kid: str
    issuer: str
    subject: str
    jti: str
    iat: int
    exp: int | None
    claims: Mapping[str, Any] = field(repr=False)
    header: Mapping[str, Any] = field(repr=False)

    @property
    def authorizations(self) -> tuple[str, ...] | None:
        return scope_of(self.claims)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k!r}")
        out[k] = v
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates)


def _json_object(segment: bytes, what: str) -> dict[str, Any]:
    try:
        raw = b64url_decode(segment)
    except (ValueError, binascii.Error):
        raise TokenRejected("malformed", f"the token's {what} is not base64url") from None
    try:
        obj = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TokenRejected("malformed", f"the token's {what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise TokenRejected("malformed", f"the token's {what} is not a JSON object")
    return obj


def _split(token: str | bytes) -> tuple[bytes, bytes, bytes]:
    if isinstance(token, str):
        try:
            raw = token.strip().encode("ascii")
        except UnicodeEncodeError:
            raise TokenRejected("malformed", "a token holds only ASCII characters") from None
    elif isinstance(token, bytes | bytearray):
        raw = bytes(token).strip()
    else:
        raise TokenRejected("malformed", "a token must be text")
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenRejected(
            "too_large", f"the token is {len(raw)} bytes, over the {MAX_TOKEN_BYTES}-byte limit"
        )
    parts = raw.split(b".")
    if len(parts) != 3 or not all(parts):
        raise TokenRejected(
            "malformed", "not a signed JWT: expected three base64url parts separated by '.'"
        )
    return parts[0], parts[1], parts[2]


def parse_unverified(token: str | bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a token without checking it, for listings only."""
    h, p, _ = _split(token)
    return _json_object(h, "header"), _json_object(p, "payload")


def _int_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    if name not in claims:
        if required:
            raise TokenRejected("bad_claims", f"the token has no '{name}' claim")
        return None
    value = claims[name]
    if type(value) is not int:  # null, bool, float: refused (absent is how "none" is said)
        raise TokenRejected("bad_claims", f"the token's '{name}' claim is not an integer")
    if not 0 <= value <= _MAX_TIME:
        raise TokenRejected("bad_claims", f"the token's '{name}' claim is out of range")
    return value


def _str_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise TokenRejected("bad_claims", f"the token's '{name}' claim is missing or empty")
    return value


def _check_header(h64: bytes) -> tuple[Mapping[str, Any], str]:
    """Parse and check a JOSE header; returns it and its ``kid``."""
    header = _json_object(h64, "header")
    # RFC 7515 section 4.1.1: the algorithm comes from our allowlist, never the header.
    alg = header.get("alg")
    if alg != "HS256":
        raise TokenRejected(
            "bad_algorithm", f"algorithm {alg!r} is not allowed; ID tokens use HS256 only"
        )
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise TokenRejected("forbidden_header", f"header parameter '{name}' is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("bad_kid", "the token has no key id ('kid')")
    return header, kid


RevocationCheck = Callable[[VerifiedToken], "str | None"]


class Verifier:
    """Checks ID tokens as an HTCondor daemon with this configuration would, more strictly.

    ``revocation`` is called with a token whose signature and claims passed; it returns None or
    a sentence saying why the token is revoked.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        trust_domain: str,
        max_age: int | None = None,
        revocation: RevocationCheck | None = None,
        skew: int = MAX_IAT_SKEW,
    ) -> None:
        self.keyring = keyring
        self.trust_domain = trust_domain
        self.max_age = max_age
        self.revocation = revocation
        self.skew = skew
        # Headers repeat across all tokens of a key: remember the checked ones (bounded).
        self._headers: dict[bytes, tuple[Mapping[str, Any], str]] = {}

    def _key(self, kid: str) -> SigningKey:
        try:
            validate_key_name(kid)
        except BadKeyName:
            raise TokenRejected(
                "bad_kid", f"the token's key id {kid!r} is not a plain key name"
            ) from None
        try:
            return self.keyring.get(kid)
        except FileSecurityError as exc:
            raise TokenRejected("key_unusable", f"key {kid!r} cannot be used: {exc}") from None
        except HtsecError:
            raise TokenRejected(
                "unknown_key", f"the token names key {kid!r}, which does not exist here"
            ) from None

    def verify(self, token: str | bytes, *, now: float | None = None) -> VerifiedToken:
        """Return the verified token or raise :class:`TokenRejected` with the precise reason."""
        h64, p64, s64 = _split(token)
        cached = self._headers.get(h64)
        if cached is None:
            cached = _check_header(h64)
            if len(self._headers) >= _HEADER_CACHE:
                self._headers.clear()
            self._headers[h64] = cached
        header, kid = cached
        key = self._key(kid)
        try:
            signature = b64url_decode(s64)
        except (ValueError, binascii.Error):
            raise TokenRejected("malformed", "the token's signature is not base64url") from None
        # One token, one spelling: unused low bits of the last character must be zero
        # (RFC 4648 section 3.5), or several strings would carry the same signature.
        if len(s64) != 43 or s64[-1:] not in _SIG_LAST:
            raise TokenRejected("malformed", "the token's signature is not canonical base64url")
        expected = hmac.digest(key.hmac_key, h64 + b"." + p64, "sha256")
        if not hmac.compare_digest(signature, expected):
            raise TokenRejected(
                "bad_signature", f"the signature does not match key {kid!r} (wrong or rotated key)"
            )
        claims = _json_object(p64, "payload")
        issuer = _str_claim(claims, "iss")
        jti = _str_claim(claims, "jti")
        subject = _str_claim(claims, "sub")
        iat = _int_claim(claims, "iat", required=True)
        exp = _int_claim(claims, "exp", required=False)
        scope = claims.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise TokenRejected("bad_claims", "the token's 'scope' claim is not a string")
        assert iat is not None
        if issuer != self.trust_domain:
            raise TokenRejected(
                "wrong_issuer",
                f"issuer {issuer!r} is not this pool's trust domain {self.trust_domain!r}",
            )
        t = time.time() if now is None else now
        if iat > t + self.skew:
            raise TokenRejected(
                "future_iat", f"issued {int(iat - t)} s in the future (more than {self.skew} s)"
            )
        if exp is not None and t > exp:
            raise TokenRejected("expired", f"expired at {utc_text(exp)}")
        if self.max_age is not None and t - iat > self.max_age:
            raise TokenRejected(
                "too_old", f"issued more than SEC_TOKEN_MAX_AGE = {self.max_age} s ago"
            )
        verified = VerifiedToken(
            kid=kid,
            issuer=issuer,
            subject=subject,
            jti=jti,
            iat=iat,
            exp=exp,
            claims=claims,
            header=header,
        )
        if self.revocation is not None:
            why = self.revocation(verified)
            if why:
                raise TokenRejected("revoked", why)
        return verified
