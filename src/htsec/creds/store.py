"""The credential store: users' OAuth credentials, sealed at rest, with an audit trail.

The audit trail is :mod:`htsec.creds.audit` (a base class of :class:`CredStore`); how a put
becomes rows, alone or in a batch, is :mod:`htsec.creds.writes`. This module holds the public
API: store, batch-store, delete, read, deliver, re-seal.

Rows live in the ``credentials`` table (:class:`htsec.store.models.Credential`); refresh
tokens, access tokens and client secrets are sealed with :class:`htsec.creds.crypto.Sealer`
under the row's identity ``(user, service, handle)``. Writers use an optimistic ``version``
column: an update applies only to the version it read and is retried on conflict, so parallel
writers never lose an update. Nothing here ever returns a refresh token to a caller outside
htsec (the credmon reads it through :meth:`CredStore.refresh_token`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from htsec.creds.audit import AuditTrail, audit_entry
from htsec.creds.crypto import Sealer, aad_for
from htsec.creds.names import TokenName, local_user
from htsec.creds.writes import (
    CREDENTIALS,
    PUT_BATCH,
    Put,
    apply_put,
    apply_puts,
    ensure_user,
    prepare_put,
    where,
)
from htsec.errors import Busy, CredentialInactive, CredStoreError, HtsecError, NotFound
from htsec.store import Store

__all__ = ["AccessToken", "CredStore", "CredentialInfo"]

_RETRIES = 50
_C = CREDENTIALS
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
# The credmon reads refresh tokens one by one (import, publish): the same raw-cursor path.
_REFRESH = select(_C.c.refresh_token).where(
    _C.c.user == bindparam("u"), _C.c.service == bindparam("s"), _C.c.handle == bindparam("h")
)


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


class CredStore(AuditTrail):
    """Credential operations on one store with one sealer (and its audit trail)."""

    def __init__(self, store: Store, sealer: Sealer) -> None:
        super().__init__(store)
        self.sealer = sealer
        self._access_sql = self._raw_sql(_ACCESS)
        self._refresh_sql = self._raw_sql(_REFRESH)

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _name(user: str, service: str, handle: str | None) -> tuple[str, TokenName]:
        return local_user(user), TokenName(service, handle or "")

    def _aad(self, column: str, user: str, name: TokenName) -> bytes:
        return aad_for("credentials", column, user, name.service, name.handle or "")

    def seal(self, value: str | None, column: str, user: str, name: TokenName) -> bytes | None:
        """``value`` sealed for ``column`` of ``user``'s credential ``name`` (the associated
        data binds it to that cell: it opens nowhere else); None stays None."""
        return None if value is None else self.sealer.seal(value, self._aad(column, user, name))

    def unseal(self, value: bytes | None, column: str, user: str, name: TokenName) -> str | None:
        """A value :meth:`seal` sealed for that same cell, opened; None stays None.

        :raises StoreError: if it does not open (a damaged value, a data key not in the file).
        """
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
        also: Callable[[Session], None] | None = None,
    ) -> CredentialInfo:
        """Create or replace a credential; returns it. ``expect_version`` makes it conditional.

        ``source="cred-dir"`` marks a credential imported from HTCondor's directory (the
        credmon forgets it when HTCondor removes its ``.top``); any other store makes it
        htsec's own again. ``also`` is called with the session once the credential is written,
        so that what goes with it (the portal's link, its audit row) commits in the same
        transaction, or nothing does (it raises)."""
        put = prepare_put(
            self.seal,
            user,
            service,
            handle,
            refresh_token=refresh_token,
            access_token=access_token,
            expires_at=expires_at,
            token_type=token_type,
            scopes=scopes,
            audience=audience,
            provider=provider,
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            actor=actor,
            peer=peer,
            expect_version=expect_version,
            source=source,
        )
        for _ in range(_RETRIES):
            with self.store.session() as s:
                done = apply_put(s, put)
                if done and also is not None:
                    also(s)
            if done:
                return self.info(put.user, put.name.service, put.name.handle)
        raise Busy(f"too much contention storing {put.name.stem} of {put.user}; try again")

    def put_many(self, entries: Sequence[Mapping[str, Any]]) -> list[HtsecError | None]:
        """Several :meth:`put` calls (each entry holds one call's keyword arguments, ``user``
        and ``service`` included), committed together: one transaction (one fsync) per
        :data:`~htsec.creds.writes.PUT_BATCH` credentials, new ones written with one statement
        each for users, credentials and audit rows. Each credential is sealed, versioned and
        audited exactly as :meth:`put` does it; for each entry the result is None or the error
        that refused it (the others are stored). An entry that lost a race with a concurrent
        writer, or that names a credential an earlier entry named, is stored again on its own
        afterwards."""
        results: list[HtsecError | None] = [None] * len(entries)
        prepared: list[tuple[int, Put]] = []
        again: list[int] = []
        seen: set[tuple[str, TokenName]] = set()
        for i, entry in enumerate(entries):
            try:
                put = prepare_put(self.seal, **entry)
            except HtsecError as exc:
                results[i] = exc
                continue
            if (put.user, put.name) in seen:
                again.append(i)
            else:
                seen.add((put.user, put.name))
                prepared.append((i, put))
        for start in range(0, len(prepared), PUT_BATCH):
            with self.store.session() as s:
                again += apply_puts(s, prepared[start : start + PUT_BATCH], results)
        for i in sorted(again):
            try:
                self.put(**entries[i])
            except HtsecError as exc:
                results[i] = exc
        return results

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
            ensure_user(s, user, now)
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
                audit_entry(
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
        key = where(user, name)
        with self.store.session() as s:
            n = s.execute(delete(_C).where(key)).rowcount  # type: ignore[attr-defined]
            s.add(
                audit_entry(
                    actor=actor,
                    action="delete",
                    user=user,
                    name=name,
                    peer=peer,
                    outcome="ok" if n else "absent",
                )
            )
        return bool(n)

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

    def _raw_sql(self, query: Any) -> tuple[str, Any]:
        """A query compiled once for this store's dialect, with its parameters' order (None
        for named parameter styles), for :meth:`_raw_row`."""
        compiled = query.compile(dialect=self.store.engine.dialect)
        return str(compiled), compiled.positiontup

    def _raw_row(self, sql: tuple[str, Any], user: str, name: TokenName) -> tuple[Any, ...]:
        """One credential's row from a query compiled by :meth:`_raw_sql`, on a raw DB-API
        cursor: no SQLAlchemy transaction (nor SQLite's BEGIN IMMEDIATE) for a read."""
        text, order = sql
        params = {"u": user, "s": name.service, "h": name.handle or ""}
        args: Any = tuple(params[k] for k in order) if order else params
        conn = self.store.engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(text, args)
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
        state, last_error, sealed, token_type, expires_at, scopes = self._raw_row(
            self._access_sql, user, name
        )
        if state != "active":
            raise CredentialInactive(
                f"credential {name.stem} of {user} is {state}: {last_error or 'no detail'}"
            )
        token = self.unseal(None if sealed is None else bytes(sealed), "access_token", user, name)
        if token is None:
            raise NotFound(f"credential {name.stem} of {user} has no access token yet")
        return AccessToken(token, token_type, expires_at, scopes.replace(",", " "))

    def refresh_token(self, user: str, service: str, handle: str | None = None) -> str | None:
        """For the credmon only; never exposed over the API."""
        user, name = self._name(user, service, handle)
        (sealed,) = self._raw_row(self._refresh_sql, user, name)
        return self.unseal(None if sealed is None else bytes(sealed), "refresh_token", user, name)

    def status(self) -> dict[str, dict[str, int]]:
        """Per service, how many credentials are in each state."""
        q = select(_C.c.service, _C.c.state, func.count()).group_by(_C.c.service, _C.c.state)
        out: dict[str, dict[str, int]] = {}
        with self.store.engine.connect() as conn:
            for service, state, n in conn.execute(q):
                out.setdefault(service, {})[state] = int(n)
        return out

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
