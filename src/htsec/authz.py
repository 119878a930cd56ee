"""What a caller's ID token grants, and whose credentials it reaches: one decision for every
route and command.

**Authorizations imply others**, as in HTCondor. ``src/condor_utils/condor_perms.cpp``,
``DCpermissionHierarchy::aImpliedNext``, gives for each level the next one it implies (WRITE ->
READ; ADMINISTRATOR -> WRITE; DAEMON -> WRITE; NEGOTIATOR, CONFIG and ADVERTISE_STARTD /
ADVERTISE_SCHEDD / ADVERTISE_MASTER -> READ; the rest imply nothing). A token's ``scope``
limits it to the listed ``condor:/`` levels and everything they imply
(``daemon_command.cpp``: each level of ``LimitAuthorization`` is followed through
``nextImplied``; names are matched case-insensitively by ``getPermissionFromString`` and unknown
ones are dropped; a command at level ALLOW is always let through). A token without any
``condor:/`` item is not limited (``condor_auth_passwd.cpp`` sets no ``LimitAuthorization``);
HTCondor then grants what its ``ALLOW_*`` lists give the identity. htsec has no such lists: an
unlimited token gets what ``use SECURITY : recommended_v9_0`` gives every authenticated
identity, ``ALLOW_READ = *`` and ``ALLOW_WRITE = *``; ADMINISTRATOR, DAEMON and the other
levels must be named in the scope (or implied by a level that is).

**Credentials belong to** ``user@$(UID_DOMAIN)`` (:func:`credential_owner`). The user part is
what HTCondor's IDTOKENS authentication makes of ``sub`` (the text before the *last* ``@``,
``condor_auth_passwd.cpp``); identities of other domains own no credentials, and reach a
user's only through ADMINISTRATOR (list, read, delete) or DAEMON (fetch access tokens).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol

from htsec.creds.names import is_local_user

__all__ = [
    "UNLIMITED",
    "Perm",
    "Token",
    "credential_owner",
    "granted",
    "grants",
    "implied",
    "in_order",
]


class Perm(StrEnum):
    """HTCondor's authorization levels (``condor_perms.h`` ``DCpermission``, in its order)."""

    ALLOW = "ALLOW"
    READ = "READ"
    WRITE = "WRITE"
    NEGOTIATOR = "NEGOTIATOR"
    ADMINISTRATOR = "ADMINISTRATOR"
    CONFIG = "CONFIG"
    DAEMON = "DAEMON"
    SOAP = "SOAP"
    DEFAULT = "DEFAULT"
    CLIENT = "CLIENT"
    ADVERTISE_STARTD = "ADVERTISE_STARTD"
    ADVERTISE_SCHEDD = "ADVERTISE_SCHEDD"
    ADVERTISE_MASTER = "ADVERTISE_MASTER"


# DCpermissionHierarchy::aImpliedNext (condor_perms.cpp); None stands for LAST_PERM.
_IMPLIED_NEXT: dict[Perm, Perm | None] = {
    Perm.ALLOW: None,
    Perm.READ: None,
    Perm.WRITE: Perm.READ,
    Perm.NEGOTIATOR: Perm.READ,
    Perm.ADMINISTRATOR: Perm.WRITE,
    Perm.CONFIG: Perm.READ,
    Perm.DAEMON: Perm.WRITE,
    Perm.SOAP: None,
    Perm.DEFAULT: None,
    Perm.CLIENT: None,
    Perm.ADVERTISE_STARTD: Perm.READ,
    Perm.ADVERTISE_SCHEDD: Perm.READ,
    Perm.ADVERTISE_MASTER: Perm.READ,
}

#: What a token without ``condor:/`` scope grants (recommended_v9_0: ALLOW_READ/WRITE = *).
UNLIMITED: frozenset[Perm] = frozenset({Perm.ALLOW, Perm.READ, Perm.WRITE})


class Token(Protocol):
    """A verified token as the decision needs it (:class:`htsec.tokens.idtoken.VerifiedToken`)."""

    @property
    def subject(self) -> str: ...

    @property
    def authorizations(self) -> tuple[str, ...] | None: ...


def _ascii_upper(text: str) -> str:
    """``text`` upper-cased in ASCII only, as C's strcasecmp compares (``str.upper`` also makes
    "I" of a dotless i and "S" of a long s)."""
    return text.translate(_UPPER)


_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _perm(name: str) -> Perm | None:
    try:
        return Perm(_ascii_upper(name.strip()))
    except ValueError:
        return None  # getPermissionFromString: NOT_A_PERM, ignored (e.g. OWNER, gone in 9.0)


def implied(perm: Perm) -> frozenset[Perm]:
    """``perm`` and every level it implies, following ``aImpliedNext`` to the end."""
    out: set[Perm] = set()
    level: Perm | None = perm
    while level is not None:
        out.add(level)
        level = _IMPLIED_NEXT[level]
    return frozenset(out)


def granted(authorizations: Iterable[str] | None) -> frozenset[Perm]:
    """Every level a token whose ``condor:/`` scope lists ``authorizations`` grants."""
    names = list(authorizations) if authorizations is not None else []
    if not names:
        return UNLIMITED
    out: set[Perm] = {Perm.ALLOW}
    for name in names:
        perm = _perm(name)
        if perm is not None:
            out |= implied(perm)
    return frozenset(out)


def in_order(perms: Iterable[Perm]) -> list[str]:
    """Level names in HTCondor's order (``DCpermission``), for people and JSON."""
    order = list(Perm)
    return [str(p) for p in sorted(set(perms), key=order.index)]


@functools.lru_cache(maxsize=256)
def _granted(authorizations: tuple[str, ...] | None) -> frozenset[Perm]:
    return granted(authorizations)  # the hot path (access-token fetches) sees few scopes


def grants(token: Token, perm: Perm) -> bool:
    """Does ``token`` grant ``perm``? The one check every route and command makes."""
    return perm in _granted(token.authorizations)


def credential_owner(subject: str, uid_domain: str) -> str | None:
    """The user whose credentials ``subject`` owns: ``alice`` for ``alice@$(UID_DOMAIN)``.

    None for an identity of another domain (a glidein pilot's ``SITE@glidein.HOST``,
    ``alice@other.domain``), without a domain, or whose user part HTCondor's credd would
    refuse as a credential directory name (``store_cred.cpp``: ``A-Za-z0-9 - + = _ .``).
    Domains compare case-insensitively in ASCII, as DNS names and HTCondor's strcasecmp do
    (Unicode case folding would make ``c\\u017f.wi\\u017fc.edu`` (long s) equal ``cs.wisc.edu``).
    """
    user, at, domain = subject.rpartition("@")
    if not at or not user or _ascii_upper(domain) != _ascii_upper(uid_domain.strip()):
        return None
    return user if is_local_user(user) else None
