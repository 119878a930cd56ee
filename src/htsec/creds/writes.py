"""How a credential is written: a put checked and sealed (:func:`prepare_put`), then applied
under the optimistic ``version`` check -- one at a time (:func:`apply_put`; a lost race writes
nothing and is tried again), or many new credentials with one statement each for users,
credentials and audit rows (:func:`apply_puts`, the batch behind ``CredStore.put_many``).
Each is audited in the transaction that writes it. :class:`htsec.creds.store.CredStore` holds
the retries and the batching; this module holds the rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from htsec.creds.audit import audit_entry, audit_values
from htsec.creds.names import TokenName, local_user, split_scopes
from htsec.errors import Conflict, CredentialError, CredStoreError, HtsecError, UsageError
from htsec.store.models import AuditEntry, Credential, User

__all__ = [
    "CREDENTIALS",
    "MAX_TOKEN_TEXT",
    "PUT_BATCH",
    "TYPE_NAME",
    "Put",
    "apply_put",
    "apply_puts",
    "ensure_user",
    "prepare_put",
    "type_name",
    "where",
]

#: Bound on any token or secret text stored (bytes of UTF-8).
MAX_TOKEN_TEXT = 16 * 1024
#: ``CredStore.put_many`` commits at most this many credentials per transaction.
PUT_BATCH = 256
CREDENTIALS = cast(Table, Credential.__table__)
#: Seals a value for one cell: (value, column, user, name) -> sealed bytes (None stays None).
Seal = Callable[[str | None, str, str, TokenName], bytes | None]


@dataclass(frozen=True, repr=False)
class Put:
    """A checked and sealed ``CredStore.put``, not yet written."""

    user: str
    name: TokenName
    values: dict[str, Any]
    now: int
    actor: str
    peer: str | None
    expect_version: int | None


def ensure_user(s: Any, user: str, now: int) -> None:
    """Create the user row if missing (a concurrent creator wins quietly)."""
    if s.get(User, user) is None:
        with suppress(IntegrityError), s.begin_nested():
            s.add(User(name=user, created_at=now))


def where(user: str, name: TokenName) -> Any:
    """The WHERE clause naming one credential."""
    return and_(
        CREDENTIALS.c.user == user,
        CREDENTIALS.c.service == name.service,
        CREDENTIALS.c.handle == (name.handle or ""),
    )


#: RFC 6749 appendix A.13: token-type = type-name / URI-reference; both are visible ASCII
#: (bounded to 64 here). A credential's token_type is stored as text and must be one.
TYPE_NAME = re.compile(r"[\x21-\x7e]{1,64}")


def type_name(value: str) -> str:
    """``value`` if it can be an RFC 6749 token type, else :class:`UsageError`."""
    if not isinstance(value, str) or not TYPE_NAME.fullmatch(value):
        raise UsageError(
            f"token type {str(value)[:80]!r} is not an RFC 6749 type-name or URI "
            "(1 to 64 visible ASCII characters)"
        )
    return value


def bounded(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_TOKEN_TEXT:
        raise UsageError(f"{what} must be text of at most {MAX_TOKEN_TEXT} bytes")
    if "\x00" in value:
        raise UsageError(f"{what} must not contain NUL")
    return value


def normal_scopes(scopes: str | list[str] | None) -> str:
    """Scopes as HTCondor's .top keeps them: a comma list without blanks, sorted as a set.
    A string is split at commas and blanks; each item of a list must be one RFC 6749
    scope-token (``"a b"`` is refused, not silently made two scopes)."""
    if scopes is None:
        return ""
    try:
        return ",".join(sorted(set(split_scopes(scopes))))
    except CredentialError as exc:
        raise CredStoreError(str(exc)) from None


def apply_puts(s: Any, batch: list[tuple[int, Put]], results: list[HtsecError | None]) -> list[int]:
    """:func:`apply_put` for many credentials of distinct names inside session ``s``;
    refusals go into ``results``, and the indexes of entries to put again are returned."""
    users = {put.user for _, put in batch}
    versions = {
        (u, svc, h): v
        for u, svc, h, v in s.execute(
            select(
                CREDENTIALS.c.user,
                CREDENTIALS.c.service,
                CREDENTIALS.c.handle,
                CREDENTIALS.c.version,
            ).where(CREDENTIALS.c.user.in_(users))
        )
    }
    new: list[tuple[int, Put]] = []
    again: list[int] = []
    for i, put in batch:
        current = versions.get((put.user, put.name.service, put.name.handle or ""))
        if current is None and put.expect_version is None:
            new.append((i, put))
            continue
        try:
            if not apply_put(s, put):  # an update: version-checked, one by one
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
                ensure_user(s, u, int(time.time()))
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
            s.execute(insert(CREDENTIALS), rows)
    except IntegrityError:  # one of them was created meanwhile: each on its own
        return again + [i for i, put in new if not apply_put(s, put)]
    s.execute(
        insert(cast(Table, AuditEntry.__table__)),
        [
            audit_values(
                actor=put.actor,
                action="store",
                user=put.user,
                service=put.name.service,
                handle=put.name.handle or "",
                peer=put.peer,
                outcome="ok",
                detail="version 1",
            )
            for _, put in new
        ],
    )
    return again


def prepare_put(
    seal: Seal,
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
) -> Put:
    """A :meth:`CredStore.put` checked and sealed, ready for :func:`apply_put`."""
    user, name = local_user(user), TokenName(service, handle or "")
    bounded(refresh_token, "refresh token")
    bounded(access_token, "access token")
    bounded(client_secret, "client secret")
    if refresh_token is None and access_token is None:
        raise UsageError("store a refresh token, an access token or both")
    now = int(time.time())
    values = {
        "provider": provider or name.service,
        "scopes": normal_scopes(scopes),
        "audience": bounded(audience, "audience") or "",
        "refresh_token": seal(refresh_token, "refresh_token", user, name),
        "access_token": seal(access_token, "access_token", user, name),
        "token_type": type_name(token_type),
        "access_expires_at": expires_at,
        "client_id": bounded(client_id, "client id"),
        "client_secret": seal(client_secret, "client_secret", user, name),
        "token_url": bounded(token_url, "token URL"),
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
    return Put(user, name, values, now, actor, peer, expect_version)


def apply_put(s: Any, put: Put) -> bool:
    """One attempt at a prepared put inside session ``s``; False if it lost a race with a
    concurrent writer (nothing of it was written: re-read and try again)."""
    user, name, values, now = put.user, put.name, put.values, put.now
    key = where(user, name)
    current = s.execute(select(CREDENTIALS.c.version).where(key)).scalar()
    if put.expect_version is not None and current != put.expect_version:
        raise Conflict(
            f"credential {name.stem} of {user} is at version {current}, "
            f"not {put.expect_version}; re-read and retry"
        )
    if current is None:
        ensure_user(s, user, now)
        try:
            with s.begin_nested():
                s.execute(
                    insert(CREDENTIALS).values(
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
            update(CREDENTIALS)
            .where(key, CREDENTIALS.c.version == current)
            .values(version=current + 1, **values)
        )
        if res.rowcount != 1:
            return False  # lost the race; re-read the version and apply again
    s.add(
        audit_entry(
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
