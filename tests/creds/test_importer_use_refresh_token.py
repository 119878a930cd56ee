"""``htsec cred import`` honours ``"use_refresh_token": false`` in a ``.meta`` as HTCondor's
credmon does (``OAuthCredmon.should_renew`` never renews such a token): the access token is
taken over, the refresh token is not, so htsec never refreshes it either."""

from __future__ import annotations

import json
import os
from pathlib import Path

from htsec.config import load
from htsec.creds.crypto import Sealer
from htsec.creds.store import CredStore
from htsec.store import open_store
from tests.conftest import run


def write(path: Path, obj: dict[str, object]) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh)


def test_import_takes_only_the_access_token_when_refreshing_is_off(
    home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "oauth_credentials"
    root.mkdir(mode=0o770)
    for user, use_refresh_token in (("alice", False), ("bob", True)):
        write(root / user / "box.top", {"refresh_token": f"{user}-rt", "scopes": "read"})
        write(
            root / user / "box.meta",
            {
                "client_id": "cid",
                "client_secret": "secret",
                "token_url": "https://box.example.org/token",
                "use_refresh_token": use_refresh_token,
            },
        )
        write(root / user / "box.use", {"access_token": f"{user}-at", "expires_in": 3600})
    r = run("cred", "import", str(root), "--json")
    assert r.code == 0, r.err
    s = load()
    creds = CredStore(open_store(s.database_url), Sealer(s.store_key_file))
    alice, bob = creds.info("alice", "box"), creds.info("bob", "box")
    assert (alice.has_refresh_token, alice.has_access_token) == (False, True)
    assert (bob.has_refresh_token, bob.has_access_token) == (True, True)
    assert creds.access_token("alice", "box").access_token == "alice-at"
    creds.store.close()
