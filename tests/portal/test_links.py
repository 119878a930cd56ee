"""htsec.creds.links: one-time authorisation links in the store (SQLite and PostgreSQL), and
the credd route ``POST /v1/creds/authorizations`` that makes them."""

from __future__ import annotations

import time
from time import monotonic

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.creds.links import (
    MAX_LIVE_LINKS,
    Need,
    complete_need,
    create_link,
    link_hash,
    lookup_link,
    open_link,
    peek_link,
)
from htsec.errors import (
    BadCredentialName,
    CredStoreError,
    Forbidden,
    LinkGone,
    NotFound,
    TooManyRequests,
)
from htsec.server import create_app
from htsec.store import Store
from htsec.tokens.authority import Authority
from tests.creds.conftest import bearer

BOX = Need("box", None, frozenset({"read", "write"}))
DRIVE = Need("gdrive", "work", frozenset({"drive.file"}), "https://www.googleapis.com")


def _audit(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT outcome, detail FROM audit_log WHERE action = 'link' ORDER BY id")
        )
        return [(r[0], r[1]) for r in rows]


def test_a_link_is_stored_by_its_hash_never_its_id(store: Store) -> None:
    link = create_link(store, user="alice@pool.example.org", needs=[BOX, DRIVE], ttl=900)
    assert len(link.id) == 64 and link.id == link.id.lower()
    assert link.user == "alice"
    with store.engine.connect() as conn:
        dump = " ".join(
            str(v)
            for table in ("pending_authorizations", "authorization_needs", "audit_log")
            for row in conn.execute(text(f"SELECT * FROM {table}"))
            for v in row
        )
    assert link.id not in dump and link_hash(link.id) in dump
    got = lookup_link(store, link.id)
    assert got.needs == (BOX, DRIVE) and got.done == (False, False)
    assert got.expires_at - got.created_at == 900


def test_scopes_are_a_set(store: Store) -> None:
    a = Need("box", scopes=frozenset(["write", "read", "read"]))
    assert a == BOX and a.scope_text == "read write"


def test_an_expired_link_is_refused_and_audited(store: Store) -> None:
    link = create_link(store, user="alice", needs=[BOX], ttl=60)
    with pytest.raises(LinkGone, match="expired"):
        lookup_link(store, link.id, now=time.time() + 61)
    assert _audit(store)[-1] == ("expired", "link expired")


def test_an_unknown_link_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        lookup_link(store, "0" * 64)
    with pytest.raises(BadCredentialName):
        lookup_link(store, "../../etc/passwd")


def test_a_link_binds_to_the_first_browser_session(store: Store) -> None:
    link = create_link(store, user="alice", needs=[BOX], ttl=900)
    assert open_link(store, link.id, session_hash="a" * 64).session_hash == "a" * 64
    assert open_link(store, link.id, session_hash="a" * 64).session_hash == "a" * 64
    with pytest.raises(LinkGone, match="another browser"):
        open_link(store, link.id, session_hash="b" * 64)
    assert _audit(store)[-1] == ("denied", "link opened in a second browser session")


def test_a_link_refuses_a_session_logged_in_as_another_user(store: Store) -> None:
    link = create_link(store, user="alice", needs=[BOX], ttl=900)
    with pytest.raises(Forbidden, match="this link is for alice"):
        open_link(store, link.id, session_hash="a" * 64, session_user="bob@pool.example.org")
    assert lookup_link(store, link.id).session_hash is None  # not bound by the refusal
    assert _audit(store)[-1][0] == "denied"


def test_a_link_refuses_a_session_of_another_domains_user_of_the_same_name(
    store: Store,
) -> None:
    # The dashboard keeps an in-domain user as the bare name ("alice") and anyone else by
    # their whole identity: alice@other.domain is not alice (DESIGN.md: identities of other
    # domains reach no user's credentials).
    link = create_link(store, user="alice", needs=[BOX], ttl=900)
    with pytest.raises(Forbidden, match=r"logged in as alice@other\.domain"):
        open_link(store, link.id, session_hash="a" * 64, session_user="alice@other.domain")
    assert lookup_link(store, link.id).session_hash is None
    assert open_link(store, link.id, session_hash="a" * 64, session_user="alice").session_hash


def test_a_user_has_a_bounded_number_of_live_links(store: Store) -> None:
    # Each POST /v1/creds/authorizations makes a link that stays a day past its expiry: a user
    # looping over it would fill the store. Used-up and expired links do not count.
    create_link(store, user="alice", needs=[BOX], ttl=-1)  # expired
    for _ in range(MAX_LIVE_LINKS - 1):
        create_link(store, user="alice", needs=[BOX], ttl=900)
    used = create_link(store, user="alice", needs=[BOX], ttl=900)
    with pytest.raises(TooManyRequests, match="waiting"):
        create_link(store, user="alice", needs=[BOX], ttl=900)
    assert _audit(store)[-1][0] == "too-many"
    create_link(store, user="bob", needs=[BOX], ttl=900)  # another user is not held up
    complete_need(store, used.id, 0)
    create_link(store, user="alice", needs=[BOX], ttl=900)


def test_a_link_is_used_up_when_every_need_is_done(store: Store) -> None:
    link = create_link(store, user="alice", needs=[BOX, DRIVE], ttl=900)
    assert complete_need(store, link.id, 0).done == (True, False)
    lookup_link(store, link.id)
    assert complete_need(store, link.id, 1).complete
    with pytest.raises(LinkGone, match="already used"):
        lookup_link(store, link.id)
    assert _audit(store)[-1] == ("reused", "link already used")


def test_bad_needs_are_refused(store: Store) -> None:
    with pytest.raises(CredStoreError):
        create_link(store, user="alice", needs=[], ttl=900)
    with pytest.raises(CredStoreError):
        Need("box", scopes=frozenset({"two words"}))
    with pytest.raises(BadCredentialName):
        Need("../box")


def test_route_makes_a_link_for_the_callers_own_user(
    settings: Settings, authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTSEC_PORTAL_URL", "https://portal.example.org/creds/")
    monkeypatch.setenv("HTSEC_PORTAL_LINK_LIFETIME", "120")
    h = bearer(authority.mint(identity="alice@pool.example.org", authz=["WRITE"]))
    with TestClient(create_app(settings, authority)) as c:
        t0 = time.time()
        r = c.post(
            "/v1/creds/authorizations",
            headers=h,
            json={"needs": [{"service": "box", "scopes": ["write", "read"]}]},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["url"].startswith("https://portal.example.org/creds/key/")
        assert body["user"] == "alice"
        assert t0 + 119 <= body["expires_at"] <= time.time() + 121
        link = lookup_link(authority.store, body["url"].rsplit("/", 1)[1])
        assert link.needs == (BOX,)
        bad = c.post("/v1/creds/authorizations", headers=h, json={"needs": [{"service": "a/b"}]})
        assert bad.status_code == 400, bad.text
        reader = bearer(authority.mint(identity="bob@pool.example.org", authz=["READ"]))
        denied = c.post(
            "/v1/creds/authorizations", headers=reader, json={"needs": [{"service": "box"}]}
        )
        assert denied.status_code == 403
        assert c.post("/v1/creds/authorizations", json={"needs": []}).status_code == 401


def test_links_a_day_past_their_expiry_are_purged_once_a_minute(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_link(store, user="alice", needs=[BOX], ttl=900)  # the first link purges
    old = create_link(store, user="alice", needs=[BOX], ttl=60, created_at=time.time() - 90000)
    create_link(store, user="alice", needs=[BOX], ttl=900)  # within the minute: no table scan
    assert peek_link(store, old.id) is not None
    with pytest.raises(LinkGone):  # and still refused
        lookup_link(store, old.id)
    later = monotonic() + 61
    monkeypatch.setattr("htsec.store.db.monotonic", lambda: later)
    create_link(store, user="alice", needs=[BOX], ttl=900)
    with pytest.raises(NotFound):
        lookup_link(store, old.id)
    with store.engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM authorization_needs WHERE link_hash = :h"),
            {"h": link_hash(old.id)},
        ).scalar_one()
    assert n == 0
