"""The credential store: users' OAuth credentials, sealed at rest, with an audit trail.

Rows live in the ``credentials`` table (:class:`htsec.store.models.Credential`); refresh
tokens, access tokens and client secrets are sealed with :class:`htsec.creds.crypto.Sealer`
under the row's identity ``(user, service, handle)``. Writers use an optimistic ``version``
column: an update applies only to the version it read and is retried on conflict, so parallel
writers never lose an update. Nothing here ever returns a refresh token to a caller outside
htsec (the credmon reads it through :meth:`CredStore.refresh_token`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from htsec.creds.crypto import Sealer, aad_for
from htsec.creds.names import TokenName, local_user, split_scopes
from htsec.errors import (
    Busy,
    Conflict,
    CredentialError,
    CredentialInactive,
    CredStoreError,
    HtsecError,
    NotFound,
    UsageError,
)
from htsec.store import Store
from htsec.store.models import AuditEntry, Credential, User

__all__ = ["MAX_TOKEN_TEXT", "AccessToken", "CredStore", "CredentialInfo"]

#: Bound on any token or secret text stored (bytes of UTF-8).
MAX_TOKEN_TEXT = 16 * 1024
_RETRIES = 50
#: Fetch audit rows are written in batches of this many, or after this many seconds.
AUDIT_BATCH = 256
AUDIT_DELAY = 1.0
#: :meth:`CredStore.put_many` commits at most this many credentials per transaction.
PUT_BATCH = 256
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
# The credmon reads refresh tokens one by one (import, publish): the same raw-cursor path.
_REFRESH = select(_C.c.refresh_token).where(
    _C.c.user == bindparam("u"), _C.c.service == bindparam("s"), _C.c.handle == bindparam("h")
)


@dataclass(frozen=True, repr=False)
class _Put:
    """A checked and sealed :meth:`CredStore.put`, not yet written."""

    user: str
    name: TokenName
    values: dict[str, Any]
    now: int
    actor: str
    peer: str | None
    expect_version: int | None


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
        self._access_sql = self._raw_sql(_ACCESS)
        self._refresh_sql = self._raw_sql(_REFRESH)

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
        put = self._prepare_put(
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
                done = self._apply_put(s, put)
            if done:
                return self.info(put.user, put.name.service, put.name.handle)
        raise Busy(f"too much contention storing {put.name.stem} of {put.user}; try again")

    def put_many(self, entries: Sequence[Mapping[str, Any]]) -> list[HtsecError | None]:
        """Several :meth:`put` calls (each entry holds one call's keyword arguments, ``user``
        and ``service`` included), committed together: one transaction (one fsync) per
        :data:`PUT_BATCH` credentials, new ones written with one statement each for users,
        credentials and audit rows. Each credential is sealed, versioned and audited exactly as
        :meth:`put` does it; for each entry the result is None or the error that refused it
        (the others are stored). An entry that lost a race with a concurrent writer, or that
        names a credential an earlier entry named, is stored again on its own afterwards."""
        results: list[HtsecError | None] = [None] * len(entries)
        prepared: list[tuple[int, _Put]] = []
        again: list[int] = []
        seen: set[tuple[str, TokenName]] = set()
        for i, entry in enumerate(entries):
            try:
                put = self._prepare_put(**entry)
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
                again += self._apply_puts(s, prepared[start : start + PUT_BATCH], results)
        for i in sorted(again):
            try:
                self.put(**entries[i])
            except HtsecError as exc:
                results[i] = exc
        return results

    def _apply_puts(
        self, s: Any, batch: list[tuple[int, _Put]], results: list[HtsecError | None]
    ) -> list[int]:
        """:meth:`_apply_put` for many credentials of distinct names inside session ``s``;
        refusals go into ``results``, and the indexes of entries to put again are returned."""
        users = {put.user for _, put in batch}
        versions = {
            (u, svc, h): v
            for u, svc, h, v in s.execute(
                select(_C.c.user, _C.c.service, _C.c.handle, _C.c.version).where(
                    _C.c.user.in_(users)
                )
            )
        }
        new: list[tuple[int, _Put]] = []
        again: list[int] = []
        for i, put in batch:
            current = versions.get((put.user, put.name.service, put.name.handle or ""))
            if current is None and put.expect_version is None:
                new.append((i, put))
                continue
            try:
                if not self._apply_put(s, put):  # an update: version-checked, one by one
                    again.append(i)
            except Conflict as exc:  # expect_version did not match
                results[i] = exc
        if not new:
            return again
        known_users = set(s.scalars(select(User.name).where(User.name.in_(users))))
        missing = sorted({put.user for _, put in new} - known_users)
        if missing:
            try:
                with s.begin_nested():
                    s.execute(
                        insert(cast(Table, User.__table__)),
                        [{"name": u, "created_at": int(time.time())} for u in missing],
                    )
            except IntegrityError:  # a concurrent writer created one of them: one by one
                for u in missing:
                    _ensure_user(s, u, int(time.time()))
        rows = [
            {
                "user": put.user,
                "service": put.name.service,
                "handle": put.name.handle or "",
                "version": 1,
                "created_at": put.now,
                **put.values,
            }
            for _, put in new
        ]
        try:
            with s.begin_nested():
                s.execute(insert(_C), rows)
        except IntegrityError:  # one of them was created meanwhile: each on its own
            return again + [i for i, put in new if not self._apply_put(s, put)]
        s.execute(
            insert(cast(Table, AuditEntry.__table__)),
            [
                {
                    "at": time.time(),
                    "actor": put.actor,
                    "action": "store",
                    "user": put.user,
                    "service": put.name.service,
                    "handle": put.name.handle or "",
                    "peer": put.peer,
                    "outcome": "ok",
                    "detail": "version 1",
                }
                for _, put in new
            ],
        )
        return again

    def _prepare_put(
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
    ) -> _Put:
        """A :meth:`put` checked and sealed, ready for :meth:`_apply_put`."""
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
            "refresh_sent_at": None,  # a new refresh token: nothing of it is in flight
        }
        return _Put(user, name, values, now, actor, peer, expect_version)

    def _apply_put(self, s: Any, put: _Put) -> bool:
        """One attempt at a prepared put inside session ``s``; False if it lost a race with a
        concurrent writer (nothing of it was written: re-read and try again)."""
        user, name, values, now = put.user, put.name, put.values, put.now
        key = _where(user, name)
        current = s.execute(select(_C.c.version).where(key)).scalar()
        if put.expect_version is not None and current != put.expect_version:
            raise Conflict(
                f"credential {name.stem} of {user} is at version {current}, "
                f"not {put.expect_version}; re-read and retry"
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
                return False  # a concurrent writer created it first: update instead
        else:
            res = s.execute(
                update(_C).where(key, _C.c.version == current).values(version=current + 1, **values)
            )
            if res.rowcount != 1:
                return False  # lost the race; re-read the version and apply again
        s.add(
            _audit_entry(
                actor=put.actor,
                action="store",
                user=user,
                name=name,
                peer=put.peer,
                outcome="ok",
                detail=f"version {(current or 0) + 1}",
            )
        )
        return True

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
        token = self._open(None if sealed is None else bytes(sealed), "access_token", user, name)
        if token is None:
            raise NotFound(f"credential {name.stem} of {user} has no access token yet")
        return AccessToken(token, token_type, expires_at, scopes.replace(",", " "))

    def refresh_token(self, user: str, service: str, handle: str | None = None) -> str | None:
        """For the credmon only; never exposed over the API."""
        user, name = self._name(user, service, handle)
        (sealed,) = self._raw_row(self._refresh_sql, user, name)
        return self._open(None if sealed is None else bytes(sealed), "refresh_token", user, name)

    def status(self) -> dict[str, dict[str, int]]:
        """Per service, how many credentials are in each state."""
        q = select(_C.c.service, _C.c.state, func.count()).group_by(_C.c.service, _C.c.state)
        out: dict[str, dict[str, int]] = {}
        with self.store.engine.connect() as conn:
            for service, state, n in conn.execute(q):
                out.setdefault(service, {})[state] = int(n)
        return out

    def audit_log(self, user: str | None = None, limit: int = 100) -> list[Mapping[str, Any]]:
        """The newest ``limit`` audit rows (of ``user``), newest first, pending fetches flushed.

        Nothing in htsec shows the audit yet: the tests read it here, and the portal's token
        inventory will, to show users the history of their own credentials."""
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
