"""The credential store on SQLite and PostgreSQL: sealing, versions, audit, rekey."""

from __future__ import annotations

import inspect
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event, text

from htsec.credmon.leases import Leases
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.names import TokenName
from htsec.creds.store import CredStore
from htsec.creds.writes import MAX_TOKEN_TEXT, prepare_put
from htsec.errors import Conflict, CredentialInactive, NotFound, StoreError, UsageError
from htsec.store import Store
from tests.conftest import stored_client_secret

RT = "rt-0123456789-SECRET-refresh"
AT = "at-abcdefghij-SECRET-access"
CS = "cs-SECRET-client-secret"


@pytest.fixture
def creds(store: Store, tmp_path: Path) -> CredStore:
    generate_key_file(tmp_path / "store.key")
    return CredStore(store, Sealer(tmp_path / "store.key"))


def test_put_get_and_no_secret_in_info(creds: CredStore) -> None:
    info = creds.put(
        "alice",
        "box",
        refresh_token=RT,
        access_token=AT,
        expires_at=2_000_000_000,
        scopes="read, write read",
        audience="https://x",
        client_secret=CS,
    )
    assert (info.user, info.service, info.handle, info.version) == ("alice", "box", None, 1)
    assert info.scopes == ["read", "write"]
    assert RT not in repr(info) and AT not in repr(info.as_dict())
    tok = creds.access_token("alice", "box")
    assert tok.access_token == AT and "secure" in repr(tok) and AT not in repr(tok)
    assert creds.refresh_token("alice", "box") == RT
    assert stored_client_secret(creds, "alice", "box") == CS
    use = tok.use_json(now=1_999_999_000)
    assert use == {
        "access_token": AT,
        "token_type": "bearer",
        "expires_in": 1000,
        "expires_at": 2_000_000_000,
        "scope": "read write",
    }


def test_handles_are_separate(creds: CredStore) -> None:
    creds.put("alice", "box", refresh_token="a")
    creds.put("alice", "box", "work", refresh_token="b")
    assert [c.name.stem for c in creds.credentials("alice")] == ["box", "box_work"]
    assert creds.refresh_token("alice", "box", "work") == "b"


def test_raw_database_holds_no_token_bytes(creds: CredStore, store: Store, db_url: str) -> None:
    creds.put("alice", "box", refresh_token=RT, access_token=AT, client_secret=CS)
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM credentials")).fetchall()
    dump = repr(rows).encode()
    for secret in (RT, AT, CS):
        assert secret.encode() not in dump
    if db_url.startswith("sqlite"):
        store.close()
        raw = b"".join(
            p.read_bytes() for p in Path(db_url[len("sqlite:///") :]).parent.glob("htsec.db*")
        )
        assert b"alice" in raw  # the scan does see the database's bytes
        for secret in (RT, AT, CS):
            assert secret.encode() not in raw


def test_sealed_value_cannot_move_rows(creds: CredStore, store: Store) -> None:
    creds.put("alice", "box", refresh_token="alice-rt")
    creds.put("bob", "box", refresh_token="bob-rt")
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE credentials SET refresh_token = "
                "(SELECT refresh_token FROM credentials WHERE \"user\" = 'alice') "
                "WHERE \"user\" = 'bob'"
            )
        )
    with pytest.raises(Exception, match="does not belong"):
        creds.refresh_token("bob", "box")


def test_versions_and_conditional_put(creds: CredStore) -> None:
    creds.put("alice", "box", refresh_token="1")
    assert creds.put("alice", "box", refresh_token="2").version == 2
    with pytest.raises(Conflict, match="version 2, not 1") as info:
        creds.put("alice", "box", refresh_token="3", expect_version=1)
    assert info.value.status == 409
    assert creds.put("alice", "box", refresh_token="3", expect_version=2).version == 3


def test_parallel_writers_lose_nothing(creds: CredStore) -> None:
    """8 threads x 10 updates of one credential: every update is applied (version counts)."""
    creds.put("alice", "box", refresh_token="start")
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(10):
                creds.put("alice", "box", refresh_token=f"t{i}-{j}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert creds.info("alice", "box").version == 1 + 80
    stores = [e for e in creds.audit_log("alice", limit=1000) if e["action"] == "store"]
    assert len(stores) == 81
    assert creds.refresh_token("alice", "box") in {f"t{i}-9" for i in range(8)}


def test_put_many_commits_once_and_stores_each_like_put(creds: CredStore, store: Store) -> None:
    """A batch of puts is one transaction; each credential is sealed, versioned and audited as
    by put, and a refused entry is reported on its own while the others are stored."""
    creds.put("u1", "box", refresh_token="old")
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    event.listen(store.engine, "commit", count)
    entries = [
        {"user": f"u{i}", "service": "box", "refresh_token": f"rt-{i}", "actor": "credmon"}
        for i in range(20)
    ]
    entries.append({"user": "u99", "service": "box", "refresh_token": "x" * (MAX_TOKEN_TEXT + 1)})
    entries.append(
        {
            "user": "u98",
            "service": "box",
            "handle": "work",
            "client_secret": CS,
            "access_token": AT,
            "source": "cred-dir",
        }
    )
    results = creds.put_many(entries)
    event.remove(store.engine, "commit", count)
    assert len(commits) == 1
    assert results[:20] == [None] * 20 and results[21] is None
    assert isinstance(results[20], UsageError) and "at most" in str(results[20])
    assert [creds.refresh_token(f"u{i}", "box") for i in range(20)] == [
        f"rt-{i}" for i in range(20)
    ]
    assert creds.info("u1", "box").version == 2 and creds.info("u2", "box").version == 1
    assert stored_client_secret(creds, "u98", "box", "work") == CS
    assert creds.access_token("u98", "box", "work").access_token == AT
    assert creds.from_directory() == [("u98", TokenName("box", "work"))]
    with pytest.raises(NotFound):
        creds.info("u99", "box")
    stores = [e for e in creds.audit_log(limit=1000) if e["action"] == "store"]
    assert len(stores) == 1 + 21
    assert {(e["user"], e["actor"]) for e in stores} >= {(f"u{i}", "credmon") for i in range(20)}


def test_put_and_put_many_share_one_signature_and_its_defaults() -> None:
    """put() spells out prepare_put()'s keywords (a typed public API); put_many() entries get
    prepare_put()'s defaults. The two must not drift: same names, kinds, defaults and types."""
    put = list(inspect.signature(CredStore.put).parameters.values())[1:]  # without self
    prepared = list(inspect.signature(prepare_put).parameters.values())[1:]  # without seal
    # ``also`` (what commits in put()'s transaction, e.g. the portal's link) is put()'s alone.
    assert put[-1].name == "also" and put[-1].kind is inspect.Parameter.KEYWORD_ONLY
    put = put[:-1]
    assert [(p.name, p.kind, p.default, p.annotation) for p in put] == [
        (p.name, p.kind, p.default, p.annotation) for p in prepared
    ]


def test_put_many_in_order_like_puts(creds: CredStore) -> None:
    """Entries naming one credential twice are applied in order (versions 1 and 2), and an
    entry whose expected version does not match is refused alone."""
    creds.put("ann", "box", refresh_token="a1")
    results = creds.put_many(
        [
            {"user": "bob", "service": "box", "refresh_token": "b1"},
            {"user": "ann", "service": "box", "refresh_token": "a2", "expect_version": 7},
            {"user": "bob", "service": "box", "refresh_token": "b2"},
            {"user": "cy", "service": "box", "refresh_token": "c1", "expect_version": 1},
        ]
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Conflict) and results[1].status == 409
    assert isinstance(results[3], Conflict) and results[3].status == 409
    assert creds.refresh_token("bob", "box") == "b2" and creds.info("bob", "box").version == 2
    assert creds.refresh_token("ann", "box") == "a1"
    with pytest.raises(NotFound):
        creds.info("cy", "box")
    details = [e["detail"] for e in creds.audit_log("bob") if e["action"] == "store"]
    assert details == ["version 2", "version 1"]


def test_refresh_token_read_waits_for_no_writer(creds: CredStore, db_url: str) -> None:
    """The credmon reads a refresh token (import, publish) without a write transaction: on
    SQLite it is not queued behind a writer holding the database's write lock."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    creds.put("alice", "box", refresh_token=RT)
    writer = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a reader taking the lock would fail after 10 s
        assert creds.refresh_token("alice", "box") == RT
    finally:
        writer.rollback()
        writer.close()


def test_delete_state_and_status(creds: CredStore) -> None:
    creds.put("alice", "box", refresh_token="x", access_token="y")
    creds.put("bob", "box", refresh_token="x")
    # The credmon marks bob's credential dead through its lease (invalid_grant from the
    # provider); it hands alice's back untouched.
    leases = Leases(creds, "test", set())
    claims = {c.user: c for c in leases.claim(now=int(time.time()), lease_s=30, limit=2)}
    assert leases.fail(claims["bob"], error="invalid_grant", dead=True, next_attempt_at=None)
    assert leases.release(claims["alice"], next_attempt_at=None)
    assert creds.status() == {"box": {"active": 1, "needs_reauth": 1}}
    with pytest.raises(CredentialInactive, match="needs_reauth: invalid_grant"):
        creds.access_token("bob", "box")
    assert creds.delete("alice", "box", actor="alice")
    assert not creds.delete("alice", "box", actor="alice")
    with pytest.raises(NotFound):
        creds.info("alice", "box")


def test_audit_is_append_only_and_secret_free(creds: CredStore, store: Store) -> None:
    creds.put("alice", "box", refresh_token=RT, actor="alice@pool", peer="127.0.0.1")
    creds.delete("alice", "box", actor="alice@pool")
    log = creds.audit_log("alice")
    assert [(e["action"], e["actor"], e["outcome"]) for e in log] == [
        ("delete", "alice@pool", "ok"),
        ("store", "alice@pool", "ok"),
    ]
    assert RT not in repr(log)
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory'"))


def test_rekey_reseals_everything(creds: CredStore, store: Store) -> None:
    for u in ("alice", "bob", "carol"):
        creds.put(u, "box", refresh_token=f"{u}-rt", access_token=f"{u}-at", client_secret="cs")
    old = creds.sealer.current_kid
    creds.sealer.begin_rekey()
    assert creds.reseal_all() == 3
    assert creds.reseal_all() == 0
    creds.sealer.finish_rekey()
    with store.engine.connect() as conn:
        blobs = [
            b
            for row in conn.execute(
                text("SELECT refresh_token, access_token, client_secret FROM credentials")
            )
            for b in row
        ]
    assert all(bytes(b)[3:7].hex() != old for b in blobs)
    assert creds.refresh_token("bob", "box") == "bob-rt"


@pytest.mark.parametrize(
    ("user", "service", "handle"),
    [
        ("../x", "box", None),
        ("alice", "bo_x", None),
        ("alice", "box", "a/b"),
        ("al ice", "box", None),
        ("alice", "", None),
        ("alice", "box", "x\x00"),
    ],
)
def test_bad_names(creds: CredStore, user: str, service: str, handle: str | None) -> None:
    with pytest.raises((UsageError, Exception)) as info:
        creds.put(user, service, handle, refresh_token="x")
    assert info.type.__module__.startswith("htsec")


def test_bounds(creds: CredStore) -> None:
    with pytest.raises(UsageError, match="at most"):
        creds.put("alice", "box", refresh_token="x" * 20000)
    with pytest.raises(UsageError, match="refresh token, an access token"):
        creds.put("alice", "box")


def test_store_and_authz_import_names_not_the_credential_directory() -> None:
    """The store and the permission rules need three name helpers: importing them loads
    htsec.creds.names (and the store's own parts: its audit trail and its writes), never the
    directory, file-format or import modules."""
    code = (
        "import sys, htsec.creds.store, htsec.authz\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('htsec.creds'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(out) == {
        "htsec.creds",
        "htsec.creds.audit",
        "htsec.creds.crypto",
        "htsec.creds.names",
        "htsec.creds.store",
        "htsec.creds.writes",
    }


def test_a_sealed_value_opens_only_in_its_own_cell(creds: CredStore) -> None:
    """The credmon's leases seal and open tokens through these two public methods: a value
    sealed for one user's credential and column opens for that cell only."""
    box = TokenName("box")
    sealed = creds.seal(RT, "refresh_token", "alice", box)
    assert sealed is not None and RT.encode() not in sealed
    assert creds.unseal(sealed, "refresh_token", "alice", box) == RT
    for column, user, name in (
        ("access_token", "alice", box),
        ("refresh_token", "bob", box),
        ("refresh_token", "alice", TokenName("box", "x")),
    ):
        with pytest.raises(StoreError):
            creds.unseal(sealed, column, user, name)
    assert creds.seal(None, "refresh_token", "alice", box) is None
    assert creds.unseal(None, "refresh_token", "alice", box) is None
