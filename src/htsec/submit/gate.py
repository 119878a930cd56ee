"""The submit gate's decision: may this description be queued for this user now?

:func:`decide` loads the description (:mod:`htsec.submit.load`), derives the tokens it needs
(:mod:`htsec.submit.needs`) and asks the credd once (``POST /v1/creds/check``, through the
``check`` callable the caller hands in: the CLI's client, or a benchmark's; with
``"authorize": true`` the same request also makes the link for a login). The answer:

- ``ready``: every token is stored and usable;
- ``login``: some are missing or need re-authorisation (an authorisation link is next);
- ``mismatch``: some are stored with other scopes or audience (they must be deleted first;
  this wins over ``login``, as condor_credd answers a mismatch before anything else).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from htsec.errors import RemoteError
from htsec.submit.load import load_submit
from htsec.submit.needs import Derivation, Param, TokenNeed, derive

__all__ = ["Decision", "decide", "fix_commands"]

Check = Callable[[list[dict[str, object]]], Mapping[str, Any]]


@dataclass(frozen=True)
class Decision:
    state: str  # ready | login | mismatch
    user: str
    derivation: Derivation
    #: The credd's answer per need (``service``, ``handle``, ``state``, ``detail`` ...).
    results: tuple[Mapping[str, Any], ...]
    #: The authorisation link, when the check made one (``authorize``) for a login.
    url: str | None = None
    expires_at: int | None = None

    def in_state(self, *states: str) -> list[Mapping[str, Any]]:
        return [r for r in self.results if r.get("state") in states]

    @property
    def to_authorize(self) -> list[TokenNeed]:
        """The needs an authorisation link must ask for (missing or needing a new login)."""
        wanted = {(r["service"], r.get("handle")) for r in self.in_state("missing", "needs-reauth")}
        return [n for n in self.derivation.needs if (n.service, n.handle) in wanted]


def fix_commands(results: list[Mapping[str, Any]]) -> list[str]:
    """``htsec cred delete`` for each mismatched credential (condor_credd's message names
    ``condor_store_cred delete-oauth -s <service>[_<handle>]``)."""
    out = []
    for r in results:
        handle = f" --handle {r['handle']}" if r.get("handle") else ""
        out.append(f"htsec cred delete --service {r['service']}{handle}")
    return out


def decide(
    data: bytes | str,
    *,
    check: Check,
    param: Param,
    iwd: str | os.PathLike[str] | None = None,
) -> Decision:
    """The gate's decision for one description.

    :raises SubmitError: for a description htsec refuses (:func:`load_submit`,
        :func:`derive`).
    :raises RemoteError: when the credd's answer is not the check's shape.
    """
    derivation = derive(load_submit(data, iwd=iwd), param)
    answer = check([n.as_json() for n in derivation.needs])
    results = answer.get("needs")
    user = answer.get("user")
    if (
        not isinstance(results, list)
        or not isinstance(user, str)
        or len(results) != len(derivation.needs)
    ):
        raise RemoteError("the credd's answer to the credential check is not what it should be")
    states = {r.get("state") for r in results if isinstance(r, Mapping)}
    if "mismatch" in states:
        state = "mismatch"
    elif states - {"present"}:
        state = "login"
    else:
        state = "ready"
    url = answer.get("url")
    expires = answer.get("expires_at")
    return Decision(
        state,
        user,
        derivation,
        tuple(results),
        url if isinstance(url, str) else None,
        expires if isinstance(expires, int) else None,
    )
