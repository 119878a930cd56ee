"""The device login (htsec.portal.device, RFC 8628) and ``htsec login``: a real ``htsec
serve``, the real oidc-provider with its device flow, the CLI as a process; the user approves
through the provider's own devInteractions pages, driven over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.conftest import HTSEC, run, serving
from tests.oidc import Provider, _Forms, inject_fault, provider_fixture
from tests.portal.rig import provider_env

oidc = provider_fixture()

ALICE = "alice@pool.example.org"


@dataclass
class Portal:
    url: str
    ca: str
    env: dict[str, str]
    token_file: Path
    cred_dir: Path

    def call(self, path: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
        token = token or self.token_file.read_text().strip()
        return httpx.post(
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            verify=self.ca,
            timeout=30,
        )


@pytest.fixture
def portal(oidc: Provider, home: Path, tmp_path: Path, empty_cred_root: Path) -> Iterator[Portal]:
    assert run("key", "create", "POOL").code == 0
    token = run("token", "create", "-i", ALICE).out.strip()
    token_file = tmp_path / "alice.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = {
        **provider_env(oidc, tmp_path),
        "_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH": str(empty_cred_root),
        "_CONDOR_HTSEC_SERVE_CREDMON": "true",  # passes every 10 s, and when woken
    }
    with serving(home, env) as client_env:
        url = client_env["_CONDOR_HTSEC_SERVER_URL"]
        yield Portal(url, str(home / "tls" / "ca.pem"), client_env, token_file, empty_cred_root)


def approve(verification_uri_complete: str, user: str = "alice", *, confirm: bool = True) -> str:
    """What a user does on their phone: open the URL, confirm the code, log in at the
    provider. Returns the title of the last page."""
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        r = browser.get(verification_uri_complete)
        for _ in range(12):
            if r.is_redirect:
                r = browser.get(urljoin(str(r.url), r.headers["location"]))
                continue
            forms = _Forms()
            forms.feed(r.text)
            if not forms.forms:
                break
            action, _method, fields = forms.forms[0]
            if "login" in fields:
                fields.update(login=user, password="rig")
            if "confirm" in fields and not confirm:
                del fields["confirm"]
                fields["abort"] = "yes"
            r = browser.post(urljoin(str(r.url), action), data=fields)
        title = r.text.split("<title>", 1)[-1].split("</title>", 1)[0]
    return title


def login_process(portal: Portal, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [HTSEC, "login", "--token-file", str(portal.token_file), *args],
        env={**os.environ, **portal.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 20) -> str:
    """The process's output up to and including the line holding ``marker``."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        line = proc.stdout.readline()
        if (not line and proc.poll() is not None) or time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} in {seen!r}; stderr: {proc.communicate()[1]}")
        seen += line
    return seen


@pytest.mark.slow  # the CLI polls at the RFC 8628 interval: 5 s at least
def test_login_stores_the_credential_approved_on_another_device(portal: Portal) -> None:
    proc = login_process(portal, "--service", "rig", "--scopes", "openid offline_access")
    shown = read_until(proc, "Waiting for you")
    uri = next(w for w in shown.split() if w.startswith("http") and "user_code=" in w)
    code = shown.split("enter the code:", 1)[1].split()[0]
    assert f"user_code={code}" in uri
    assert approve(uri) == "Sign-in Success"
    out, err = proc.communicate(timeout=60)
    stored = time.monotonic()
    assert proc.returncode == 0, err
    assert "stored rig for alice (scopes: " in out and "offline_access" in out
    # The credmon publishes the job's .use from the stored refresh token.
    use = portal.cred_dir / "alice" / "rig.use"
    while not use.exists():
        assert time.monotonic() - stored < 15, "the credmon did not publish rig.use"
        time.sleep(0.05)
    r = httpx.get(
        f"{portal.url}/v1/creds/rig",
        headers={"Authorization": f"Bearer {portal.token_file.read_text().strip()}"},
        verify=portal.ca,
    )
    cred = r.json()
    assert cred["has_refresh_token"] and cred["provider"] == "rig" and cred["state"] == "active"
    assert "device_code" not in shown + out + err and "refresh_token" not in out + err


def test_login_with_a_handle(portal: Portal) -> None:
    started = portal.call("/v1/device-logins", {"service": "rig", "handle": "work"}).json()
    assert approve(started["verification_uri_complete"]) == "Sign-in Success"
    answer = portal.call("/v1/device-logins/poll", {"login": started["login"]}).json()
    assert answer["status"] == "stored" and answer["credential"]["name"] == "rig_work"


def test_poll_before_approval_is_pending_and_the_login_is_sealed(portal: Portal) -> None:
    started = portal.call("/v1/device-logins", {"service": "rig"}).json()
    assert started["interval"] == 5  # RFC 8628 section 3.2: 5 when the provider names none
    answer = portal.call("/v1/device-logins/poll", {"login": started["login"]})
    assert answer.json() == {"status": "pending"}
    # The login is opaque: no device code in it.
    assert "device_code" not in started and started["user_code"] not in started["login"]


def test_denied_and_expired_are_statuses_and_store_nothing(oidc: Provider, portal: Portal) -> None:
    for error, status in (("access_denied", "denied"), ("expired_token", "expired")):
        started = portal.call("/v1/device-logins", {"service": "rig"}).json()
        inject_fault(oidc, 400, body={"error": error})
        answer = portal.call("/v1/device-logins/poll", {"login": started["login"]})
        assert answer.json() == {"status": status}
    inject_fault(oidc, 400, body={"error": "slow_down"})
    answer = portal.call("/v1/device-logins/poll", {"login": started["login"]})
    assert answer.json() == {"status": "slow_down", "add_interval": 5}
    listed = httpx.get(
        f"{portal.url}/v1/creds",
        headers={"Authorization": f"Bearer {portal.token_file.read_text().strip()}"},
        verify=portal.ca,
    ).json()
    assert listed["credentials"] == []


@pytest.mark.slow  # the CLI polls at the RFC 8628 interval: 5 s at least
def test_login_cli_says_denied(oidc: Provider, portal: Portal) -> None:
    proc = login_process(portal, "--service", "rig")
    read_until(proc, "Waiting for you")
    inject_fault(oidc, 400, body={"error": "access_denied"})
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "denied at the provider; nothing was stored" in err and "Traceback" not in err


def test_another_users_login_is_refused(portal: Portal) -> None:
    started = portal.call("/v1/device-logins", {"service": "rig"}).json()
    bob = run("token", "create", "-i", "bob@pool.example.org").out.strip()
    r = portal.call("/v1/device-logins/poll", {"login": started["login"]}, token=bob)
    assert r.status_code == 404 and "start a new one" in r.json()["detail"]
    tampered = started["login"][:-4] + ("AAAA" if not started["login"].endswith("AAAA") else "BBBB")
    r = portal.call("/v1/device-logins/poll", {"login": tampered})
    assert r.status_code == 404


def test_unknown_provider_and_bad_names_are_clear(portal: Portal) -> None:
    r = portal.call("/v1/device-logins", {"service": "nosuch"})
    assert r.status_code == 404 and "NOSUCH_CLIENT_ID" in r.json()["detail"]
    r = portal.call("/v1/device-logins", {"service": "rig", "handle": "a/b"})
    assert r.status_code == 400


def test_provider_failure_is_a_502_naming_it(oidc: Provider, portal: Portal) -> None:
    inject_fault(oidc, 500, path="/device/auth")
    r = portal.call("/v1/device-logins", {"service": "rig"})
    assert r.status_code == 502 and "device authorization" in r.json()["detail"]


def test_ctrl_c_stops_cleanly(portal: Portal) -> None:
    proc = login_process(portal, "--service", "rig")
    read_until(proc, "Waiting for you")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "login stopped; nothing was stored" in err and "Traceback" not in err
