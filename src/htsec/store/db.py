"""Opening the store: engine, SQLite pragmas, Alembic migrations to the newest schema."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import monotonic
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from htsec.errors import StoreError

__all__ = ["Store", "migrate", "open_store"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling does not see SAVEPOINTs and can leave a write
    # transaction open after "commit"; SQLAlchemy's documented fix is autocommit mode in the
    # driver plus an explicit BEGIN from SQLAlchemy (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed transaction survives power loss, not only a crash. The credmon commits
    # a rotated refresh token before it publishes anything; that must be durable.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def head_revision() -> str:
    """The newest migration's id, read from the migration files without importing Alembic."""
    revs: set[str] = set()
    downs: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text()
        if m := re.search(r"^revision = ['\"]([^'\"]+)['\"]", text, re.M):
            revs.add(m.group(1))
        if m := re.search(r"^down_revision = ['\"]([^'\"]+)['\"]", text, re.M):
            downs.add(m.group(1))
    heads = revs - downs
    if len(heads) != 1:
        raise StoreError(f"migrations have {len(heads)} heads ({sorted(heads)}); expected one")
    return heads.pop()


def _current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE: take the write lock up front, so a transaction that reads and then writes
    # waits for another writer (busy_timeout) instead of failing with SQLITE_BUSY_SNAPSHOT.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op, without Alembic, when it is)."""
    if _current_revision(engine) == head_revision():
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """A migrated database and a session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._last: dict[str, float] = {}
        self._last_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def due(self, what: str, every: float) -> bool:
        """True at most once per ``every`` seconds for ``what`` (in this process): for
        housekeeping (purging expired rows) that need not run on every request that could."""
        now = monotonic()
        with self._last_lock:
            last = self._last.get(what)
            if last is not None and now - last < every:
                return False
            self._last[what] = now
            return True

    def close(self) -> None:
        self.engine.dispose()


def _prepare_sqlite_file(db: Path) -> None:
    """Create the SQLite file 0600, or check the existing one, never through a symlink.

    SQLite opens the file by name and Python's driver cannot pass ``SQLITE_OPEN_NOFOLLOW``, so
    the name is checked here with ``O_NOFOLLOW`` (a dangling symlink would otherwise have its
    target created) and so are the journal files SQLite creates beside it.
    """
    db.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        fd = os.open(
            db, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600
        )
    except OSError as exc:
        if os.path.islink(db):
            raise StoreError(
                f"database {db} is a symbolic link; refusing to follow it (give the real path "
                "in HTSEC_DATABASE_URL)"
            ) from None
        raise StoreError(f"cannot open database {db}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"database {db} is not a regular file")
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        side = db.with_name(db.name + suffix)
        if os.path.islink(side):
            raise StoreError(f"{side} is a symbolic link; refusing to open database {db}")


def open_store(url: str, *, migrate_schema: bool = True) -> Store:
    """Open (and migrate) the database at ``url``; SQLite files are created 0600."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"HTSEC_DATABASE_URL {url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        _prepare_sqlite_file(Path(parsed.database))
    try:
        engine = create_engine(parsed, future=True)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database {parsed!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    try:
        if migrate_schema:
            migrate(engine)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(
            f"cannot open database {parsed!r}: {detail[0] if detail else exc.__class__.__name__}"
        ) from None
    return Store(engine)
