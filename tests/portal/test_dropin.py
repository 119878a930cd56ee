"""The portal as a drop-in for HTCondor's credmon web server (htsec.portal.dropin): condor_credd's
pending-login file, written here as ``credd.cpp`` (``check_creds_continue``) writes it, drives
the whole flow through the routes only; the user's ``.meta``/``.top``/``.use`` come out as the
web server writes them; and each of the original's faults is fixed:

* the URL worked for anyone holding it, for 12 h: it works in the first browser only, and
  expires after ``HTSEC_PORTAL_LINK_LIFETIME``;
* no PKCE: the authorization request carries an S256 challenge;
* scopes compared as strings: condor_credd compares ``.top``'s ``scopes`` with the next
  request's as strings, and the web server removed the blanks from them, so ``read, write``
  never matched again: ``.top`` keeps them as requested; htsec compares them as sets.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import classad2
import pytest
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.creds.links import peek_link
from htsec.errors import NotFound
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.oidc import CLIENT_ID, CLIENT_SECRET, Provider
from tests.portal.conftest import Portal
from tests.portal.rig import PORTAL, Browser, heading

KEY = "5f" * 32


def credd_pending_file(
    root: Path,
    key: str,
    provider: Provider,
    *,
    scopes: str = "profile, openid",
    user: str = "alice",
) -> Path:
    """``<root>/<key>`` exactly as condor_credd writes it: one ClassAd per missing token,
    attributes assigned in credd.cpp's order and printed by HTCondor's own old-syntax printer
    (``sPrintAdWithSecrets``), ads separated by a blank line; ``write_secure_file`` with
    ``group_readable``: created exclusively, mode 0640, owned by the credd's user (here: us)."""
    ad = classad2.ClassAd()
    ad["Provider"] = "rig"
    ad["LocalUser"] = user
    ad["Handle"] = ""
    ad["Scopes"] = scopes  # the submit file's <svc>_oauth_permissions, verbatim
    ad["Audience"] = ""
    ad["ClientId"] = CLIENT_ID
    ad["ClientSecret"] = CLIENT_SECRET
    ad["ReturnUrl"] = f"{PORTAL}/return/rig"  # CREDMON_WEB_PREFIX + RIG_RETURN_URL_SUFFIX
    ad["AuthorizationUrl"] = provider.authorization_url
    ad["TokenUrl"] = provider.token_url
    path = root / key
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.fchmod(fd, 0o640)
        os.write(fd, ad.printOld().encode())
    finally:
        os.close(fd)
    return path


@pytest.fixture
def dropin(
    oidc: Provider,
    empty_cred_root: Path,
    portal_env: Callable[..., Settings],
) -> Iterator[Portal]:
    """The portal configured as HTCondor's web server is: CREDMON_WEB_PREFIX and the
    credential directory, no HTSEC_PORTAL_URL."""
    settings = portal_env(
        HTSEC_PORTAL_URL="",
        _CONDOR_CREDMON_WEB_PREFIX=PORTAL,
        _CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH=str(empty_cred_root),
        HTSEC_PORTAL_LINK_LIFETIME="900",
    )
    authority = Authority(settings)
    app = create_app(settings, authority)
    yield Portal(app, settings, oidc.issuer, oidc)
    authority.store.close()


def _browser(p: Portal) -> Browser:
    return Browser(TestClient(p.app, base_url=PORTAL), p.issuer)


def test_credd_pending_login_ends_in_the_web_servers_files(
    dropin: Portal, empty_cred_root: Path, oidc: Provider
) -> None:
    pending = credd_pending_file(empty_cred_root, KEY, oidc)
    assert stat.S_IMODE(pending.stat().st_mode) == 0o640
    b = _browser(dropin)
    page = b.open(f"{PORTAL}/key/{KEY}")
    assert page.status_code == 200, page.text
    assert "alice" in page.text and "openid" in page.text and "profile" in page.text
    back = b.authorise(f"{PORTAL}/key/{KEY}")
    assert back.status_code == 303, back.text
    user_dir = empty_cred_root / "alice"
    top = json.loads((user_dir / "rig.top").read_text())
    meta = json.loads((user_dir / "rig.meta").read_text())
    use = json.loads((user_dir / "rig.use").read_text())
    # condor_credd compares .top's scopes with the next request's Scopes as strings
    # (store_cred.cpp cred_matches): HTCondor's web server wrote "profile,openid" (blanks
    # removed), so the same submit file then mismatched forever.
    assert top["refresh_token"] and top["scopes"] == "profile, openid"
    assert meta == {"client_id": CLIENT_ID, "token_url": oidc.token_url, "use_refresh_token": True}
    assert "refresh_token" not in use and use["access_token"]
    for f in ("rig.top", "rig.meta", "rig.use"):
        assert stat.S_IMODE((user_dir / f).stat().st_mode) == 0o400
    info = dropin.creds.info("alice", "rig")
    assert info.has_refresh_token and sorted(info.scopes) == ["openid", "profile"]
    assert not pending.exists()  # every login of the file done: removed, as the web server does
    assert heading(b.open(f"{PORTAL}/key/{KEY}")) == "All set"


def test_credd_url_does_not_attach_another_browsers_account(
    dropin: Portal, empty_cred_root: Path, oidc: Provider
) -> None:
    """HTCondor's web server: whoever opens the URL within 12 h logs in with their own account
    and it is stored as the submitter's. Here the second browser is refused."""
    credd_pending_file(empty_cred_root, KEY, oidc)
    victim = _browser(dropin)
    assert victim.open(f"{PORTAL}/key/{KEY}").status_code == 200
    attacker = _browser(dropin)
    page = attacker.open(f"{PORTAL}/key/{KEY}")
    assert page.status_code == 410 and "another browser" in page.text
    assert dropin.audit("link")[0]["outcome"] == "denied"


def test_credd_url_expires_after_the_link_lifetime(
    dropin: Portal, empty_cred_root: Path, oidc: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTSEC_PORTAL_LINK_LIFETIME", "1")
    credd_pending_file(empty_cred_root, KEY, oidc)
    time.sleep(1.2)
    page = _browser(dropin).open(f"{PORTAL}/key/{KEY}")
    assert page.status_code == 410 and "expired" in page.text
    assert (empty_cred_root / KEY).exists()  # the credmon cleans it, as HTCondor's does


def test_credd_login_uses_pkce(dropin: Portal, empty_cred_root: Path, oidc: Provider) -> None:
    credd_pending_file(empty_cred_root, KEY, oidc)
    start = _browser(dropin).start(f"{PORTAL}/key/{KEY}")
    q = parse_qs(urlsplit(start.headers["location"]).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["client_id"] == [CLIENT_ID] and q["redirect_uri"] == [f"{PORTAL}/return/rig"]
    assert sorted(q["scope"][0].split()) == ["openid", "profile"]


def test_a_credential_already_stored_with_the_same_scope_set_shows_as_stored(
    portal: Portal,
) -> None:
    portal.creds.put("alice", "rig", refresh_token="rt", scopes=["profile", "openid"])
    page = portal.browser().open(portal.link())
    assert heading(page) == "All set", page.text


def test_a_credential_stored_without_a_refresh_token_is_not_shown_as_stored(
    portal: Portal,
) -> None:
    # The same rule as the credential check (htsec.creds.check.need_states): it cannot be
    # renewed, so the link offers the login again.
    portal.creds.put("alice", "rig", access_token="at", scopes=["profile", "openid"])
    page = portal.browser().open(portal.link())
    assert heading(page) != "All set", page.text
    assert 'action="/login/rig"' in page.text or "/login/rig" in page.text, page.text


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff garbage", b'Provider = "rig"\n', b'Provider = "rig"\nLocalUser = "../root"\n'],
    ids=["garbage", "no-user", "bad-user"],
)
def test_a_bad_pending_file_is_a_clear_page(
    dropin: Portal, empty_cred_root: Path, content: bytes
) -> None:
    path = empty_cred_root / KEY
    path.write_bytes(content)
    path.chmod(0o640)
    r = _browser(dropin).open(f"{PORTAL}/key/{KEY}")
    assert r.status_code == 404 and "cannot be read" in r.text and "Traceback" not in r.text
    assert dropin.audit("link")[0]["outcome"] == "bad-file"
    assert dropin.creds.credentials() == []


def test_a_pending_file_that_is_a_symlink_is_not_followed(
    dropin: Portal, empty_cred_root: Path, oidc: Provider, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    credd_pending_file(elsewhere, KEY, oidc)
    (empty_cred_root / KEY).symlink_to(elsewhere / KEY)
    r = _browser(dropin).open(f"{PORTAL}/key/{KEY}")
    assert r.status_code == 404 and "Traceback" not in r.text
    assert dropin.audit("link")[0]["outcome"] == "bad-file"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_pending_file_of_another_owner_is_not_adopted(
    dropin: Portal, empty_cred_root: Path, oidc: Provider
) -> None:
    """The credential root is group-writable (2770 root:condor): a file there that neither
    condor_credd (root) nor the portal's user wrote could name any LocalUser and its own
    provider URLs, attaching its writer's account to that user's credentials."""
    path = credd_pending_file(empty_cred_root, KEY, oidc)
    os.chown(path, 65534, 65534)
    r = _browser(dropin).open(f"{PORTAL}/key/{KEY}")
    assert r.status_code == 404 and "cannot be read" in r.text and "Traceback" not in r.text
    assert dropin.audit("link")[0]["outcome"] == "bad-file"
    assert dropin.creds.credentials() == []


def test_the_portal_alone_wakes_the_credmon_of_the_credential_directory(
    dropin: Portal, empty_cred_root: Path, oidc: Provider, tmp_path: Path
) -> None:
    """``htsec portal`` (create_portal_app: no in-process credmon) signals the credmon whose pid
    is in ``<cred root>/pid`` with SIGHUP after storing, as condor_credd does."""
    import signal
    import subprocess
    import sys

    from htsec.portal.app import create_portal_app

    marker = tmp_path / "woken"
    credmon = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGHUP, lambda *a: (pathlib.Path({str(marker)!r}).touch(), "
            "sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert credmon.stdout is not None and credmon.stdout.readline() == b"ready\n"
        (empty_cred_root / "pid").write_text(str(credmon.pid))
        alone = create_portal_app(dropin.settings, dropin.creds.store)
        credd_pending_file(empty_cred_root, KEY, oidc)
        b = Browser(TestClient(alone, base_url=PORTAL), oidc.issuer)
        assert b.authorise(f"{PORTAL}/key/{KEY}").status_code == 303
        credmon.wait(10)
        assert marker.exists()
    finally:
        if credmon.poll() is None:
            credmon.send_signal(signal.SIGKILL)
            credmon.wait()
        assert credmon.stdout is not None
        credmon.stdout.close()


def test_a_return_whose_files_cannot_be_written_stores_nothing(
    dropin: Portal, empty_cred_root: Path
) -> None:
    """The credential, its files, the link's need and the audit row are one transaction: when
    the user's directory is unfit to write into, the store keeps nothing and the link stays
    open for another try."""
    url = dropin.link()
    b = _browser(dropin)
    back_url = b.to_provider_and_back(b.start(url))
    (empty_cred_root / "alice").mkdir(mode=0o700)
    (empty_cred_root / "alice").chmod(0o777)  # others may write: refused
    back = b.come_back(back_url)
    assert back.status_code == 500 and "chmod go-w" in back.text, back.text
    assert "Nothing was stored" in back.text  # and that is now true
    with pytest.raises(NotFound):
        dropin.creds.info("alice", "rig")
    assert peek_link(dropin.creds, url.rsplit("/", 1)[1]).done == (False,)  # type: ignore[union-attr]
    outcomes = [r["outcome"] for r in dropin.audit("login")]
    assert outcomes[0] not in ("ok", "started") and "ok" not in outcomes
