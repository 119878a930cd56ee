"""Shared fixtures: an isolated htsec home per test, and ways to run the CLI."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from htsec.config import Settings, load

if TYPE_CHECKING:
    from htsec.creds.store import CredStore
    from htsec.store.db import Store

REPO = Path(__file__).resolve().parent.parent
HTSEC = str(Path(sys.executable).with_name("htsec"))


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's HTCondor or htsec configuration."""
    for name in list(os.environ):
        if name.startswith(("_CONDOR_", "HTSEC_")) or name == "CONDOR_CONFIG":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HTSEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("_CONDOR_TRUST_DOMAIN", "pool.example.org")
    monkeypatch.setenv("_CONDOR_UID_DOMAIN", "pool.example.org")  # users are user@pool...


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask of 077 for the test: every mode it checks must come from htsec, not from a
    friendly umask."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def empty_cred_root(tmp_path: Path) -> Path:
    """An empty OAuth credential directory as HTCondor's setup makes it (2770)."""
    root = tmp_path / "oauth_credentials"
    root.mkdir()
    root.chmod(0o2770)
    return root


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(clean_environ: None) -> Settings:
    return load()


@pytest.fixture
def authority(settings: Settings) -> Iterator[object]:
    from htsec.tokens.authority import Authority

    a = Authority(settings)
    a.keyring.create("POOL")
    yield a
    if a._store is not None:
        a._store.close()


def run(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str | None] | None = None,
    timeout: float = 60,
) -> Result:
    """Run the real ``htsec`` console script in a subprocess (env values of None unset)."""
    full = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [HTSEC, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in full.items() if v is not None},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> object:
    return run


def mint_at(
    identity: str, *, now: int, lifetime: int | None = None, authz: tuple[str, ...] = ()
) -> str:
    """A token of the test's pool minted as ``htsec token create`` does (and recorded alike),
    but issued at ``now`` instead of the clock's: a test needing an expired token, or one
    issued after something, sets the clock instead of sleeping."""
    from htsec.store.db import open_store
    from htsec.tokens.authority import Authority

    settings = load()
    store = open_store(settings.database_url)
    try:
        return Authority(settings, store).mint(
            identity=identity, lifetime=lifetime, authz=authz, now=now
        )
    finally:
        store.close()


def stored_client_secret(creds: CredStore, user: str, service: str, handle: str = "") -> str | None:
    """The client secret a credential's row holds, opened with :meth:`CredStore.unseal` (the
    store has no reader for it: only the credmon's lease opens it)."""
    from sqlalchemy import select

    from htsec.creds.names import TokenName
    from htsec.store.models import Credential

    c = Credential.__table__.c
    query = select(c.client_secret).where(c.user == user, c.service == service, c.handle == handle)
    with creds.store.engine.connect() as conn:
        sealed = conn.execute(query).scalar_one()
    return creds.unseal(sealed, "client_secret", user, TokenName(service, handle))


# -- databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a database on a throw-away PostgreSQL cluster, one cluster per session
    (tests/pg.py). Skips where PostgreSQL cannot run; fails when it is missing and CI is set."""
    from tests import pg

    unavailable: pg.PgUnavailable | None = None
    try:
        cluster = pg.Cluster.start()
    except pg.PgUnavailable as exc:
        unavailable = exc
    if unavailable is not None:
        if unavailable.missing and os.environ.get("CI"):
            pytest.fail(f"{unavailable} (CI is set: failing instead of skipping)", pytrace=False)
        pytest.skip(str(unavailable))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file in tmp_path, or a new database on the
    session's PostgreSQL cluster (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'htsec.db'}"
        return
    from tests import pg

    url = pg.create_database(request.getfixturevalue("pg_url"))
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """``open_store(db_url)``: migrated to the newest schema, closed afterwards."""
    from htsec.store.db import open_store

    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(
    home: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    command: str = "serve",
) -> Iterator[dict[str, str]]:
    """A real 'htsec serve' on a free loopback port; yields the environment clients need."""
    port = port or free_port()
    # The API alone unless asked: tests of the credmon start it themselves.
    env = {
        **os.environ,
        "_CONDOR_HTSEC_SERVER_URL": f"https://127.0.0.1:{port}",
        "_CONDOR_HTSEC_SERVE_CREDMON": "false",
        **(extra_env or {}),
    }
    log = open(home.parent / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([HTSEC, command], env=env, stdout=log, stderr=subprocess.STDOUT)
    ca = home / "tls" / "ca.pem"
    deadline = time.monotonic() + 30
    while True:
        try:
            if (
                ca.exists()
                and httpx.get(f"https://127.0.0.1:{port}/v1/health", verify=str(ca)).is_success
            ):
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            raise RuntimeError((home.parent / "serve.log").read_text())
        time.sleep(0.1)
    try:
        yield {"_CONDOR_HTSEC_SERVER_URL": f"https://127.0.0.1:{port}"}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
        finally:
            log.close()


@contextlib.contextmanager
def serving_local_issuer(
    home: Path, keys: Path, monkeypatch: pytest.MonkeyPatch, audience: str
) -> Iterator[str]:
    """A real 'htsec serve' whose local issuer (a key made in ``keys`` by ``htsec issuer
    keygen``) signs tokens for ``audience`` and publishes its keys over HTTPS, as relying
    parties (XRootD, scitokens-cpp) fetch them; yields the issuer URL. The test process has the
    same ``_CONDOR_LOCAL_CREDMON_*`` environment, so ``htsec issuer token`` mints from it."""
    port = free_port()
    env = {
        "_CONDOR_LOCAL_CREDMON_PRIVATE_KEY": str(keys / "key.pem"),
        "_CONDOR_LOCAL_CREDMON_ISSUER": f"https://localhost:{port}",
        "_CONDOR_LOCAL_CREDMON_TOKEN_AUDIENCE": audience,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert run("issuer", "keygen").code == 0
    with serving(home, env, port=port):
        yield f"https://localhost:{port}"


@pytest.fixture
def server(home: Path) -> Iterator[dict[str, str]]:
    """A real 'htsec serve' on a free loopback port, torn down after the test."""
    with serving(home) as env:
        yield env
