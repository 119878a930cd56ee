"""The store on both databases (``db_url``: SQLite and a throw-away PostgreSQL): migrations,
schema, sessions, concurrent writers, errors, and the SQLite file's mode."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import UniqueConstraint, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from htsec.errors import StoreError
from htsec.store import db as store_db
from htsec.store.db import Store, open_store
from htsec.store.models import Base, IssuedToken, Revocation


def head_revision() -> str:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(store_db._MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def token(jti: str, sub: str = "alice@pool.example.org") -> IssuedToken:
    return IssuedToken(
        jti=jti,
        sub=sub,
        kid="POOL",
        scope="condor:/READ condor:/WRITE",
        iat=1_700_000_000,
        exp=1_700_003_600,
        minted_by="root@pool.example.org",
        minted_via="cli",
    )


def test_migrations_from_empty_and_idempotent(db_url: str) -> None:
    s = open_store(db_url)
    try:
        assert current_revision(s) == head_revision()
        with s.session() as sess:
            sess.add(token("j1"))
    finally:
        s.close()
    # Opening again runs the migrations again: nothing changes and nothing is lost.
    s = open_store(db_url)
    try:
        assert current_revision(s) == head_revision()
        with s.session() as sess:
            assert sess.scalars(select(IssuedToken.jti)).all() == ["j1"]
    finally:
        s.close()


def test_open_without_migrating_leaves_database_empty(db_url: str) -> None:
    s = open_store(db_url, migrate_schema=False)
    try:
        assert inspect(s.engine).get_table_names() == []
    finally:
        s.close()


def test_schema_matches_models(store: Store) -> None:
    insp = inspect(store.engine)
    tables = set(insp.get_table_names())
    assert set(Base.metadata.tables) | {"alembic_version"} == tables
    for name, table in Base.metadata.tables.items():
        assert {c["name"] for c in insp.get_columns(name)} == set(table.columns.keys()), name
        indexes = {i["name"] for i in insp.get_indexes(name) if "duplicates_constraint" not in i}
        assert indexes == {i.name for i in table.indexes}, name
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints(name)}
        want = {
            tuple(c.columns.keys()) for c in table.constraints if isinstance(c, UniqueConstraint)
        }
        assert uniques == want, name


def test_round_trip(store: Store) -> None:
    with store.session() as s:
        s.add(token("j-round", sub="bob@pool.example.org"))
        s.add(Revocation(kind="jti", value="j-old", created_at=1, created_by="root", reason=None))
    with store.session() as s:
        got = s.get(IssuedToken, "j-round")
        assert got is not None
        assert (got.sub, got.kid, got.scope, got.iat, got.exp, got.minted_via) == (
            "bob@pool.example.org",
            "POOL",
            "condor:/READ condor:/WRITE",
            1_700_000_000,
            1_700_003_600,
            "cli",
        )
        rev = s.scalars(select(Revocation)).one()
        assert (rev.id, rev.kind, rev.value, rev.reason) == (1, "jti", "j-old", None)
    # A 64-bit time survives (BigInteger on both databases).
    with store.session() as s:
        s.get(IssuedToken, "j-round").exp = 2**40  # type: ignore[union-attr]
    with store.session() as s:
        assert s.get(IssuedToken, "j-round").exp == 2**40  # type: ignore[union-attr]


def test_rollback_on_exception(store: Store) -> None:
    with store.session() as s:
        s.add(token("kept"))
    with pytest.raises(RuntimeError, match="boom"), store.session() as s:
        s.add(token("lost"))
        s.get(IssuedToken, "kept").sub = "changed"  # type: ignore[union-attr]
        s.flush()  # the rows reached the database before the error
        raise RuntimeError("boom")
    with store.session() as s:
        assert s.scalars(select(IssuedToken.jti)).all() == ["kept"]
        assert s.get(IssuedToken, "kept").sub == "alice@pool.example.org"  # type: ignore[union-attr]


def test_integrity_error_rolls_back(store: Store) -> None:
    with store.session() as s:
        s.add(token("dup"))
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(token("other"))
        s.add(token("dup"))
    with store.session() as s:
        assert s.scalars(select(IssuedToken.jti)).all() == ["dup"]


THREADS = 4
PER_THREAD = 50


def test_concurrent_writers(store: Store) -> None:
    """Threads each commit one row at a time: all rows arrive, ids stay unique."""
    start = threading.Barrier(THREADS, timeout=30)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(PER_THREAD):
                with store.session() as s:
                    s.add(token(f"t{n}-{i}", sub=f"user{n}"))
                    s.add(Revocation(kind="jti", value=f"t{n}-{i}", created_at=i, created_by="x"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writers did not finish in 120s"
    assert errors == []
    total = THREADS * PER_THREAD
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(IssuedToken)) == total
        jtis = set(s.scalars(select(IssuedToken.jti)))
        assert jtis == {f"t{n}-{i}" for n in range(THREADS) for i in range(PER_THREAD)}
        ids = s.scalars(select(Revocation.id)).all()
        assert len(ids) == len(set(ids)) == total
        assert sorted(s.scalars(select(Revocation.value))) == sorted(jtis)
        for n in range(THREADS):
            per_sub = select(func.count()).where(IssuedToken.sub == f"user{n}")
            assert s.scalar(per_sub) == PER_THREAD


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "is not a database URL"),
        ("postgresql+nosuchdriver://u@127.0.0.1/x", "cannot use database"),
        ("postgresql+psycopg://u:s3cret@127.0.0.1:1/x", "cannot open database"),
    ],
    ids=["garbage", "no-driver", "unreachable"],
)
def test_bad_url_raises_store_error(url: str, says: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store(url)
    msg = str(info.value)
    assert says in msg
    assert "Traceback" not in msg
    assert 'File "' not in msg
    assert "s3cret" not in msg  # a password in the URL is never echoed
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_sqlite_file_created_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "htsec.db"
    old = os.umask(0o022)
    try:
        s = open_store(f"sqlite:///{path}")
    finally:
        os.umask(old)
    try:
        with s.session() as sess:
            sess.add(token("j"))  # makes SQLite create its -wal and -shm files
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for side in path.parent.iterdir():
            assert stat.S_IMODE(side.stat().st_mode) == 0o600, side.name
        with s.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        s.close()


def test_sqlite_dangling_symlink_refused(tmp_path: Path) -> None:
    """A dangling symlink at the database path is refused; its target is never created."""
    target = tmp_path / "elsewhere" / "planted.db"
    target.parent.mkdir()
    link = tmp_path / "htsec.db"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        open_store(f"sqlite:///{link}")
    assert not target.exists()


def test_sqlite_symlink_to_a_database_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    open_store(f"sqlite:///{real}").close()
    link = tmp_path / "htsec.db"
    link.symlink_to(real)
    with pytest.raises(StoreError, match="symbolic link"):
        open_store(f"sqlite:///{link}")


def test_sqlite_symlinked_journal_refused(tmp_path: Path) -> None:
    db = tmp_path / "htsec.db"
    (tmp_path / "htsec.db-wal").symlink_to(tmp_path / "victim")
    with pytest.raises(StoreError, match=r"htsec\.db-wal is a symbolic link"):
        open_store(f"sqlite:///{db}")
    assert not (tmp_path / "victim").exists()


def test_sqlite_symlink_is_a_clear_cli_error(tmp_path: Path) -> None:
    from tests.conftest import run

    link = tmp_path / "htsec.db"
    link.symlink_to(tmp_path / "planted.db")
    assert run("key", "create", "POOL").code == 0
    r = run(
        "token",
        "create",
        "-i",
        "alice@pool.example.org",
        env={"_CONDOR_HTSEC_DATABASE_URL": f"sqlite:///{link}"},
    )
    assert r.code == 1, (r.out, r.err)
    assert "is a symbolic link; refusing to follow it" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "planted.db").exists()
