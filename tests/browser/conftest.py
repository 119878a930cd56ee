"""A real browser (Playwright driving Debian's chromium, TESTING.md "Browser") in front of a
real ``htsec serve`` (portal, credd and credmon in one process, over its own HTTPS) and the
real oidc-provider with its login and consent pages. No browser is ever downloaded.

Screenshots go to the test's output directory (``<tmp_path>/screenshots``) and, when
``HTSEC_TEST_SCREENSHOTS`` names a directory, there too (how docs/img/ is refreshed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, run, serving
from tests.oidc import Provider, default_config, start_provider
from tests.portal.rig import provider_env

CHROMIUM = "/usr/bin/chromium"
#: Read before the autouse fixture clears the environment of HTSEC_* variables.
SCREENSHOTS_COPY = os.environ.get("HTSEC_TEST_SCREENSHOTS")
ALICE = "alice@pool.example.org"
ADMIN = "admin@pool.example.org"
ROOT = "root@pool.example.org"


@dataclass
class Site:
    """The served portal, the provider, and what the test needs to talk to them."""

    url: str
    ca: str
    provider: Provider
    cred_dir: Path
    alice: str
    admin: str
    root: str
    shots: Path
    env: dict[str, str] = field(default_factory=dict)

    def api(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            headers={"Authorization": f"Bearer {token}"},
            verify=self.ca,
            timeout=30,
            **kw,
        )

    def screenshot(self, page: Any, name: str) -> Path:
        """Save a full-page screenshot as ``<name>.png`` (and in HTSEC_TEST_SCREENSHOTS)."""
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if SCREENSHOTS_COPY:
            Path(SCREENSHOTS_COPY).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(SCREENSHOTS_COPY) / path.name)
        return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed (scripts/setup --test)")
        pytest.skip("Debian's chromium is not installed (scripts/setup --test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site(home: Path, tmp_path: Path, empty_cred_root: Path) -> Iterator[Site]:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    config = default_config()
    config["clients"][0]["redirect_uris"] += [f"{url}/return/rig", f"{url}/dashboard/return"]
    # The rig's loadExistingGrant consents for the user (tests/oidc.py): the provider shows its
    # login page; a consent page, should one come, is confirmed by the test.
    provider = start_provider(config, tmp_path / "oidc")
    try:
        assert run("key", "create", "POOL").code == 0
        alice = run("token", "create", "-i", ALICE, "--authz", "READ", "--authz", "WRITE")
        admin = run("token", "create", "-i", ADMIN, "--authz", "ADMINISTRATOR")
        # Jobs of the built-in execution point belong to a local account (root's run as
        # htsec-job): the flow that ends in an accepted job is root's.
        root = run("token", "create", "-i", ROOT, "--authz", "READ", "--authz", "WRITE")
        env = {
            **provider_env(provider, tmp_path),
            "_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH": str(empty_cred_root),
            "_CONDOR_HTSEC_SERVE_CREDMON": "true",
            "_CONDOR_HTSEC_PORTAL_LOGIN_PROVIDER": "rig",  # "Sign in with rig" on the dashboard
        }
        shots = tmp_path / "screenshots"
        shots.mkdir()
        with serving(home, env, port=port):
            yield Site(
                url,
                str(home / "tls" / "ca.pem"),
                provider,
                empty_cred_root,
                alice.out.strip(),
                admin.out.strip(),
                root.out.strip(),
                shots,
                env,
            )
    finally:
        provider.stop()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    """A fresh browser profile that trusts htsec's own CA (its certificate is self-issued)."""
    ctx = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1200, "height": 800}, locale="en-GB"
    )
    try:
        yield ctx
    finally:
        ctx.close()
