"""Leases: how credmons claim credentials for refresh and record the outcome.

The rows are the store's ``credentials`` table (its lease columns are the credmon's); secrets
are sealed and opened through :class:`htsec.creds.store.CredStore`'s public methods.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update

from htsec.credmon.holder import Holder
from htsec.creds.names import TokenName
from htsec.creds.store import CredStore
from htsec.creds.writes import TYPE_NAME
from htsec.errors import StoreError
from htsec.store.models import Credential

__all__ = ["Claim", "Leases"]


_C = cast(Table, Credential.__table__)


@dataclass(frozen=True, repr=False)
class Claim:
    """A credential leased to one refresher; holds its refresh token in memory only."""

    id: int
    user: str
    service: str
    handle: str
    provider: str
    scopes: str
    audience: str
    refresh_token: str | None
    access_expires_at: int | None
    access_issued_at: int | None
    client_id: str | None
    client_secret: str | None
    token_url: str | None
    failures: int
    version: int
    lease_token: str
    lease_until: int
    #: When a refresh of this credential was sent without its answer being recorded (a
    #: credmon died meanwhile): the provider may have rotated the refresh token we hold.
    sent_at: int | None = None
    #: Why a sealed value of the row could not be opened (a damaged row, a data key missing
    #: from the key file); such a claim carries no secrets and is recorded as failed.
    unreadable: str | None = None

    def __repr__(self) -> str:
        return (
            f"Claim({self.user}/{self.name.stem}, version={self.version}, refresh_token=[secure])"
        )

    @property
    def name(self) -> TokenName:
        return TokenName(self.service, self.handle)


def _claims(cs: CredStore, rows: Any, prior: dict[int, int | None]) -> list[Claim]:
    """Claims for leased rows. Each row's secrets are opened inside its own error boundary:
    one damaged row (or one sealed under a lost data key) becomes an unreadable claim, and the
    rest of the batch is unaffected."""
    out = []
    for r in rows:
        name = TokenName(r.service, r.handle)
        unreadable = None
        try:
            refresh_token = cs.unseal(r.refresh_token, "refresh_token", r.user, name)
            client_secret = cs.unseal(r.client_secret, "client_secret", r.user, name)
        except StoreError as exc:
            refresh_token = client_secret = None
            unreadable = str(exc)
        out.append(
            Claim(
                id=r.id,
                user=r.user,
                service=r.service,
                handle=r.handle,
                provider=r.provider,
                scopes=r.scopes,
                audience=r.audience,
                refresh_token=refresh_token,
                access_expires_at=r.access_expires_at,
                access_issued_at=r.access_issued_at,
                client_id=r.client_id,
                client_secret=client_secret,
                token_url=r.token_url,
                failures=r.failures,
                version=r.version,
                lease_token=r.lease_token,
                lease_until=r.lease_until,
                sent_at=prior.get(r.id),
                unreadable=unreadable,
            )
        )
    return out


class Leases:
    """Claiming credentials for refresh, and recording the outcome, fenced by lease and version.

    A claim is one ``UPDATE ... WHERE id IN (due rows) AND the lease is free``: SQLite runs it
    alone; PostgreSQL re-checks the lease condition on each row after waiting for its lock, so
    two credmons (on one host or several) never hold the same credential. Outcomes are written
    only while the lease token and the version still match (a user's newer credential wins).
    """

    def __init__(
        self, creds: CredStore, holder: str, local_providers: Collection[str] = ()
    ) -> None:
        self.creds = creds
        self.holder = holder
        self.local_providers = sorted(local_providers)

    def reap_dead_holders(self) -> int:
        """Free at once the leases of credmons that have provably ended: same boot and PID
        namespace as this process, and no longer running (:meth:`Holder.provably_dead`). Any
        other holder -- another host, container or boot, or a pid this process cannot judge --
        keeps its lease until it runs out. Returns how many leases were freed."""
        me = Holder.parse(self.holder)
        if me is None or not me.boot_id:
            return 0
        pattern = f"%:{me.boot_id}:{me.pid_ns}:%"
        with self.creds.store.engine.connect() as conn:
            owners = [
                r[0]
                for r in conn.execute(
                    select(_C.c.lease_owner).where(_C.c.lease_owner.like(pattern)).distinct()
                )
            ]
        dead = []
        for owner in owners:
            holder = Holder.parse(owner)
            if owner != self.holder and holder is not None and holder.provably_dead():
                dead.append(owner)
        if not dead:
            return 0
        with self.creds.store.session() as s:
            res = s.execute(
                update(_C)
                .where(_C.c.lease_owner.in_(dead))
                .values(lease_owner=None, lease_token=None, lease_until=None)
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def claim(
        self, *, now: int, lease_s: int, limit: int, due_by: int | None = None
    ) -> list[Claim]:
        """Lease up to ``limit`` credentials due by ``due_by`` (default ``now``) for ``lease_s``
        seconds from ``now``. A pass that refills its claims keeps ``due_by`` at its start (it
        handles what was due then) while each lease runs from the moment it is taken.

        The claim also marks each credential's refresh as in flight (``refresh_sent_at``),
        durably and before anything is sent, in the same transaction: the mark is cleared when
        the outcome is recorded (or the credential is handed back unsent), so after a crash it
        names the refresh tokens the provider may have rotated in an answer that was lost. A
        claim's :attr:`Claim.sent_at` is the mark an earlier, interrupted holder left."""
        token = secrets.token_hex(16)
        due_by = now if due_by is None else due_by
        due = (
            select(_C.c.id, _C.c.refresh_sent_at)
            .where(
                _C.c.state == "active",
                or_(_C.c.refresh_token.is_not(None), _C.c.provider.in_(self.local_providers)),
                func.coalesce(_C.c.next_attempt_at, 0) <= due_by,
                func.coalesce(_C.c.lease_until, 0) < now,
            )
            # Refreshes a dead credmon left in flight first: their outcome is still open.
            .order_by(
                _C.c.refresh_sent_at.is_(None), func.coalesce(_C.c.next_attempt_at, 0), _C.c.id
            )
            .limit(limit)
        )
        if self.creds.store.engine.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        # One transaction: PostgreSQL locks the picked rows (skipping rows another credmon
        # is claiming) and re-checks the lease on each; SQLite's BEGIN IMMEDIATE runs it alone.
        with self.creds.store.session() as s:
            prior = {r.id: r.refresh_sent_at for r in s.execute(due)}
            if not prior:
                return []
            s.execute(
                update(_C)
                .where(_C.c.id.in_(list(prior)), func.coalesce(_C.c.lease_until, 0) < now)
                .values(
                    lease_owner=self.holder,
                    lease_token=token,
                    lease_until=now + lease_s,
                    refresh_sent_at=func.coalesce(_C.c.refresh_sent_at, now),
                )
                .execution_options(synchronize_session=False)
            )
        with self.creds.store.engine.connect() as conn:
            rows = conn.execute(select(_C).where(_C.c.lease_token == token)).fetchall()
        return _claims(self.creds, rows, prior)

    def _fenced(self, claim: Claim, values: dict[str, Any]) -> bool:
        return self.commit_many([(claim, values)])[0]

    def commit_many(self, items: list[tuple[Claim, dict[str, Any]]]) -> list[bool]:
        """Write several outcomes in one durable transaction (group commit: one fsync for
        many refreshes); each applies only while its lease and version still match.

        Outcomes that set the same columns go out as one executemany; when its row count shows
        that some did not apply (a lost lease, a newer version), the rows are read back to say
        which."""
        done: dict[int, bool] = {}
        groups: dict[tuple[str, ...], list[tuple[int, Claim, dict[str, Any]]]] = {}
        for i, (claim, values) in enumerate(items):
            groups.setdefault(tuple(sorted(values)), []).append((i, claim, values))
        now = int(time.time())
        with self.creds.store.session() as s:
            for columns, group in groups.items():
                stmt = (
                    update(_C)
                    .where(
                        _C.c.id == bindparam("f_id"),
                        _C.c.lease_token == bindparam("f_lease"),
                        _C.c.version == bindparam("f_version"),
                    )
                    .values(
                        lease_owner=None,
                        lease_token=None,
                        lease_until=None,
                        version=bindparam("f_new_version"),
                        updated_at=now,
                        **{c: bindparam(f"v_{c}") for c in columns},
                    )
                )
                params = [
                    {
                        "f_id": c.id,
                        "f_lease": c.lease_token,
                        "f_version": c.version,
                        "f_new_version": c.version + 1,
                        **{f"v_{k}": v for k, v in values.items()},
                    }
                    for _, c, values in group
                ]
                conn = s.connection()
                res = conn.execute(stmt, params)
                if res.rowcount == len(group):
                    done.update((i, True) for i, _, _ in group)
                    continue
                rows = conn.execute(
                    select(_C.c.id, _C.c.version, _C.c.lease_token).where(
                        _C.c.id.in_([c.id for _, c, _ in group])
                    )
                ).all()
                state = {r.id: (r.version, r.lease_token) for r in rows}
                for i, c, _ in group:
                    done[i] = state.get(c.id) == (c.version + 1, None)
        return [done[i] for i in range(len(items))]

    def success_values(
        self,
        claim: Claim,
        *,
        access_token: str,
        refresh_token: str | None,
        expires_at: int | None,
        token_type: str,
        now: int,
        next_attempt_at: int | None,
    ) -> dict[str, Any]:
        """The columns a successful refresh writes (tokens sealed to the row)."""
        name = claim.name
        keep = refresh_token or claim.refresh_token
        return dict(
            {
                "refresh_token": self.creds.seal(keep, "refresh_token", claim.user, name),
                "access_token": self.creds.seal(access_token, "access_token", claim.user, name),
                "access_expires_at": expires_at,
                "access_issued_at": now,
                "refreshed_at": now,
                # a provider's token_type is stored as text: one with a NUL made PostgreSQL refuse
                # the whole group commit; anything but a type-name or URI is stored as "bearer"
                "token_type": token_type if TYPE_NAME.fullmatch(token_type) else "bearer",
                "state": "active",
                "last_error": None,
                "failures": 0,
                "next_attempt_at": next_attempt_at,
                "refresh_sent_at": None,
            }
        )

    def fail(
        self,
        claim: Claim,
        *,
        error: str,
        dead: bool,
        next_attempt_at: int | None,
        settled: bool = False,
    ) -> bool:
        """Record a failed refresh: back off, or mark the credential as needing re-authorisation.
        ``settled``: nothing of it can be in flight any more (the provider answered, or no
        request was sent and none was left in flight before); else the in-flight mark stays
        (a timeout, a broken connection: the provider may have rotated the refresh token)."""
        values: dict[str, Any] = {
            "last_error": error[:500],
            "failures": claim.failures + 1,
            "next_attempt_at": next_attempt_at,
        }
        if settled:
            values["refresh_sent_at"] = None
        if dead:
            values["state"] = "needs_reauth"
        return self._fenced(claim, values)

    def release(self, claim: Claim, *, next_attempt_at: int | None) -> bool:
        """Nothing to do yet: give the credential back, unsent, with the time to look again
        (an in-flight mark an earlier holder left stays)."""
        values: dict[str, Any] = {"next_attempt_at": next_attempt_at}
        if claim.sent_at is None:
            values["refresh_sent_at"] = None
        return self._fenced(claim, values)
