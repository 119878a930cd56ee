"""htsec's database: SQLAlchemy 2 over SQLite (default, WAL) or PostgreSQL, migrated by Alembic."""

from htsec.store.db import Store, open_store

__all__ = ["Store", "open_store"]
