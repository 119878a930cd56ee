"""Fixtures shared by the credmon's tests: a credential store on SQLite, credential
directories for the local issuer (``cred_root``) and for an OAuth provider (``cred_dir``, with
the test provider ``oidc``, one per module), and a wait for a file's text."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.credmon.issuer import generate_key
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import open_store
from tests.credmon.webserver import write
from tests.oidc import CLIENT_ID, CLIENT_SECRET, default_config, provider_fixture
from tests.oidc import Provider as OidcProvider


@pytest.fixture
def creds(tmp_path: Path) -> Iterator[CredStore]:
    """A credential store on a SQLite file (modules that run on both databases define their
    own ``creds`` over the ``store`` fixture)."""
    store = open_store(f"sqlite:///{tmp_path / 'htsec.db'}")
    generate_key_file(tmp_path / "store.key")
    yield CredStore(store, Sealer(tmp_path / "store.key"))
    store.close()


@pytest.fixture
def cred_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local-issuer credential directory (``2770``) where the credd has asked for alice's
    ``scitokens`` token, the issuer's key and knobs set."""
    key = tmp_path / "issuer.pem"
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", str(key))
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_ISSUER", "https://issuer.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_AUDIENCE", "https://storage.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_LIFETIME", "1200")
    generate_key(key, kid="local")
    root = tmp_path / "oauth_credentials"
    root.mkdir(mode=0o700)
    os.chmod(root, 0o2770)
    user = root / "alice"
    user.mkdir(mode=0o700)
    # What HTCondor's credd writes for a local-issuer service: the user name, not JSON.
    fd = os.open(user / "scitokens.top", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"alice")
    os.close(fd)
    return root


oidc = provider_fixture(default_config())  # modules needing another configuration define their own


@pytest.fixture
def cred_dir(tmp_path: Path, oidc: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An OAuth credential directory (``2770``, alice's directory made) and the pool's
    ``OIDC_*`` knobs for the provider ``oidc``."""
    secret = tmp_path / "oidc.secret"
    write(secret, CLIENT_SECRET, 0o600)
    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_SECRET_FILE", str(secret))
    monkeypatch.setenv("_CONDOR_OIDC_TOKEN_URL", oidc.token_url)
    root = tmp_path / "oauth_credentials"
    root.mkdir()
    os.chmod(root, 0o2770)
    (root / "alice").mkdir(mode=0o700)
    return root


def wait_for_text(path: Path, text: str, timeout: float) -> None:
    """Wait until ``path`` exists and holds ``text``; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text(errors='replace')}")
