"""Driving the portal like a browser, against the real oidc-provider (tests/oidc.py).

:class:`Browser` holds one browser's cookie jar in front of a portal (an in-process
``TestClient`` at ``https://testserver``, or a real ``htsec serve``/``htsec portal`` over
HTTPS): it opens a link, posts the "Log in at ..." form with its CSRF token, follows the
provider's devInteractions login and consent forms with its own httpx client (the provider's
cookies stay there), and brings the redirect back to the portal's ``/return/<provider>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from tests.oidc import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, Provider, _Forms, default_config

PORTAL = "https://testserver"
RETURN = f"{PORTAL}/return/rig"


def rig_config(*returns: str) -> dict[str, Any]:
    """The rig's default configuration with the portal's return addresses registered."""
    cfg = default_config()
    cfg["clients"][0]["redirect_uris"] = [REDIRECT_URI, RETURN, *returns]
    return cfg


def provider_env(provider: Provider, tmp_path: Path, name: str = "RIG") -> dict[str, str]:
    """HTCondor's knobs for the rig as provider ``name`` (client secret in a 0600 file)."""
    secret = tmp_path / f"{name.lower()}.secret"
    secret.write_text(CLIENT_SECRET)
    secret.chmod(0o600)
    return {
        f"_CONDOR_{name}_CLIENT_ID": CLIENT_ID,
        f"_CONDOR_{name}_CLIENT_SECRET_FILE": str(secret),
        f"_CONDOR_{name}_ISSUER": provider.issuer,
    }


class Client(Protocol):
    def get(self, url: str, **kw: Any) -> httpx.Response: ...
    def post(self, url: str, **kw: Any) -> httpx.Response: ...


def forms(html: str) -> list[tuple[str, str, dict[str, str]]]:
    f = _Forms()
    f.feed(html)
    return f.forms


def login_form(page: httpx.Response, name: str = "rig") -> tuple[str, dict[str, str]]:
    """The action and fields of the page's "Log in at ..." form for credential ``name``."""
    for action, method, fields in forms(page.text):
        if method == "post" and action.endswith(f"/login/{name}"):
            return action, fields
    raise AssertionError(f"no login form for {name} on the page:\n{page.text[:3000]}")


def provider_login(location: str, issuer: str, user: str = "alice") -> str:
    """The provider's half, as a person would do it: log in as ``user``, consent; returns the
    URL the provider sends the browser back to (not followed)."""
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        r = browser.get(location)
        for _ in range(20):
            if r.is_redirect:
                nxt = urljoin(str(r.url), r.headers["location"])
                if urlsplit(nxt).netloc != urlsplit(issuer).netloc:
                    return nxt
                r = browser.get(nxt)
                continue
            page = forms(r.text)
            assert r.status_code == 200 and page, f"{r.status_code} at {r.url}: {r.text[:1500]}"
            action, _m, fields = page[0]
            if "login" in fields:
                fields.update(login=user, password="rig")
            r = browser.post(urljoin(str(r.url), action), data=fields)
    raise AssertionError("the provider's flow did not end in 20 steps")


def path_of(url: str) -> str:
    u = urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


_TITLE = re.compile(r"<h1[^>]*>(.*?)</h1>", re.S)


def heading(page: httpx.Response) -> str:
    m = _TITLE.search(page.text)
    return m.group(1).strip() if m else ""


@dataclass
class Browser:
    """One browser (cookie jar) in front of a portal client."""

    client: Client
    issuer: str

    def open(self, url: str) -> httpx.Response:
        return self.client.get(path_of(url))

    def start(self, link_url: str, name: str = "rig") -> httpx.Response:
        """Open the link and press "Log in at ..."; the answer is the redirect to the
        provider (or the portal's refusal)."""
        page = self.open(link_url)
        assert page.status_code == 200, page.text
        action, fields = login_form(page, name)
        return self.client.post(action, data=fields, follow_redirects=False)

    def to_provider_and_back(self, start: httpx.Response, user: str = "alice") -> str:
        """Log in at the provider; the return URL (not yet given to the portal)."""
        assert start.status_code == 303, start.text
        return provider_login(start.headers["location"], self.issuer, user)

    def come_back(self, return_url: str) -> httpx.Response:
        return self.client.get(path_of(return_url), follow_redirects=False)

    def authorise(self, link_url: str, name: str = "rig", user: str = "alice") -> httpx.Response:
        """The whole flow for one credential; the portal's answer to the return."""
        return self.come_back(self.to_provider_and_back(self.start(link_url, name), user))
