"""The credmon's import of HTCondor's credential directory (credmon/daemon.py): what the store
already holds is read in one query, and the credentials found new are stored together, in one
transaction, each sealed and audited as a single store would be."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import event

from htsec.config import Settings
from htsec.credmon.daemon import Credmon
from htsec.credmon.providers import ProviderSet
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import Store

USERS = 30


def _write(path: Path, data: dict[str, object]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """What HTCondor's web server leaves after USERS browser logins: .top and .meta each."""
    root = tmp_path / "oauth_credentials"
    root.mkdir()
    os.chmod(root, 0o2770)
    for i in range(USERS):
        (root / f"u{i}").mkdir(mode=0o700)
        _write(root / f"u{i}" / "oidc.top", {"refresh_token": f"rt-{i}", "scopes": "openid"})
        _write(
            root / f"u{i}" / "oidc.meta",
            {
                "client_id": "htcondor",
                "client_secret": "s3cret",
                "token_url": "https://idp.example.org/token",
                "use_refresh_token": True,
            },
        )
    return root


def test_first_import_is_one_transaction(
    root: Path, store: Store, settings: Settings, tmp_path: Path
) -> None:
    generate_key_file(tmp_path / "store.key")
    creds = CredStore(store, Sealer(tmp_path / "store.key"))
    credmon = Credmon(settings, cred_dir=root, creds=creds, providers=ProviderSet({}, set()))
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    event.listen(store.engine, "commit", count)
    imported, problems = credmon._import()
    assert problems == []
    assert sorted(imported) == sorted(f"u{i}/oidc" for i in range(USERS))
    assert len(commits) == 1
    assert creds.refresh_token("u7", "oidc") == "rt-7"
    assert creds.client_secret("u7", "oidc") == "s3cret"
    assert creds.info("u7", "oidc").scopes == ["openid"]
    stores = [e for e in creds.audit_log(limit=1000) if e["action"] == "store"]
    assert len(stores) == USERS and {e["actor"] for e in stores} == {"credmon"}
    # Already imported: the next pass reads the store once and writes nothing.
    commits.clear()
    assert credmon._import() == ([], [])
    assert commits == []
    event.remove(store.engine, "commit", count)
