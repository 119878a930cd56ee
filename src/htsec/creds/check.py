"""Does a user have the credentials a job needs? The credd's answer to ``htsec submit``.

HTCondor's counterpart is condor_credd's ``CREDD_CHECK_CREDS`` (``src/condor_credd/credd.cpp``
``check_creds_handler``), which condor_submit sends once per submit. Per need it decides:

- ``present``: stored, active, and with the scopes and audience the job asks for;
- ``missing``: not stored (the user must log in at the provider: an authorisation link);
- ``mismatch``: stored with other scopes or another audience. HTCondor compares the ``.top``
  file's ``scopes`` and ``audience`` strings with the request's exactly
  (``store_cred.cpp`` ``cred_matches``), so ``"a,b"`` differs from ``"b,a"``; htsec compares
  scopes as sets and the audience as a string (none and empty are the same);
- ``needs-reauth``: stored but not usable until its owner logs in again: the credmon marked
  it (e.g. after ``invalid_grant``), or it has no refresh token (the provider gave none at the
  login), so the credmon cannot renew it for a job that outlives its access token.

:func:`need_states` is the one place that decides whether a stored credential meets a need:
the check here and the portal's authorisation-link page (which shows a need as done) both ask
it, so a link never shows as done what the check would send the user to it for.

Local-issuer and local-client services (``LOCAL_CREDMON_PROVIDER_NAMES``, else
``LOCAL_CREDMON_PROVIDER_NAME``, default ``scitokens`` as in ``store_cred.cpp``
``CredSorter::Init``; ``CLIENT_CREDMON_PROVIDER_NAMES``) need no login: a missing one is
created for the local issuer, as condor_credd writes its ``.top``, and is ``present``. As in
``credd.cpp``, such a service may not have a handle, nor (when missing) scopes or an audience;
both refuse the whole check with HTCondor's text.

One query reads every need's row; nothing here reads a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from htsec.config import param
from htsec.creds.links import Need
from htsec.creds.names import local_user
from htsec.creds.store import CredStore
from htsec.creds.writes import CREDENTIALS
from htsec.errors import CredStoreError

__all__ = ["NeedState", "check_needs", "local_services", "need_states"]

_C = CREDENTIALS.c
# Built once (the per-request cost of building a Core statement was a third of the route's).
_NEEDED = select(
    _C.service,
    _C.handle,
    _C.scopes,
    _C.audience,
    _C.state,
    _C.last_error,
    _C.refresh_token.is_not(None),
).where(_C.user == bindparam("u"), _C.service.in_(bindparam("s", expanding=True)))


@dataclass(frozen=True)
class NeedState:
    """The answer for one need."""

    service: str
    handle: str | None
    state: str  # present | missing | mismatch | needs-reauth
    detail: str
    #: What is stored (for a mismatch): scopes and audience.
    stored_scopes: tuple[str, ...] = ()
    stored_audience: str | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "service": self.service,
            "handle": self.handle,
            "state": self.state,
            "detail": self.detail,
        }
        if self.state == "mismatch":
            out["stored_scopes"] = list(self.stored_scopes)
            out["stored_audience"] = self.stored_audience
        return out


def _names(knob: str) -> list[str]:
    return [n for n in (param(knob) or "").replace(",", " ").split() if n]


def local_services() -> frozenset[str]:
    """Lower-case names of the local-issuer and local-client services (condor_credd's
    ``CredSorter``: ``LOCAL_CREDMON_PROVIDER_NAMES``, else ``LOCAL_CREDMON_PROVIDER_NAME``,
    default ``scitokens``; and ``CLIENT_CREDMON_PROVIDER_NAMES``)."""
    local = (
        _names("LOCAL_CREDMON_PROVIDER_NAMES")
        or _names("LOCAL_CREDMON_PROVIDER_NAME")
        or ["scitokens"]
    )
    return frozenset(n.lower() for n in local + _names("CLIENT_CREDMON_PROVIDER_NAMES"))


def _text(scopes: Sequence[str] | frozenset[str]) -> str:
    return ",".join(sorted(scopes)) or "(none)"


_Row = tuple[str, str | None, str, str | None, bool]


def _judge(n: Need, row: _Row | None, *, is_local: bool) -> NeedState:
    if row is None:
        return NeedState(n.service, n.handle, "missing", "not stored")
    scopes_text, audience, state, last_error, has_refresh_token = row
    stored = frozenset(s for s in scopes_text.split(",") if s)
    stored_audience = audience or None
    if not is_local and (stored != n.scopes or stored_audience != n.audience):
        return NeedState(
            n.service,
            n.handle,
            "mismatch",
            f"stored with scopes {_text(stored)} and audience "
            f"{stored_audience or '(none)'}; the job asks for scopes {_text(n.scopes)} "
            f"and audience {n.audience or '(none)'}",
            tuple(sorted(stored)),
            stored_audience,
        )
    if state != "active":
        return NeedState(
            n.service, n.handle, "needs-reauth", f"{state}: {last_error or 'no detail'}"
        )
    if not is_local and not has_refresh_token:
        return NeedState(
            n.service,
            n.handle,
            "needs-reauth",
            "stored without a refresh token: it cannot be renewed; log in again",
        )
    return NeedState(n.service, n.handle, "present", "stored")


def need_states(
    cs: CredStore, user: str, needs: Sequence[Need], *, local: frozenset[str]
) -> list[NeedState]:
    """The state of each of ``needs`` for ``user`` as stored, changing nothing (a missing
    local-issuer credential is ``missing`` here; :func:`check_needs` creates it)."""
    services = sorted({n.service for n in needs})
    rows: dict[tuple[str, str], _Row] = {}
    if services:
        with cs.store.engine.connect() as conn:
            result = conn.execute(_NEEDED, {"u": local_user(user), "s": services})
            for service, handle, scopes, audience, state, last_error, has_rt in result:
                rows[(service, handle or "")] = (scopes, audience, state, last_error, has_rt)
    return [
        _judge(n, rows.get((n.service, n.handle or "")), is_local=n.service.lower() in local)
        for n in needs
    ]


def check_needs(
    cs: CredStore,
    user: str,
    needs: Sequence[Need],
    *,
    local: frozenset[str],
    actor: str = "htsec",
) -> list[NeedState]:
    """The state of each of ``needs`` for ``user``; missing local-issuer credentials are
    created on the way.

    :raises CredStoreError: for a local-issuer need with a handle, or a missing one with
        scopes or an audience (condor_credd's refusals).
    """
    owner = local_user(user)
    for n in needs:
        if n.service.lower() in local and n.handle:
            raise CredStoreError(f"Local Issuer credential '{n.service}' can't have a handle.")
    out: list[NeedState] = []
    for n, st in zip(needs, need_states(cs, user, needs, local=local), strict=True):
        if st.state == "missing" and n.service.lower() in local:
            if n.scopes or n.audience:
                raise CredStoreError(
                    f"Local Issuer/Client credential '{n.service}' can't have user-provided "
                    "scope or audience."
                )
            cs.ensure_local(owner, n.service, actor=actor)
            st = NeedState(n.service, n.handle, "present", "created for the local issuer")
        out.append(st)
    return out
