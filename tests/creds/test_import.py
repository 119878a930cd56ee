"""``htsec cred import``: an HTCondor credential directory, written here byte by byte as
HTCondor's credd and web server write it (FORMATS.md section 3), taken into the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from htsec import _fs
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.files import parse_top
from htsec.creds.importer import import_directory
from htsec.creds.store import CredStore
from htsec.errors import CredentialFileError
from htsec.store import open_store
from tests.conftest import run, stored_client_secret

RT = "htcondor-written-REFRESH-token"
AT = "htcondor-written-ACCESS-token"
SECRET = "client-SECRET-from-meta"


def write(path: Path, data: str, mode: int = 0o400) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)


def make_condor_dir(root: Path) -> None:
    root.mkdir(mode=0o770)
    # OAuth credential with handle: .top from the web server, .meta with the secret in clear,
    # .use written by condor_credmon_oauth (single line).
    write(
        root / "alice" / "box_work.top",
        json.dumps({"refresh_token": RT, "scopes": "read,write", "audience": "https://box"}),
    )
    write(
        root / "alice" / "box_work.meta",
        json.dumps(
            {
                "client_id": "cid",
                "client_secret": SECRET,
                "token_url": "https://box/token",
                "use_refresh_token": True,
            }
        ),
    )
    write(
        root / "alice" / "box_work.use",
        json.dumps({"access_token": AT, "token_type": "Bearer", "expires_in": 3600}),
    )
    # A second user, no handle, no .use yet.
    write(root / "bob" / "gdrive.top", json.dumps({"refresh_token": "bob-rt", "scopes": ""}))
    # Corrupt file: reported, the others still imported.
    write(root / "carol" / "onedrive.top", "{not json")
    write(root / "alice.mark", "")
    write(root / "pid", "1234\n", 0o644)


def test_import_condor_directory(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "oauth_credentials"
    make_condor_dir(root)
    r = run("cred", "import", str(root), "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert sorted((x["user"], x["name"]) for x in report["imported"]) == [
        ("alice", "box_work"),
        ("bob", "gdrive"),
    ]
    assert [Path(p["path"]).name for p in report["problems"]] == ["onedrive.top"]
    # The secrets are in the store, sealed: the raw database never holds them.
    raw = b"".join(p.read_bytes() for p in home.glob("htsec.db*"))
    assert b"box" in raw
    for secret in (RT, AT, SECRET):
        assert secret.encode() not in raw
    # And they come back intact through the store.
    from htsec.config import load
    from htsec.creds.crypto import Sealer
    from htsec.creds.store import CredStore
    from htsec.store import open_store

    s = load()
    cs = CredStore(open_store(s.database_url), Sealer(s.store_key_file))
    try:
        assert cs.refresh_token("alice", "box", "work") == RT
        assert stored_client_secret(cs, "alice", "box", "work") == SECRET
        tok = cs.access_token("alice", "box", "work")
        assert tok.access_token == AT and tok.token_type == "Bearer"
        info = cs.info("alice", "box", "work")
        assert info.scopes == ["read", "write"] and info.audience == "https://box"
        assert cs.info("bob", "gdrive").has_access_token is False
        actions = [e["action"] for e in cs.audit_log(limit=10)]
        assert actions[0] == "import"
    finally:
        cs.store.close()


def test_import_human_output(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "oauth_credentials"
    make_condor_dir(root)
    r = run("cred", "import", str(root))
    assert r.code == 0
    assert "imported 2 credential(s)" in r.out
    assert "skipped" in r.err and "onedrive.top" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_rekey_after_import(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "oauth_credentials"
    make_condor_dir(root)
    assert run("store", "init").code == 0
    assert run("cred", "import", str(root)).code == 0
    key_file = home / "store.key"
    before = [ln for ln in key_file.read_text().splitlines() if not ln.startswith("#")]
    r = run("store", "rekey")
    assert r.code == 0 and "re-sealed 2 credential(s)" in r.out and "dropped 1 old key" in r.out
    after = [ln for ln in key_file.read_text().splitlines() if not ln.startswith("#")]
    assert len(after) == 1 and after[0] != before[0]
    from htsec.config import load
    from htsec.creds.crypto import Sealer
    from htsec.creds.store import CredStore
    from htsec.store import open_store

    s = load()
    cs = CredStore(open_store(s.database_url), Sealer(s.store_key_file))
    try:
        assert cs.refresh_token("alice", "box", "work") == RT
        assert stored_client_secret(cs, "alice", "box", "work") == SECRET
    finally:
        cs.store.close()


def test_hostile_numbers_in_imported_files(tmp_path: Path) -> None:
    with pytest.raises(CredentialFileError, match="out of range"):
        parse_top(b'{"refresh_token": "r", "x": 1e400}')
    root = tmp_path / "creds"
    root.mkdir(mode=0o700)
    for user, use in (
        ("ann", b'{"access_token": "a", "expires_in": 1e400}'),
        ("ben", b'{"access_token": "b", "expires_at": 1e30}'),
        ("cid", b'{"access_token": "c", "expires_in": 600}'),
    ):
        (root / user).mkdir(mode=0o700)
        _fs.write_atomic(root / user / "box.use", use, 0o400)
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    generate_key_file(tmp_path / "k")
    creds = CredStore(store, Sealer(tmp_path / "k"))
    result = import_directory(creds, root, actor="test")
    users = sorted(i["user"] for i in result["imported"])
    assert users == ["ben", "cid"], result
    assert creds.info("ben", "box").access_expires_at is None
    assert any("ann" in p["path"] for p in result["problems"])
    store.close()
