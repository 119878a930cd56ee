"""The portal in a real browser (chromium through Playwright): the whole authorisation flow
from ``htsec submit`` refused with a link to the job accepted, the dashboard, CSRF and
keyboard access."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Site
from tests.conftest import HTSEC

pytestmark = pytest.mark.slow


def wait_for(path: Path, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)
    return dict(json.loads(path.read_text()))


JOB = (
    "executable = /bin/true\ntransfer_executable = false\n"
    "use_oauth_services = rig\nrig_oauth_permissions = openid offline_access\nqueue\n"
)


def submit(site: Site, user: str = "alice") -> tuple[int, str]:
    """``htsec submit`` of a job needing ``rig`` as ``user``: (exit status, output)."""
    work = site.shots.parent / "job"
    work.mkdir(exist_ok=True)
    (work / "job.sub").write_text(JOB)
    token = work / f"{user}.token"
    token.write_text(site.root if user == "root" else site.alice)
    token.chmod(0o600)
    proc = subprocess.run(
        [HTSEC, "submit", "job.sub", "--token-file", str(token)],
        cwd=work,
        env={**os.environ, **site.env, "_CONDOR_HTSEC_SERVER_URL": site.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def refused_link(site: Site, user: str = "alice") -> str:
    """The link ``htsec submit`` prints for the job, which ``user`` has not authorised yet."""
    code, out = submit(site, user)
    assert code == 1, out
    match = re.search(rf"^Hello, {user}\.\nPlease visit: (\S+)\n\n", out, re.M)
    assert match, out
    url = match.group(1)
    assert re.fullmatch(rf"{re.escape(site.url)}/key/[0-9a-f]{{64}}", url)
    return url


def authorise_in_browser(
    site: Site, page: Any, url: str, *, user: str = "alice", shots: bool = True
) -> None:
    """Open the link, log in at the provider (consenting if asked), come back."""
    page.goto(url)
    if shots:
        site.screenshot(page, "01-link")
    page.get_by_role("button", name=re.compile("^Log in at")).click()
    page.wait_for_url(f"{site.provider.issuer}/**")
    if shots:
        site.screenshot(page, "02-provider-login")
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", "rig")
    page.locator("button[type=submit], input[type=submit]").first.click()
    page.wait_for_load_state()
    if page.url.startswith(site.provider.issuer):  # a consent page
        if shots:
            site.screenshot(page, "03-provider-consent")
        page.locator("button[type=submit], input[type=submit]").first.click()
    page.wait_for_url(f"{site.url}/**")
    page.wait_for_load_state()


def sign_in(site: Site, page: Any, token: str, shot: str | None = None) -> None:
    page.goto(f"{site.url}/")
    if shot:
        site.screenshot(page, shot)
    page.get_by_label("ID token").fill(token)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r".*/\?done=login$"))


def test_refused_submit_to_accepted_submit(site: Site, context: Any) -> None:
    url = refused_link(site, "root")
    page = context.new_page()
    authorise_in_browser(site, page, url, user="root", shots=False)
    site.screenshot(page, "04-stored")
    assert page.get_by_role("heading", level=1).inner_text() == "All set"

    cred = site.api("GET", "/v1/creds/rig", site.root).json()
    assert cred["has_refresh_token"] and cred["state"] == "active", cred
    assert set(cred["scopes"]) == {"openid", "offline_access"}
    use = wait_for(site.cred_dir / "root" / "rig.use")
    assert use["access_token"] and use["token_type"].lower() == "bearer"
    # The same submit is accepted now.
    code, out = submit(site, "root")
    assert code == 0 and "job(s) submitted to cluster" in out, out
    # The link is used up: opening it again shows no login button.
    page.goto(url)
    site.screenshot(page, "05-link-used")
    assert page.get_by_role("button", name=re.compile("^Log in at")).count() == 0


def test_dashboard_for_user_and_administrator(site: Site, context: Any, chromium: Any) -> None:
    page = context.new_page()
    authorise_in_browser(site, page, refused_link(site))  # alice's link: the pictures in docs
    sign_in(site, page, site.alice, shot="10-dashboard-sign-in")
    site.screenshot(page, "11-dashboard-user")
    assert page.get_by_role("heading", name="Your credentials").is_visible()
    assert page.get_by_role("button", name="Delete rig").is_visible()

    # An administrator, in another browser profile, with a token request waiting.
    site.api("POST", "/v1/token-requests", site.admin, json={"identity": "carol@pool.example.org"})
    admin_ctx = chromium.new_context(
        ignore_https_errors=True, viewport={"width": 1200, "height": 900}
    )
    try:
        admin = admin_ctx.new_page()
        sign_in(site, admin, site.admin)
        site.screenshot(admin, "12-dashboard-admin")
        assert admin.get_by_role("heading", name="Pending token requests").is_visible()
        admin.get_by_role("button", name=re.compile("^Approve request")).click()
        admin.wait_for_url(re.compile(r".*done=approved$"))
        site.screenshot(admin, "13-dashboard-admin-approved")
        assert "The token request was approved." in admin.content()
    finally:
        admin_ctx.close()

    # Delete from the user's dashboard.
    page.get_by_role("button", name="Delete rig").click()
    page.wait_for_url(re.compile(r".*done=deleted$"))
    site.screenshot(page, "14-dashboard-deleted")
    assert site.api("GET", "/v1/creds/rig", site.alice).status_code == 404


def test_sign_in_at_the_openid_provider(site: Site, context: Any) -> None:
    page = context.new_page()
    page.goto(f"{site.url}/")
    page.get_by_role("button", name="Sign in with rig").click()
    page.wait_for_url(f"{site.provider.issuer}/**")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "rig")
    page.locator("button[type=submit]").first.click()
    page.wait_for_url(re.compile(r".*/\?done=login$"))
    site.screenshot(page, "15-dashboard-openid")
    assert "Signed in as alice@pool.example.org" in page.inner_text("header")
    assert page.get_by_role("heading", name="Your credentials").is_visible()


def test_a_post_without_the_csrf_token_is_refused(site: Site, context: Any) -> None:
    page = context.new_page()
    authorise_in_browser(site, page, refused_link(site), shots=False)
    sign_in(site, page, site.alice)
    # The browser's own cookies, no CSRF token: as a form on another site would post.
    r = page.request.post(
        f"{site.url}/dashboard/credentials/delete", form={"service": "rig", "handle": ""}
    )
    assert r.status == 403 and "CSRF" in r.text()
    r = page.request.post(
        f"{site.url}/dashboard/credentials/delete",
        form={"service": "rig", "handle": "", "csrf_token": "forged"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status == 403
    assert site.api("GET", "/v1/creds/rig", site.alice).json()["state"] == "active"


FOCUSABLE = "a[href], button, input:not([type=hidden]), textarea, select"


def tab_reaches_every_control(page: Any) -> None:
    """Tab from the top of the page: every link, button and field gets the focus, in order,
    each showing a visible focus outline."""
    n = page.evaluate(
        """(sel) => { const els = [...document.querySelectorAll(sel)];
             els.forEach((e, i) => e.dataset.kb = String(i)); return els.length; }""",
        FOCUSABLE,
    )
    assert n > 0
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    reached: list[int] = []
    for _ in range(n + 3):
        page.keyboard.press("Tab")
        kb = page.evaluate("() => document.activeElement && document.activeElement.dataset.kb")
        if kb is not None:
            reached.append(int(kb))
            outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", f"control {kb} shows no focus outline"
    assert set(reached) == set(range(n)), f"not reached by Tab: {set(range(n)) - set(reached)}"
    assert reached[:n] == sorted(reached[:n]), "the tab order is not the page's order"


def test_keyboard_reaches_every_control(site: Site, context: Any) -> None:
    page = context.new_page()
    page.goto(f"{site.url}/")
    tab_reaches_every_control(page)  # the sign-in page
    sign_in(site, page, site.admin)
    site.api("POST", "/v1/token-requests", site.admin, json={"identity": "dave@pool.example.org"})
    page.goto(f"{site.url}/")
    tab_reaches_every_control(page)  # the administrator's dashboard
    page.goto(refused_link(site))
    tab_reaches_every_control(page)  # the link's page
