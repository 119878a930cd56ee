"""The credmon's import of HTCondor's credential directory (credmon/daemon.py): what the store
already holds is read in one query, and the credentials found new are stored together, in one
transaction, each sealed and audited as a single store would be."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import event

from htsec.config import Settings, load
from htsec.credmon.daemon import Credmon
from htsec.credmon.providers import ProviderSet
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.files import parse_top
from htsec.creds.store import CredStore
from htsec.store import Store, open_store
from tests.conftest import run, stored_client_secret

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
    assert stored_client_secret(creds, "u7", "oidc") == "s3cret"
    assert creds.info("u7", "oidc").scopes == ["openid"]
    stores = [e for e in creds.audit_log(limit=1000) if e["action"] == "store"]
    assert len(stores) == USERS and {e["actor"] for e in stores} == {"credmon"}
    # Already imported: the next pass reads the store once and writes nothing.
    commits.clear()
    assert credmon._import() == ([], [])
    assert commits == []
    event.remove(store.engine, "commit", count)


def test_a_top_removed_during_the_pass_is_a_problem_not_a_crash(
    cred_root: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credd deletes a .top between the directory scan and the import's stat."""
    import asyncio

    from htsec.credmon import daemon
    from htsec.credmon.daemon import Credmon
    from htsec.creds.files import TopFile

    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_ID", "c")
    monkeypatch.setenv("_CONDOR_OIDC_TOKEN_URL", "https://provider.example.org/token")
    credmon = Credmon(load(), cred_dir=cred_root)
    credmon.creds.put("alice", "oidc", refresh_token="old")
    (cred_root / "alice" / "oidc.top").write_bytes(b'{"refresh_token": "new"}')
    (cred_root / "alice" / "oidc.top").chmod(0o600)
    assert parse_top(b'{"refresh_token": "new"}') == TopFile(refresh_token="new")

    real_stat = os.stat

    def vanished(path: object, *a: object, **k: object) -> os.stat_result:
        if str(path).endswith("oidc.top"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.os, "stat", vanished)
    result = asyncio.run(credmon.one_pass())
    assert any("alice/oidc" in p for p in result.problems), result.problems
    assert (cred_root / "CREDMON_COMPLETE").exists()


def _store() -> CredStore:
    s = load()
    return CredStore(open_store(s.database_url), Sealer(s.store_key_file))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["condor_store_cred delete", "sweep"])
def test_credentials_htcondor_removed_are_forgotten(cred_root: Path, home: Path, how: str) -> None:
    """HTCondor's credd deletes .top and .use (or sweeps the whole user directory): the store
    forgets the credential and no .use comes back. Credentials stored through htsec itself
    (no .top) are left alone."""
    import shutil

    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    creds = _store()
    creds.put("bob", "box", access_token="bob-at", expires_at=int(time.time()) + 3600)
    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    assert (cred_root / "bob" / "box.use").is_file()
    alice = cred_root / "alice"
    if how == "sweep":
        shutil.rmtree(alice)
    else:
        (alice / "scitokens.top").unlink()
        (alice / "scitokens.use").chmod(0o600)
        (alice / "scitokens.use").unlink()
    r = run("credmon", "--cred-dir", str(cred_root), "--once")
    assert r.code == 0, r.err
    assert [(c.user, c.service) for c in creds.credentials()] == [("bob", "box")]
    assert not (alice / "scitokens.use").exists()
    assert alice.exists() == (how != "sweep")  # a swept directory is not re-created
    assert (cred_root / "bob" / "box.use").is_file()
    audit = [r for r in creds.audit_log("alice") if r["action"] == "delete"]
    assert audit and audit[-1]["actor"] == "credmon"
    creds.store.close()
