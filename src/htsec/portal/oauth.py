"""The authorization-code flow with PKCE (RFC 6749 section 4.1, RFC 7636 S256), with authlib.

:func:`start_login` makes the authorization URL for one need of a link and records the pending
login in the store (``portal_logins``): keyed by the SHA-256 of its ``state``, bound to the
browser session, the link and the provider, with the redirect URI used and, sealed, the PKCE
verifier and the link's id. :func:`claim_login` takes a returning ``state`` and uses the row up
at once (a replay finds it used), refusing a state of another session, an unknown or expired
one, or one that came back to another provider's return address. :func:`exchange` redeems the
code at the token endpoint with the exact redirect URI and the verifier.

Any portal process on the same database finishes a flow another one started.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import ssl
import time
import warnings
from dataclasses import dataclass
from typing import Any, cast

import httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from sqlalchemy import Table, delete, insert, select, update

from htsec.creds.crypto import aad_for
from htsec.creds.links import Link, Need
from htsec.creds.store import CredStore
from htsec.errors import LoginFailed
from htsec.portal.providers import OAuthProvider
from htsec.portal.sessions import BrowserSession
from htsec.store.models import AuditEntry, PortalLogin

# authlib 1.9 warns, once per process and on standard error, that it would rather drive the
# httpx2 fork than httpx; it works with httpx (what htsec uses), and an operator starting
# htsec serve or htsec portal can do nothing about it. Only that warning is silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import OAuth2Client

__all__ = [
    "ACCOUNT_FIELDS",
    "LOGIN_LIFETIME",
    "PROVIDER_TIMEOUT",
    "ClaimedLogin",
    "authorization_client",
    "claim_login",
    "exchange",
    "provider_account",
    "redeem_code",
    "start_login",
]

#: The fields of a user-info answer naming the account, in order of preference (Box: login,
#: Google/OIDC: email, preferred_username, Microsoft Graph: userPrincipalName).
ACCOUNT_FIELDS = ("email", "login", "preferred_username", "userPrincipalName", "name", "sub", "id")

#: Seconds between leaving for the provider and coming back.
LOGIN_LIFETIME = 600
#: Seconds the portal waits for the token endpoint.
PROVIDER_TIMEOUT = 10.0
_T = cast(Table, PortalLogin.__table__)
_PURGE_EVERY = 60.0


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _aad(state_hash: str) -> bytes:
    return aad_for("portal_logins", "code_verifier", state_hash)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every provider request: the system's CA store (where an
    administrator adds a site CA), loaded once rather than per login (~20 ms each)."""
    return ssl.create_default_context()


def authorization_client(p: OAuthProvider, redirect_uri: str) -> OAuth2Client:
    """authlib's client for ``p``: PKCE S256, no redirects followed, no proxy from the
    environment, the system's CA store, :data:`PROVIDER_TIMEOUT`."""
    return OAuth2Client(
        client_id=p.client_id,
        client_secret=p.client_secret,
        token_endpoint_auth_method=p.token_auth,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=PROVIDER_TIMEOUT,
        follow_redirects=False,
        trust_env=False,
        verify=_tls(),
    )


def start_login(
    cs: CredStore,
    session: BrowserSession,
    link: Link,
    position: int,
    provider: OAuthProvider,
    next_path: str | None = None,
    audit: AuditEntry | None = None,
) -> str:
    """The provider's authorization URL for ``link``'s need ``position``; the pending login
    is in the store when this returns, with the ``audit`` row recording it (one transaction).
    ``next_path`` (a path of the portal, checked by the caller) is where the browser goes
    after the login."""
    need = link.needs[position]
    state = secrets.token_urlsafe(32)
    verifier = generate_token(64)
    h = _hash(state)
    scopes = sorted(need.scopes | set(provider.scopes))
    params: dict[str, Any] = dict(provider.params)
    if scopes:
        params["scope"] = " ".join(scopes)
    if need.audience:
        params["resource"] = need.audience  # RFC 8707, as HTCondor's web server sends it
    url, _ = authorization_client(provider, provider.redirect_uri).create_authorization_url(
        provider.authorization_url, state=state, code_verifier=verifier, **params
    )
    secrets_blob = json.dumps({"v": verifier, "k": link.id, "n": next_path}).encode()
    now = int(time.time())
    with cs.store.session() as s:
        # Expired logins are refused by claim_login; their rows go at most once a minute.
        if cs.store.due("portal_logins.purge", _PURGE_EVERY):
            s.execute(delete(_T).where(_T.c.expires_at < now))
        s.execute(
            insert(_T).values(
                state_hash=h,
                session_hash=session.hash,
                link_hash=link.hash,
                position=position,
                provider=provider.name,
                redirect_uri=provider.redirect_uri,
                code_verifier=cs.sealer.seal(secrets_blob.decode(), _aad(h)),
                created_at=now,
                expires_at=now + LOGIN_LIFETIME,
            )
        )
        if audit is not None:
            s.add(audit)
    return str(url)


@dataclass(frozen=True, repr=False)
class ClaimedLogin:
    """A pending login that came back and was used up: what it was for."""

    link_id: str
    position: int
    provider: str
    redirect_uri: str
    code_verifier: str
    next_path: str | None = None

    def __repr__(self) -> str:
        return f"ClaimedLogin(provider={self.provider!r}, position={self.position})"


def claim_login(
    cs: CredStore, session: BrowserSession | None, state: str | None, provider: str
) -> ClaimedLogin:
    """The pending login of ``state`` coming back to ``/return/<provider>`` in ``session``,
    used up now.

    :raises LoginFailed: no session, no or unknown state, a state used before, expired, of
        another browser session or of another provider (the message says which).
    """
    if not state or len(state) > 512:
        raise LoginFailed("the provider sent you back without a state; start the login again")
    if session is None:
        raise LoginFailed(
            "this browser has no portal session (cookies off, or it expired); open your link "
            "again and start the login from there"
        )
    h = _hash(state)
    now = int(time.time())
    with cs.store.session() as s:
        row = s.execute(select(_T).where(_T.c.state_hash == h)).first()
        if row is None:
            raise LoginFailed("this login is unknown to the portal; start it again from your link")
        if row.session_hash != session.hash:
            raise LoginFailed(
                "this login was started in another browser session; it cannot be finished "
                "here. Start it again from your link"
            )
        if row.provider != provider:
            raise LoginFailed("this login came back to another provider's return address")
        if row.used_at is not None:
            raise LoginFailed("this login was already completed (a page reloaded?)")
        if now >= row.expires_at:
            raise LoginFailed("this login took too long; start it again from your link")
        n = s.execute(
            update(_T).where(_T.c.state_hash == h, _T.c.used_at.is_(None)).values(used_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if not n:
            raise LoginFailed("this login was already completed (a page reloaded?)")
    blob = json.loads(cs.sealer.open(row.code_verifier, _aad(h)))
    return ClaimedLogin(
        blob["k"], row.position, row.provider, row.redirect_uri, blob["v"], blob.get("n")
    )


def redeem_code(
    provider: OAuthProvider,
    redirect_uri: str,
    code: str,
    verifier: str,
    *,
    what: str = "login",
    **extra: str,
) -> dict[str, Any]:
    """RFC 6749 section 4.1.3: the token response for ``code``, sent with the exact
    ``redirect_uri`` of the authorization request and the PKCE ``verifier`` (RFC 7636 section
    4.5). The one code exchange of the portal: credential logins (:func:`exchange`) and the
    dashboard's OpenID sign-in (:mod:`htsec.portal.signin`, ``what="sign-in"``) both use it.

    :raises LoginFailed: the provider refused (``invalid_grant`` ...), failed (5xx), answered
        something that is not a token response, or did not answer in time; the message names
        ``what`` failed.
    """
    client = authorization_client(provider, redirect_uri)
    try:
        with client:
            token = client.fetch_token(
                provider.token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                **extra,
            )
    except OAuthError as exc:
        raise LoginFailed(
            f"{provider.title} refused the {what}: {exc.error}"
            + (f" ({exc.description})" if exc.description else "")
        ) from None
    except httpx.TimeoutException:
        raise LoginFailed(
            f"{provider.title} did not answer within {PROVIDER_TIMEOUT:g} s; try again later"
        ) from None
    except httpx.HTTPStatusError as exc:
        raise LoginFailed(
            f"{provider.title} failed (HTTP {exc.response.status_code}); try again later"
        ) from None
    except (httpx.HTTPError, ValueError) as exc:
        raise LoginFailed(
            f"{provider.title} could not be reached or answered nonsense ({type(exc).__name__})"
        ) from None
    return dict(token)


def exchange(
    provider: OAuthProvider, claimed: ClaimedLogin, code: str, need: Need
) -> dict[str, Any]:
    """The token response for ``code`` of a credential login (:func:`redeem_code`, with the
    need's audience as RFC 8707 ``resource``).

    :raises LoginFailed: as :func:`redeem_code`, or the answer holds no access token.
    """
    extra = {"resource": need.audience} if need.audience else {}
    body = redeem_code(provider, claimed.redirect_uri, code, claimed.code_verifier, **extra)
    if not isinstance(body.get("access_token"), str):
        raise LoginFailed(f"{provider.title} answered without an access token")
    return body


def provider_account(provider: OAuthProvider, token: dict[str, Any]) -> str | None:
    """Which account at the provider the user logged in with (``<NAME>_USER_URL``, or the
    discovery document's ``userinfo_endpoint``), for the audit trail; None when there is no
    user URL or it does not answer within 5 s (the login is not failed for that)."""
    if not provider.user_url:
        return None
    try:
        with httpx.Client(timeout=5.0, follow_redirects=False, trust_env=False, verify=_tls()) as c:
            r = c.get(
                provider.user_url, headers={"Authorization": f"Bearer {token['access_token']}"}
            )
        info = r.raise_for_status().json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    for key in ACCOUNT_FIELDS:
        value = info.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)[:200]
    return None
