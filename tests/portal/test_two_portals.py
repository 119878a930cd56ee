"""Two real ``htsec portal`` processes on one PostgreSQL database behind one address (the
portal's URL names the first; the "load balancer" sends the browser's return to the second):
sessions, links and pending logins live in the store, so the second finishes the flow the
first started. Also ``htsec portal``'s start-up and plain-HTTP refusal."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from htsec.config import load
from htsec.creds.links import Need, create_link, link_url
from htsec.creds.open import open_credstore
from tests.conftest import HTSEC, free_port, run
from tests.oidc import OidcUnavailable, Provider, start_provider
from tests.portal.rig import Browser, provider_env, rig_config


@contextmanager
def portal_process(port: int, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``htsec portal --port PORT``, ready (its /v1/health answers)."""
    ca = Path(env["HTSEC_HOME"]) / "tls" / "ca.pem"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [HTSEC, "portal", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (
                        ca.exists()
                        and httpx.get(
                            f"https://127.0.0.1:{port}/v1/health", verify=str(ca)
                        ).is_success
                    ):
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text())
                time.sleep(0.1)
            yield proc
        finally:
            proc.terminate()
            proc.wait(15)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Provider, int]]:
    """The oidc-provider knowing the return address of a portal on a port chosen now."""
    port = free_port()
    try:
        provider = start_provider(rig_config(f"https://127.0.0.1:{port}/return/rig"), tmp_path)
    except OidcUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield provider, port
    finally:
        provider.stop()


@pytest.mark.slow
def test_a_flow_started_on_one_portal_finishes_on_another(
    rig: tuple[Provider, int],
    pg_url: str,
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests import pg

    provider, port_a = rig
    port_b = free_port()
    db = pg.create_database(pg_url)
    env = {
        **os.environ,
        **provider_env(provider, tmp_path),
        "HTSEC_DATABASE_URL": db,
        "HTSEC_PORTAL_URL": f"https://127.0.0.1:{port_a}",
    }
    try:
        with ExitStack() as stack:
            stack.enter_context(portal_process(port_a, env, tmp_path / "a.log"))
            stack.enter_context(portal_process(port_b, env, tmp_path / "b.log"))
            monkeypatch.setenv("HTSEC_DATABASE_URL", db)
            cs = open_credstore(load())
            link = create_link(
                cs, user="alice", needs=[Need("rig", None, frozenset({"openid"}))], ttl=900
            )
            url = link_url(f"https://127.0.0.1:{port_a}", link.id)
            ca = str(home / "tls" / "ca.pem")
            a = stack.enter_context(httpx.Client(base_url=f"https://127.0.0.1:{port_a}", verify=ca))
            browser_a = Browser(a, provider.issuer)
            back_url = browser_a.to_provider_and_back(browser_a.start(url))
            assert back_url.startswith(f"https://127.0.0.1:{port_a}/return/rig?")
            # the same browser (its cookies), the return delivered to the other process
            b = stack.enter_context(
                httpx.Client(base_url=f"https://127.0.0.1:{port_b}", verify=ca, cookies=a.cookies)
            )
            back = Browser(b, provider.issuer).come_back(back_url)
            assert back.status_code == 303, back.text
            info = cs.info("alice", "rig")
            assert info.has_refresh_token and info.scopes == ["openid"]
            done = Browser(a, provider.issuer).open(url)
            assert done.status_code == 200 and "All set" in done.text
            cs.store.close()
    finally:
        pg.drop_database(db)


def test_portal_refuses_plain_http_on_a_public_address() -> None:
    r = run("portal", "--behind-proxy", "--host", "0.0.0.0")
    assert r.code == 2 and "loopback address only" in r.err, r.err


def test_portal_start_prints_no_library_deprecation() -> None:
    # authlib 1.9 warns on import that it would rather drive the httpx2 fork; an operator
    # can do nothing about it, and it stood before every 'htsec portal' and 'htsec serve'.
    r = run("portal", "--behind-proxy", "--host", "0.0.0.0")
    assert r.err.splitlines() == [
        "htsec: error: --behind-proxy listens on a loopback address only (--host 127.0.0.1)"
    ]
