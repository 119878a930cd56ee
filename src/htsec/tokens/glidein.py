"""Per-site signing keys and pilot tokens for glidein factories (GlideinWMS style).

FORMATS.md section 7 and seed 002: the frontend signs each site's pilot token with that site's
own key, so replacing one site's key file revokes that site's tokens and no other's. The token
(identity ``<site>@glidein.<frontend host>``, scope READ ADVERTISE_STARTD ADVERTISE_MASTER, 24 h
by default) travels to the factory encrypted to the factory's public key. A pilot is never a
user: its identity may not be ``user@$(UID_DOMAIN)`` (:func:`htsec.authz.credential_owner`), or a
pilot of site ``alice`` would own user alice's credentials.

Envelope: the `age <https://age-encryption.org/v1>`_ format, X25519 recipients, ASCII-armored
(``-----BEGIN AGE ENCRYPTED FILE-----``); the plaintext is exactly the ``<Entry>.idtoken`` file
(token plus newline). A factory can open it with ``htsec glidein unwrap`` or the ``age`` tool
(``age -d -i factory.key``). age was chosen over a home-made X25519+AES-GCM construction because
it is a specified, audited format with independent implementations.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence

import pyrage

from htsec.authz import credential_owner
from htsec.errors import TokenRejected, UsageError
from htsec.tokens.authority import Authority
from htsec.tokens.idtoken import parse_unverified
from htsec.tokens.keys import validate_key_name

__all__ = [
    "PILOT_AUTHZ",
    "generate_identity",
    "mint_pilot_token",
    "parse_recipient",
    "pilot_identity",
    "site_key_name",
    "unwrap",
    "wrap",
]

PILOT_AUTHZ = ("READ", "ADVERTISE_STARTD", "ADVERTISE_MASTER")
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def site_key_name(template: str, site: str) -> str:
    """The key a site's tokens are signed with: ``HTSEC_GLIDEIN_KEY_NAME`` with ``{site}``."""
    if not _SITE.fullmatch(site) or ".." in site:
        raise UsageError(f"site name {site!r} may hold only letters, digits, '.', '_' and '-'")
    return validate_key_name(template.replace("{site}", site))


def pilot_identity(site: str, uid_domain: str, identity: str | None = None) -> str:
    """A site's pilot identity: ``identity``, or ``SITE@glidein.<this host>``; never a user's.

    :raises UsageError: when it would be ``user@$(UID_DOMAIN)``, a user's identity.
    """
    ident = identity or f"{site}@glidein.{socket.getfqdn()}"
    user = credential_owner(ident, uid_domain)
    if user is not None:
        raise UsageError(
            f"pilot identity {ident} is user {user}'s identity (UID_DOMAIN = {uid_domain}): a "
            f"pilot would own {user}'s credentials; give an identity of another domain, e.g. "
            f"{ident.rpartition('@')[0]}@glidein.{uid_domain}"
        )
    return ident


def mint_pilot_token(
    authority: Authority,
    site: str,
    *,
    lifetime: int | None = None,
    identity: str | None = None,
    create_key: bool = True,
) -> tuple[str, str, bool]:
    """Mint a site's pilot token; returns (token, key name, whether the key was created)."""
    settings = authority.settings
    key = site_key_name(settings.glidein_key_name, site)
    ident = pilot_identity(site, settings.uid_domain, identity)
    created = False
    if not authority.keyring.exists(key):
        if not create_key:
            raise UsageError(
                f"site {site} has no signing key; create it with 'htsec key create {key}'"
            )
        authority.keyring.create(key)
        created = True
    token = authority.mint(
        identity=ident,
        key=key,
        lifetime=settings.glidein_lifetime if lifetime is None else lifetime,
        authz=PILOT_AUTHZ,
        via=f"glidein {site}",
    )
    return token, key, created


def parse_recipient(text: str) -> pyrage.x25519.Recipient:
    """An age X25519 recipient (``age1...``), given directly or as the first such line of a file."""
    text = text.strip()
    try:
        return pyrage.x25519.Recipient.from_str(text)
    except Exception:
        raise UsageError(
            f"{text[:20]!r}... is not an age X25519 public key (age1...); the factory makes one "
            "with 'htsec glidein keygen'"
        ) from None


def wrap(token: str, recipients: Sequence[pyrage.x25519.Recipient]) -> bytes:
    """Encrypt ``token`` (as an ``.idtoken`` file) to the recipients, ASCII-armored."""
    return bytes(pyrage.encrypt((token + "\n").encode("ascii"), list(recipients), armored=True))


def generate_identity() -> tuple[str, str]:
    """A new factory key pair: (secret identity ``AGE-SECRET-KEY-1...``, public ``age1...``)."""
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def unwrap(envelope: bytes, identity_text: str) -> str:
    """Decrypt an envelope with the factory's identity; returns the token it carries."""
    idents = []
    for line in identity_text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                idents.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                raise UsageError(
                    "the identity file holds a malformed AGE-SECRET-KEY line"
                ) from None
    if not idents:
        raise UsageError("the identity file holds no AGE-SECRET-KEY line")
    try:
        plain = pyrage.decrypt(envelope, idents)
    except Exception:
        raise UsageError(
            "cannot decrypt: the envelope is damaged or was not made for this factory's key"
        ) from None
    token = bytes(plain).decode("ascii", "replace").strip()
    try:
        parse_unverified(token)
    except TokenRejected as exc:
        raise UsageError(f"the envelope does not hold an ID token: {exc}") from None
    return token
