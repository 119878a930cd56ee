"""One-time authorisation links: "log in at these providers so your job can run".

``htsec submit`` (through ``POST /v1/creds/authorizations``) asks for a link naming the
credentials a user still needs; the portal shows it at ``<portal URL>/key/<64 hex>``. A link

* is for one user, who is the only one that can complete it (a browser logged in to the
  portal as someone else is refused);
* expires (``HTSEC_PORTAL_LINK_LIFETIME``, default 900 s; HTCondor's web server keeps its URLs
  12 h);
* is bound to the browser session that first opens it: the same URL in another browser is
  refused, so a leaked URL cannot attach someone else's account;
* is used up once every credential it names is stored.

The store never holds a link's id: rows are keyed by its SHA-256, so reading the database does
not give anyone a working link. condor_credd's pending-login files (``<cred root>/<64 hex>``,
:mod:`htsec.creds.pending`) become links of source ``cred-dir`` when first opened
(:func:`adopt_pending`), with the same rules.

Every refusal is audited (action ``link``), never with the link's id.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from htsec.config import Settings, float_knob, param
from htsec.creds.audit import audit_entry
from htsec.creds.names import TokenName, local_user
from htsec.creds.pending import check_key
from htsec.errors import CredStoreError, Forbidden, LinkGone, NotFound, TooManyRequests
from htsec.store import Store
from htsec.store.models import AuthorizationNeed, PendingAuthorization

if TYPE_CHECKING:
    from htsec.creds.store import CredStore

__all__ = [
    "DEFAULT_LINK_LIFETIME",
    "MAX_LIVE_LINKS",
    "MAX_NEEDS",
    "Link",
    "Need",
    "adopt_pending",
    "complete_need",
    "complete_need_in",
    "consume_link",
    "create_link",
    "link_hash",
    "link_lifetime",
    "link_url",
    "lookup_link",
    "open_link",
    "peek_link",
    "portal_url",
]

#: Seconds a link lives unless ``HTSEC_PORTAL_LINK_LIFETIME`` says otherwise.
#: What the link functions take: the store, or the credential store holding it.
AnyStore: TypeAlias = "Store | CredStore"

DEFAULT_LINK_LIFETIME = 900.0
#: Credentials one link may ask for.
MAX_NEEDS = 64
#: Links of one user waiting at once (neither used up nor expired) that the API makes.
MAX_LIVE_LINKS = 100
_MAX_SCOPES = 64
_MAX_SCOPE = 256
_MAX_AUDIENCE = 1024

_KEEP_EXPIRED = 86400
_PURGE_EVERY = 60.0
_LINKS = cast(Table, PendingAuthorization.__table__)
_NEEDS = cast(Table, AuthorizationNeed.__table__)


@dataclass(frozen=True)
class Need:
    """One credential a job needs: ``<service>[_<handle>]`` with these scopes (a set: order
    and repetition do not matter) and audience."""

    service: str
    handle: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    audience: str | None = None

    def __post_init__(self) -> None:
        TokenName(self.service, self.handle or "")  # BadCredentialName for HTCondor's refusals
        object.__setattr__(self, "scopes", frozenset(self.scopes))
        if self.handle == "":
            object.__setattr__(self, "handle", None)
        if self.audience == "":
            object.__setattr__(self, "audience", None)
        if len(self.scopes) > _MAX_SCOPES:
            raise CredStoreError(f"at most {_MAX_SCOPES} scopes per credential")
        for s in self.scopes:
            if not s or len(s) > _MAX_SCOPE or any(c.isspace() or not c.isprintable() for c in s):
                raise CredStoreError(
                    f"scope {s[:40]!r} must be 1 to {_MAX_SCOPE} printable characters, no spaces"
                )
        if self.audience is not None and (
            len(self.audience) > _MAX_AUDIENCE or not self.audience.isprintable()
        ):
            raise CredStoreError(f"audience must be at most {_MAX_AUDIENCE} printable characters")

    @property
    def name(self) -> TokenName:
        return TokenName(self.service, self.handle or "")

    @property
    def scope_text(self) -> str:
        """The scopes space-separated and sorted, as the store keeps them."""
        return " ".join(sorted(self.scopes))


@dataclass(frozen=True)
class Link:
    """A link as the store has it; ``id`` is the secret (only known to whoever holds the URL)."""

    id: str
    user: str
    needs: tuple[Need, ...]
    done: tuple[bool, ...]
    created_at: int
    expires_at: int
    source: str = "htsec"
    session_hash: str | None = None
    consumed_at: int | None = None

    @property
    def hash(self) -> str:
        return link_hash(self.id)

    @property
    def complete(self) -> bool:
        return all(self.done)

    def __repr__(self) -> str:
        return f"Link(user={self.user!r}, needs={len(self.needs)}, expires_at={self.expires_at})"


def link_hash(link_id: str) -> str:
    """What the store keys a link by: the SHA-256 (hex) of its id."""
    return hashlib.sha256(link_id.encode()).hexdigest()


def link_lifetime() -> float:
    """``HTSEC_PORTAL_LINK_LIFETIME``: seconds a new link lives (default 900)."""
    value = float_knob("HTSEC_PORTAL_LINK_LIFETIME", DEFAULT_LINK_LIFETIME, what="seconds")
    return value or DEFAULT_LINK_LIFETIME


def portal_url(settings: Settings) -> str:
    """The portal's base URL: ``HTSEC_PORTAL_URL``, else HTCondor's ``CREDMON_WEB_PREFIX``,
    else htsec serve's own ``HTSEC_SERVER_URL`` (the portal is mounted there)."""
    for knob in ("HTSEC_PORTAL_URL", "CREDMON_WEB_PREFIX"):
        value = (param(knob) or "").strip()
        if value:
            return value.rstrip("/")
    return settings.server_url.rstrip("/")


def link_url(base: str, link_id: str) -> str:
    """``<base>/key/<id>``: the URL condor_submit (and ``htsec submit``) shows."""
    return f"{base.rstrip('/')}/key/{check_key(link_id)}"


def _db(store: AnyStore) -> Store:
    """A :class:`Store`, also from a :class:`~htsec.creds.store.CredStore`."""
    inner = getattr(store, "store", store)
    if not isinstance(inner, Store):
        raise TypeError("links need a Store or a CredStore")
    return inner


def _audit(s: Session, user: str, outcome: str, detail: str, actor: str = "portal") -> None:
    s.add(
        audit_entry(
            actor=actor,
            action="link",
            user=user,
            name=None,
            peer=None,
            outcome=outcome,
            detail=detail,
        )
    )


def create_link(
    store: AnyStore,
    *,
    user: str,
    needs: Sequence[Need],
    ttl: float | None = None,
    source: str = "htsec",
    actor: str = "htsec",
    link_id: str | None = None,
    created_at: float | None = None,
) -> Link:
    """A new link for ``user`` (``user@domain`` or a local name) asking for ``needs``.

    ``ttl`` defaults to :func:`link_lifetime`. ``link_id`` is for condor_credd's keys (the
    drop-in); otherwise 32 random bytes, as hex.

    :raises TooManyRequests: ``user`` already has :data:`MAX_LIVE_LINKS` links of htsec's
        waiting (audited).
    """
    if not needs:
        raise CredStoreError("a link asks for at least one credential")
    if len(needs) > MAX_NEEDS:
        raise CredStoreError(f"a link asks for at most {MAX_NEEDS} credentials")
    lid = check_key(link_id) if link_id is not None else secrets.token_hex(32)
    who = local_user(user)
    now = int(created_at if created_at is not None else time.time())
    life = link_lifetime() if ttl is None else ttl
    expires = int(now + life)
    uniq = tuple(dict.fromkeys(needs))
    db = _db(store)
    with db.session() as s:
        # Links a day past their expiry are of no use, even to explain a refusal: gone (their
        # needs with them, ON DELETE CASCADE). A scan of the table: once a minute, not on
        # every link (expiry is checked on each use, so a late purge changes nothing).
        if db.due("links.purge", _PURGE_EVERY):
            s.execute(delete(_LINKS).where(_LINKS.c.expires_at < now - _KEEP_EXPIRED))
        if source == "htsec":
            live = s.execute(
                select(func.count())
                .select_from(_LINKS)
                .where(
                    _LINKS.c.user == who,
                    _LINKS.c.source == "htsec",
                    _LINKS.c.consumed_at.is_(None),
                    _LINKS.c.expires_at > now,
                )
            ).scalar_one()
            if live >= MAX_LIVE_LINKS:
                _audit(s, who, "too-many", f"{live} links waiting", actor=actor)
                s.commit()
                raise TooManyRequests(
                    f"{who} has {live} authorisation links waiting; use one of them, or wait "
                    "until they expire"
                )
        s.execute(
            insert(_LINKS).values(
                id=link_hash(lid),
                user=who,
                service="",
                handle="",
                provider="",
                scopes="",
                audience="",
                state="pending",
                created_at=now,
                expires_at=expires,
                source=source,
            )
        )
        s.execute(
            insert(_NEEDS),
            [
                {
                    "link_hash": link_hash(lid),
                    "position": i,
                    "service": n.service,
                    "handle": n.handle or "",
                    "provider": n.service,
                    "scopes": n.scope_text,
                    "audience": n.audience,
                }
                for i, n in enumerate(uniq)
            ],
        )
        _audit(s, who, "created", f"{len(uniq)} credential(s), {source}", actor=actor)
    return Link(lid, who, uniq, (False,) * len(uniq), now, expires, source)


def _read(store: Store, lid: str) -> Link | None:
    h = link_hash(lid)
    with store.engine.connect() as conn:
        row = conn.execute(select(_LINKS).where(_LINKS.c.id == h)).first()
        if row is None:
            return None
        rows = conn.execute(
            select(_NEEDS).where(_NEEDS.c.link_hash == h).order_by(_NEEDS.c.position)
        ).all()
    needs = tuple(
        Need(
            r.service,
            r.handle or None,
            frozenset(r.scopes.split()),
            r.audience or None,
        )
        for r in rows
    )
    return Link(
        id=lid,
        user=row.user,
        needs=needs,
        done=tuple(r.completed_at is not None for r in rows),
        created_at=row.created_at,
        expires_at=row.expires_at,
        source=row.source,
        session_hash=row.session_hash,
        consumed_at=row.consumed_at,
    )


def peek_link(store: AnyStore, link_id: str) -> Link | None:
    """The link ``link_id`` as stored, live or not (no checks, nothing audited)."""
    return _read(_db(store), check_key(link_id))


def _refuse(store: Store, user: str, outcome: str, detail: str, exc: Exception) -> Exception:
    with store.session() as s:
        _audit(s, user, outcome, detail)
    return exc


def lookup_link(store: AnyStore, link_id: str, *, now: float | None = None) -> Link:
    """The live link ``link_id``.

    :raises NotFound: no such link (audited).
    :raises LinkGone: it expired or was used up (audited).
    """
    db = _db(store)
    lid = check_key(link_id)
    link = _read(db, lid)
    if link is None:
        raise _refuse(db, "", "unknown", "no such link", NotFound("no such authorisation link"))
    t = time.time() if now is None else now
    if link.consumed_at is not None:
        raise _refuse(
            db,
            link.user,
            "reused",
            "link already used",
            LinkGone("this link was already used; run your submit again for a new one"),
        )
    if t >= link.expires_at:
        raise _refuse(
            db,
            link.user,
            "expired",
            "link expired",
            LinkGone("this link has expired; run your submit again for a new one"),
        )
    return link


def open_link(
    store: AnyStore,
    link_id: str,
    *,
    session_hash: str,
    session_user: str | None = None,
    on_bind: Callable[[Session], None] | None = None,
) -> Link:
    """The link ``link_id`` opened in the browser session ``session_hash``: bound to that
    session on first use; refused in any other session, and in a session logged in as another
    user than the link's (``session_user`` is the dashboard's: the bare name of a user of
    ``UID_DOMAIN``, anyone else's whole identity, so ``alice@other.domain`` is not ``alice``).

    ``on_bind`` is called with the store session of the transaction that binds the link
    (the portal stores a new browser session there: one commit for both).

    :raises NotFound, LinkGone: as :func:`lookup_link`.
    :raises Forbidden: the session belongs to another user (audited).
    """
    db = _db(store)
    link = lookup_link(db, link_id)
    if session_user is not None and session_user != link.user:
        shown = session_user[:200]
        raise _refuse(
            db,
            link.user,
            "denied",
            f"link opened by another logged-in user ({shown})",
            Forbidden(
                f"this link is for {link.user}, and this browser is logged in as "
                f"{shown}; log out, or open it as {link.user}"
            ),
        )
    if link.session_hash == session_hash:
        return link
    if link.session_hash is None:
        now = int(time.time())
        with db.session() as s:
            n = s.execute(
                update(_LINKS)
                .where(_LINKS.c.id == link.hash, _LINKS.c.session_hash.is_(None))
                .values(session_hash=session_hash, bound_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if n:
                _audit(s, link.user, "bound", "link opened, bound to a browser session")
                if on_bind is not None:
                    on_bind(s)
        if n:
            return _read(db, link.id) or link
    raise _refuse(
        db,
        link.user,
        "denied",
        "link opened in a second browser session",
        LinkGone(
            "this link was already opened in another browser; links work in one browser "
            "only. Run your submit again for a new one"
        ),
    )


def complete_need(store: AnyStore, link_id: str, position: int) -> Link:
    """Mark the link's need ``position`` done; the link is used up when all are."""
    db = _db(store)
    with db.session() as s:
        complete_need_in(s, link_id, position)
    link = _read(db, link_id)
    if link is None:
        raise NotFound("no such authorisation link")
    return link


def complete_need_in(s: Session, link_id: str, position: int) -> bool:
    """:func:`complete_need` inside session ``s`` (the transaction storing the credential);
    True when that used the link up."""
    h = link_hash(link_id)
    now = int(time.time())
    s.execute(
        update(_NEEDS)
        .where(
            _NEEDS.c.link_hash == h,
            _NEEDS.c.position == position,
            _NEEDS.c.completed_at.is_(None),
        )
        .values(completed_at=now)
    )
    left = s.execute(
        select(_NEEDS.c.position).where(_NEEDS.c.link_hash == h, _NEEDS.c.completed_at.is_(None))
    ).first()
    if left is None:
        s.execute(
            update(_LINKS)
            .where(_LINKS.c.id == h, _LINKS.c.consumed_at.is_(None))
            .values(consumed_at=now, state="done")
        )
    return left is None


def consume_link(store: AnyStore, link_id: str) -> bool:
    """Use the link up now (whatever is left undone); False if it already was."""
    db = _db(store)
    with db.session() as s:
        n = s.execute(
            update(_LINKS)
            .where(_LINKS.c.id == link_hash(link_id), _LINKS.c.consumed_at.is_(None))
            .values(consumed_at=int(time.time()), state="done")
        ).rowcount  # type: ignore[attr-defined]
    return bool(n)


def adopt_pending(
    store: AnyStore, key: str, *, user: str, needs: Sequence[Need], created_at: float, ttl: float
) -> Link:
    """The link of condor_credd's pending-login file ``key`` (created the first time any
    portal process sees it; two processes racing agree on one row)."""
    db = _db(store)
    existing = _read(db, check_key(key))
    if existing is not None:
        return existing
    try:
        return create_link(
            db,
            user=user,
            needs=needs,
            ttl=ttl,
            source="cred-dir",
            actor="condor_credd",
            link_id=key,
            created_at=created_at,
        )
    except IntegrityError:
        link = _read(db, key)
        if link is None:  # pragma: no cover - the row that conflicted is there
            raise
        return link
