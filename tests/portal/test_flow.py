"""The portal's authorization-code flow (htsec.portal.routes, .oauth) against the real
oidc-provider: link page, PKCE login at the provider, refresh token stored sealed, link used up."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.portal.conftest import Portal
from tests.portal.rig import heading


def test_a_link_ends_with_the_credential_stored(portal: Portal) -> None:
    url = portal.link()
    b = portal.browser()
    start = b.start(url)
    assert start.status_code == 303
    q = parse_qs(urlsplit(start.headers["location"]).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["redirect_uri"] == ["https://testserver/return/rig"]
    back = b.come_back(b.to_provider_and_back(start))
    assert back.status_code == 303, back.text
    assert back.headers["location"] == urlsplit(url).path
    info = portal.creds.info("alice", "rig")
    assert info.has_refresh_token and info.has_access_token
    assert sorted(info.scopes) == ["openid", "profile"]
    done = b.open(url)
    assert done.status_code == 200 and heading(done) == "All set", done.text
    again = portal.browser().open(url)
    assert again.status_code == 410 and "already used" in again.text
