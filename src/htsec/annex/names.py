"""Annex names and the identifiers derived from them (FORMATS.md section 1).

An annex name is at most 27 characters (so that ``<name>_<uuid4>`` fits EC2's 64-character
client token) of letters, digits and ``-``, starting with a letter or digit. HTCondor allows
``_`` and then recovers the name from a client token by cutting at an underscore; htsec refuses
``_`` in new names and, for tokens it did not make, cuts at the *last* underscore (a uuid4 has
none), so a name is always recovered exactly.
"""

from __future__ import annotations

import re
import uuid

from htsec.errors import UsageError

__all__ = [
    "MAX_NAME",
    "TAG_BUCKET",
    "TAG_CONFIGURED",
    "TAG_CONFIG_SHA256",
    "TAG_FLEET",
    "TAG_LEASE_END",
    "TAG_NAME",
    "annex_of_client_token",
    "client_token",
    "config_key",
    "lease_key",
    "role_name",
    "token_belongs_to",
    "validate_name",
]

MAX_NAME = 27
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

#: Instance tags (HTCondor's name tag, htsec's own beside it).
TAG_NAME = "htcondor:AnnexName"
TAG_BUCKET = "htsec:annex-bucket"
TAG_CONFIG_SHA256 = "htsec:config-sha256"
TAG_LEASE_END = "htsec:lease-end"
TAG_CONFIGURED = "htsec:configured"
TAG_FLEET = "aws:ec2spot:fleet-request-id"


def validate_name(name: str) -> str:
    """``name`` if it is a valid annex name, else a :class:`UsageError` saying why."""
    if not name:
        raise UsageError("an annex name must not be empty")
    if len(name) > MAX_NAME:
        raise UsageError(
            f"annex name {name[:40]!r} is {len(name)} characters; at most {MAX_NAME} "
            "(the client token <name>_<uuid4> must fit EC2's 64 characters)"
        )
    if "_" in name:
        raise UsageError(
            f"annex name {name!r} contains '_': the instances recover the name from the client "
            "token <name>_<uuid4>, so names use letters, digits and '-' only"
        )
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"annex name {name!r} may hold only letters, digits and '-', "
            "and starts with a letter or digit"
        )
    return name


def client_token(name: str) -> str:
    """A new client token for one launch of annex ``name``: ``<name>_<uuid4>``."""
    return f"{validate_name(name)}_{uuid.uuid4()}"


def annex_of_client_token(token: str) -> str | None:
    """The annex name in a client token, or None when the token is not an annex's.

    Cuts at the last underscore (HTCondor's boot script cut at the first, which breaks names
    holding ``_``) and requires the right-hand side to be a uuid4.
    """
    name, sep, tail = token.rpartition("_")
    if not sep or not name or not _UUID4.fullmatch(tail):
        return None
    return name


def token_belongs_to(token: str | None, name: str) -> bool:
    """Whether ``token`` is a client token of annex ``name`` exactly (``test`` is not
    ``test2``: the original lease function matched the prefix ``test*``)."""
    return token is not None and annex_of_client_token(token) == name


def config_key(name: str) -> str:
    """The S3 key of the annex's configuration: a per-annex prefix, HTCondor's file name."""
    return f"{name}/config-{name}.tar.gz"


def lease_key(name: str) -> str:
    """The S3 key of the annex's lease record."""
    return f"leases/{name}.json"


def role_name(name: str) -> str:
    """The per-annex instance role and instance profile (each annex reads only its own object)."""
    return f"htsec-annex-{name}"
