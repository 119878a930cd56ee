"""Fixtures shared by the credmon's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import open_store


@pytest.fixture
def creds(tmp_path: Path) -> Iterator[CredStore]:
    """A credential store on a SQLite file (modules that run on both databases define their
    own ``creds`` over the ``store`` fixture)."""
    store = open_store(f"sqlite:///{tmp_path / 'htsec.db'}")
    generate_key_file(tmp_path / "store.key")
    yield CredStore(store, Sealer(tmp_path / "store.key"))
    store.close()
