"""The credential store: users' OAuth credentials, sealed at rest, with an audit trail.

Rows live in the ``credentials`` table (:class:`htsec.store.models.Credential`); refresh
tokens, access tokens and client secrets are sealed with :class:`htsec.creds.crypto.Sealer`
under the row's identity ``(user, service, handle)``. Writers use an optimistic ``version``
column: an update applies only to the version it read and is retried on conflict, so parallel
writers never lose an update. Nothing here ever returns a refresh token to a caller outside
htsec (the credmon reads it through :meth:`CredStore.refresh_token`).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from htsec.creds.crypto import Sealer, aad_for
from htsec.creds.layout import TokenName, local_user, split_scopes
from htsec.errors import CredentialError, CredStoreError, NotFound, UsageError
from htsec.store import Store
from htsec.store.models import AuditEntry, Credential, User

__all__ = ["MAX_TOKEN_TEXT", "AccessToken", "CredStore", "CredentialInfo"]

#: Bound on any token or secret text stored (bytes of UTF-8).
MAX_TOKEN_TEXT = 16 * 1024
_RETRIES = 50
#: Fetch audit rows are written in batches of this many, or after this many seconds.
AUDIT_BATCH = 256
AUDIT_DELAY = 1.0
_C = cast(Table, Credential.__table__)
# Built once: lookups by name only bind parameters.
_BY_NAME = select(_C).where(
    _C.c.user == bindparam("u"), _C.c.service == bindparam("s"), _C.c.handle == bindparam("h")
)
# The hot path (access-token fetches) runs this on a raw DB-API cursor, compiled once per
# dialect: a third of the cost of a Core execute, measured with bench/credd.py.
_ACCESS = select(
    _C.c.state,
    _C.c.last_error,
    _C.c.access_token,
    _C.c.token_type,
    _C.c.access_expires_at,
    _C.c.scopes,
).where(_C.c.user == bindparam("u"), _C.c.service == bindparam("s"), _C.c.handle == bindparam("h"))


@dataclass(frozen=True)
class CredentialInfo:
    """What may be shown about a credential: never token bytes."""

    user: str
    service: str
    handle: str | None
    provider: str
    scopes: list[str]
    audience: str
    token_type: str
    access_expires_at: int | None
    has_refresh_token: bool
    has_access_token: bool
    state: str
    last_error: str | None
    version: int
    created_at: int
    updated_at: int

    @property
    def name(self) -> TokenName:
        return TokenName(self.service, self.handle or "")

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "name": self.name.stem}


@dataclass(frozen=True, repr=False)
class AccessToken:
    """An access token for delivery to a job (``.use`` contents)."""

    access_token: str
    token_type: str
    expires_at: int | None
    scope: str

    def __repr__(self) -> str:
        return (
            f"AccessToken(token_type={self.token_type!r}, expires_at={self.expires_at}, "
            "access_token=[secure])"
        )

    def use_json(self, now: float | None = None) -> dict[str, Any]:
        """The ``.use`` file's JSON object (FORMATS.md section 3)."""
        out: dict[str, Any] = {"access_token": self.access_token, "token_type": self.token_type}
        if self.expires_at is not None:
            t = time.time() if now is None else now
            out["expires_in"] = max(0, int(self.expires_at - t))
            out["expires_at"] = self.expires_at
        if self.scope:
            out["scope"] = self.scope
        return out


def _ensure_user(s: Any, user: str, now: int) -> None:
    """Create the user row if missing (a concurrent creator wins quietly)."""
    if s.get(User, user) is None:
        with suppress(IntegrityError), s.begin_nested():
            s.add(User(name=user, created_at=now))


def _where(user: str, name: TokenName) -> Any:
    """The WHERE clause naming one credential."""
    return and_(_C.c.user == user, _C.c.service == name.service, _C.c.handle == (name.handle or ""))


def _audit_entry(
    *,
    actor: str,
    action: str,
    user: str | None,
    name: TokenName | None,
    peer: str | None,
    outcome: str,
    detail: str | None = None,
) -> AuditEntry:
    """One audit row (never a secret)."""
    return AuditEntry(
        at=time.time(),
        actor=actor,
        action=action,
        user=user,
        service=name.service if name else None,
        handle=(name.handle or "") if name else None,
        peer=peer,
        outcome=outcome,
        detail=detail,
    )


def _bounded(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_TOKEN_TEXT:
        raise UsageError(f"{what} must be text of at most {MAX_TOKEN_TEXT} bytes")
    if "\x00" in value:
        raise UsageError(f"{what} must not contain NUL")
    return value


def _scopes(scopes: str | list[str] | None) -> str:
    """Scopes as HTCondor's .top keeps them: a comma list without blanks, sorted as a set.
    A string is split at commas and blanks; each item of a list must be one RFC 6749
    scope-token (``"a b"`` is refused, not silently made two scopes)."""
    if scopes is None:
        return ""
    try:
        return ",".join(sorted(set(split_scopes(scopes))))
    except CredentialError as exc:
        raise CredStoreError(str(exc)) from None


class CredStore:
    """Credential operations on one store with one sealer."""

    def __init__(self, store: Store, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        self._flush_lock = threading.Lock()
        compiled = _ACCESS.compile(dialect=store.engine.dialect)
        self._access_sql = str(compiled)
        self._access_order = compiled.positiontup  # None for named parameter styles

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _name(user: str, service: str, handle: str | None) -> tuple[str, TokenName]:
        return local_user(user), TokenName(service, handle or "")

    def _aad(self, column: str, user: str, name: TokenName) -> bytes:
        return aad_for("credentials", column, user, name.service, name.handle or "")

    def _seal(self, value: str | None, column: str, user: str, name: TokenName) -> bytes | None:
        return None if value is None else self.sealer.seal(value, self._aad(column, user, name))

    def _open(self, value: bytes | None, column: str, user: str, name: TokenName) -> str | None:
        return None if value is None else self.sealer.open(value, self._aad(column, user, name))

    @staticmethod
    def _info(row: Any) -> CredentialInfo:
        return CredentialInfo(
            user=row.user,
            service=row.service,
            handle=row.handle or None,
            provider=row.provider,
            scopes=[s for s in row.scopes.split(",") if s],
            audience=row.audience,
            token_type=row.token_type,
            access_expires_at=row.access_expires_at,
            has_refresh_token=row.refresh_token is not None,
            has_access_token=row.access_token is not None,
            state=row.state,
            last_error=row.last_error,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def record_access(
        self,
        *,
        actor: str,
        user: str,
        service: str,
        handle: str | None,
        peer: str | None,
        outcome: str,
        action: str = "fetch",
    ) -> None:
        """Audit an access-token fetch (or, with ``action``, a refused store or delete).

        Fetches are the hot path, so their rows are written in batches (every
        :data:`AUDIT_BATCH` fetches or :data:`AUDIT_DELAY` seconds, and on :meth:`flush_audit`);
        a crash can lose at most that window of these records. Successful stores and deletes
        are audited in their own transaction."""
        self._pending.append(
            {
                "at": time.time(),
                "actor": actor,
                "action": action,
                "user": user,
                "service": service,
                "handle": handle or "",
                "peer": peer,
                "outcome": outcome,
                "detail": None,
            }
        )
        if len(self._pending) >= AUDIT_BATCH or time.monotonic() - self._flushed > AUDIT_DELAY:
            self.flush_audit()

    def flush_audit(self) -> int:
        """Write the batched fetch records now; returns how many."""
        with self._flush_lock:
            rows, self._pending = self._pending, []
            self._flushed = time.monotonic()
            if rows:
                with self.store.session() as s:
                    s.execute(insert(cast(Table, AuditEntry.__table__)), rows)
            return len(rows)

    def audit(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        user: str | None = None,
        name: TokenName | None = None,
        peer: str | None = None,
        detail: str | None = None,
    ) -> None:
        with self.store.session() as s:
            s.add(
                _audit_entry(
                    actor=actor,
                    action=action,
                    user=user,
                    name=name,
                    peer=peer,
                    outcome=outcome,
                    detail=detail,
                )
            )

    # -- writes ----------------------------------------------------------------------------
    def put(
        self,
        user: str,
        service: str,
        handle: str | None = None,
        *,
        refresh_token: str | None = None,
        access_token: str | None = None,
        expires_at: int | None = None,
        token_type: str = "bearer",  # noqa: S107 - RFC 6750 token type
        scopes: str | list[str] | None = None,
        audience: str | None = None,
        provider: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_url: str | None = None,
        actor: str = "htsec",
        peer: str | None = None,
        expect_version: int | None = None,
        source: str | None = None,
    ) -> CredentialInfo:
        """Create or replace a credential; returns it. ``expect_version`` makes it conditional.

        ``source="cred-dir"`` marks a credential imported from HTCondor's directory (the
        credmon forgets it when HTCondor removes its ``.top``); any other store makes it
        htsec's own again."""
        user, name = self._name(user, service, handle)
        _bounded(refresh_token, "refresh token")
        _bounded(access_token, "access token")
        _bounded(client_secret, "client secret")
        if refresh_token is None and access_token is None:
            raise UsageError("store a refresh token, an access token or both")
        now = int(time.time())
        values = {
            "provider": provider or name.service,
            "scopes": _scopes(scopes),
            "audience": _bounded(audience, "audience") or "",
            "refresh_token": self._seal(refresh_token, "refresh_token", user, name),
            "access_token": self._seal(access_token, "access_token", user, name),
            "token_type": token_type[:64],
            "access_expires_at": expires_at,
            "client_id": client_id,
            "client_secret": self._seal(client_secret, "client_secret", user, name),
            "token_url": token_url,
            "state": "active",
            "last_error": None,
            "updated_at": now,
            # A stored credential is new to the credmon: look at it at once, no back-off.
            "access_issued_at": now if access_token is not None else None,
            "next_attempt_at": None,
            "failures": 0,
            "source": source,
        }
        key = _where(user, name)
        for _ in range(_RETRIES):
            with self.store.session() as s:
                current = s.execute(select(_C.c.version).where(key)).scalar()
                if expect_version is not None and current != expect_version:
                    raise CredStoreError(
                        f"credential {name.stem} of {user} is at version {current}, "
                        f"not {expect_version}; re-read and retry",
                        status=409,
                    )
                if current is None:
                    _ensure_user(s, user, now)
                    try:
                        with s.begin_nested():
                            s.execute(
                                insert(_C).values(
                                    user=user,
                                    service=name.service,
                                    handle=name.handle or "",
                                    version=1,
                                    created_at=now,
                                    **values,
                                )
                            )
                    except IntegrityError:
                        continue  # a concurrent writer created it first: update instead
                else:
                    res = s.execute(
                        update(_C)
                        .where(key, _C.c.version == current)
                        .values(version=current + 1, **values)
                    )
                    if res.rowcount != 1:  # type: ignore[attr-defined]
                        continue  # lost the race; re-read the version and apply again
                s.add(
                    _audit_entry(
                        actor=actor,
                        action="store",
                        user=user,
                        name=name,
                        peer=peer,
                        outcome="ok",
                        detail=f"version {(current or 0) + 1}",
                    )
                )
            return self.info(user, name.service, name.handle)
        raise CredStoreError(
            f"too much contention storing {name.stem} of {user}; try again", status=503
        )

    def ensure_local(
        self,
        user: str,
        service: str,
        handle: str | None = None,
        *,
        actor: str = "htsec",
        source: str | None = None,
    ) -> bool:
        """Make sure a local-issuer credential row exists (no secret: the issuer signs tokens).

        Returns True if it was created; the credmon issues its first token at once.
        """
        user, name = self._name(user, service, handle)
        now = int(time.time())
        with self.store.session() as s:
            _ensure_user(s, user, now)
            try:
                with s.begin_nested():
                    s.execute(
                        insert(_C).values(
                            user=user,
                            service=name.service,
                            handle=name.handle or "",
                            provider=name.service,
                            scopes="",
                            audience="",
                            token_type="bearer",  # noqa: S106 - RFC 6750 token type
                            state="active",
                            version=1,
                            created_at=now,
                            updated_at=now,
                            failures=0,
                            source=source,
                        )
                    )
            except IntegrityError:
                return False
            s.add(
                _audit_entry(
                    actor=actor,
                    action="store",
                    user=user,
                    name=name,
                    peer="local",
                    outcome="ok",
                    detail="local issuer",
                )
            )
        return True

    def delete(
        self,
        user: str,
        service: str,
        handle: str | None = None,
        *,
        actor: str = "htsec",
        peer: str | None = None,
    ) -> bool:
        user, name = self._name(user, service, handle)
        key = _where(user, name)
        with self.store.session() as s:
            n = s.execute(delete(_C).where(key)).rowcount  # type: ignore[attr-defined]
            s.add(
                _audit_entry(
                    actor=actor,
                    action="delete",
                    user=user,
                    name=name,
                    peer=peer,
                    outcome="ok" if n else "absent",
                )
            )
        return bool(n)

    def set_state(
        self, user: str, service: str, handle: str | None, state: str, error: str | None = None
    ) -> None:
        user, name = self._name(user, service, handle)
        key = _where(user, name)
        with self.store.session() as s:
            s.execute(
                update(_C)
                .where(key)
                .values(
                    state=state,
                    last_error=error,
                    version=_C.c.version + 1,
                    updated_at=int(time.time()),
                )
            )

    # -- reads -----------------------------------------------------------------------------
    def _row(self, user: str, name: TokenName) -> Any:
        params = {"u": user, "s": name.service, "h": name.handle or ""}
        with self.store.engine.connect() as conn:
            row = conn.execute(_BY_NAME, params).first()
        if row is None:
            raise NotFound(f"{user} has no credential {name.stem}")
        return row

    def info(self, user: str, service: str, handle: str | None = None) -> CredentialInfo:
        user, name = self._name(user, service, handle)
        return self._info(self._row(user, name))

    def from_directory(self) -> list[tuple[str, TokenName]]:
        """Credentials imported from HTCondor's credential directory: (user, name)."""
        q = select(_C.c.user, _C.c.service, _C.c.handle).where(_C.c.source == "cred-dir")
        with self.store.engine.connect() as conn:
            return [(u, TokenName(s, h or "")) for u, s, h in conn.execute(q)]

    def credentials(self, user: str | None = None) -> list[CredentialInfo]:
        q = select(_C).order_by(_C.c.user, _C.c.service, _C.c.handle)
        if user is not None:
            q = q.where(_C.c.user == local_user(user))
        with self.store.engine.connect() as conn:
            return [self._info(r) for r in conn.execute(q)]

    def _access_row(self, user: str, name: TokenName) -> tuple[Any, ...]:
        params = {"u": user, "s": name.service, "h": name.handle or ""}
        args: Any = tuple(params[k] for k in self._access_order) if self._access_order else params
        conn = self.store.engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(self._access_sql, args)
                row = cur.fetchone()
            finally:
                cur.close()
        finally:
            conn.close()  # back to the pool, which rolls the read back
        if row is None:
            raise NotFound(f"{user} has no credential {name.stem}")
        return tuple(row)

    def access_token(self, user: str, service: str, handle: str | None = None) -> AccessToken:
        """The current access token, for delivery to a job; refuses dead credentials."""
        user, name = self._name(user, service, handle)
        state, last_error, sealed, token_type, expires_at, scopes = self._access_row(user, name)
        if state != "active":
            raise CredStoreError(
                f"credential {name.stem} of {user} is {state}: {last_error or 'no detail'}",
                status=409,
            )
        token = self._open(None if sealed is None else bytes(sealed), "access_token", user, name)
        if token is None:
            raise NotFound(f"credential {name.stem} of {user} has no access token yet")
        return AccessToken(token, token_type, expires_at, scopes.replace(",", " "))

    def refresh_token(self, user: str, service: str, handle: str | None = None) -> str | None:
        """For the credmon only; never exposed over the API."""
        user, name = self._name(user, service, handle)
        return self._open(self._row(user, name).refresh_token, "refresh_token", user, name)

    def client_secret(self, user: str, service: str, handle: str | None = None) -> str | None:
        user, name = self._name(user, service, handle)
        return self._open(self._row(user, name).client_secret, "client_secret", user, name)

    def status(self) -> dict[str, dict[str, int]]:
        """Per service, how many credentials are in each state."""
        q = select(_C.c.service, _C.c.state, func.count()).group_by(_C.c.service, _C.c.state)
        out: dict[str, dict[str, int]] = {}
        with self.store.engine.connect() as conn:
            for service, state, n in conn.execute(q):
                out.setdefault(service, {})[state] = int(n)
        return out

    def audit_log(self, user: str | None = None, limit: int = 100) -> list[Mapping[str, Any]]:
        self.flush_audit()
        q = select(AuditEntry.__table__).order_by(AuditEntry.id.desc()).limit(limit)
        if user is not None:
            q = q.where(AuditEntry.user == user)
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -- rekey -----------------------------------------------------------------------------
    def reseal_all(self) -> int:
        """Re-seal every value not sealed under the current key; returns rows changed.

        Works row by row under the version check, so it runs while the service is up.
        """
        with self.store.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(select(_C.c.id).order_by(_C.c.id))]
        return sum(1 for row_id in ids if self._reseal_one(row_id))

    def _reseal_one(self, row_id: int) -> bool:
        current = self.sealer.current_kid
        for _ in range(_RETRIES):
            with self.store.engine.connect() as conn:
                row = conn.execute(select(_C).where(_C.c.id == row_id)).first()
            if row is None:
                return False
            name = TokenName(row.service, row.handle)
            new = {}
            for col in ("refresh_token", "access_token", "client_secret"):
                sealed = getattr(row, col)
                if sealed is not None and self.sealer.kid_of(sealed) != current:
                    aad = self._aad(col, row.user, name)
                    new[col] = self.sealer.seal(self.sealer.open(sealed, aad), aad)
            if not new:
                return False
            with self.store.session() as s:
                res = s.execute(
                    update(_C)
                    .where(_C.c.id == row_id, _C.c.version == row.version)
                    .values(version=row.version + 1, **new)
                )
            if res.rowcount == 1:  # type: ignore[attr-defined]
                return True
        raise CredStoreError(f"could not re-seal credential row {row_id}; run rekey again")


# -- credmon support: leases and refresh results -----------------------------------------------


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

    def __repr__(self) -> str:
        return (
            f"Claim({self.user}/{self.name.stem}, version={self.version}, refresh_token=[secure])"
        )

    @property
    def name(self) -> TokenName:
        return TokenName(self.service, self.handle)


def _claims(cs: CredStore, rows: Any) -> list[Claim]:
    out = []
    for r in rows:
        name = TokenName(r.service, r.handle)
        out.append(
            Claim(
                id=r.id,
                user=r.user,
                service=r.service,
                handle=r.handle,
                provider=r.provider,
                scopes=r.scopes,
                audience=r.audience,
                refresh_token=cs._open(r.refresh_token, "refresh_token", r.user, name),
                access_expires_at=r.access_expires_at,
                access_issued_at=r.access_issued_at,
                client_id=r.client_id,
                client_secret=cs._open(r.client_secret, "client_secret", r.user, name),
                token_url=r.token_url,
                failures=r.failures,
                version=r.version,
                lease_token=r.lease_token,
                lease_until=r.lease_until,
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
        """Free the leases of crashed credmons on this host at once (the holder is
        ``host:pid``; a pid that no longer exists cannot finish its refresh). Holders on other
        hosts are trusted until their lease ends. Returns how many leases were freed."""
        host, _, _ = self.holder.partition(":")
        with self.creds.store.engine.connect() as conn:
            owners = [
                r[0]
                for r in conn.execute(
                    select(_C.c.lease_owner).where(_C.c.lease_owner.like(f"{host}:%")).distinct()
                )
            ]
        dead = []
        for owner in owners:
            pid = owner.rpartition(":")[2]
            if owner == self.holder or not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                dead.append(owner)
            except PermissionError:
                continue  # alive, another user's
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
        handles what was due then) while each lease runs from the moment it is taken."""
        token = secrets.token_hex(16)
        due_by = now if due_by is None else due_by
        due = (
            select(_C.c.id)
            .where(
                _C.c.state == "active",
                or_(_C.c.refresh_token.is_not(None), _C.c.provider.in_(self.local_providers)),
                func.coalesce(_C.c.next_attempt_at, 0) <= due_by,
                func.coalesce(_C.c.lease_until, 0) < now,
            )
            .order_by(func.coalesce(_C.c.next_attempt_at, 0), _C.c.id)
            .limit(limit)
        )
        if self.creds.store.engine.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        with self.creds.store.session() as s:
            s.execute(
                update(_C)
                .where(_C.c.id.in_(due.scalar_subquery()), func.coalesce(_C.c.lease_until, 0) < now)
                .values(lease_owner=self.holder, lease_token=token, lease_until=now + lease_s)
                .execution_options(synchronize_session=False)
            )
        with self.creds.store.engine.connect() as conn:
            rows = conn.execute(select(_C).where(_C.c.lease_token == token)).fetchall()
        return _claims(self.creds, rows)

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
                "refresh_token": self.creds._seal(keep, "refresh_token", claim.user, name),
                "access_token": self.creds._seal(access_token, "access_token", claim.user, name),
                "access_expires_at": expires_at,
                "access_issued_at": now,
                "refreshed_at": now,
                "token_type": token_type[:64],
                "state": "active",
                "last_error": None,
                "failures": 0,
                "next_attempt_at": next_attempt_at,
            }
        )

    def fail(self, claim: Claim, *, error: str, dead: bool, next_attempt_at: int | None) -> bool:
        """Record a failed refresh: back off, or mark the credential as needing re-authorisation."""
        values: dict[str, Any] = {
            "last_error": error[:500],
            "failures": claim.failures + 1,
            "next_attempt_at": next_attempt_at,
        }
        if dead:
            values["state"] = "needs_reauth"
        return self._fenced(claim, values)

    def release(self, claim: Claim, *, next_attempt_at: int | None) -> bool:
        """Nothing to do yet: give the credential back with the time to look again."""
        return self._fenced(claim, {"next_attempt_at": next_attempt_at})
