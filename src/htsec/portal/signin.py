"""Signing in to the dashboard with OpenID Connect (Core 1.0, authorization code flow).

https://openid.net/specs/openid-connect-core-1_0.html

``HTSEC_PORTAL_LOGIN_PROVIDER`` names one of the portal's providers (HTCondor's knobs,
:mod:`htsec.portal.providers`) with ``<NAME>_ISSUER`` set. "Sign in with <provider>" posts
(with the CSRF token) to ``/dashboard/oidc``, which sends the browser to the provider with
``state``, ``nonce`` and PKCE (RFC 7636, S256); these are kept sealed under the browser
session in the cookie :data:`PENDING` for ten minutes, so any portal process finishes the
sign-in. The provider sends the browser back to ``<portal>/dashboard/return`` (register it
with the client). The code is exchanged at the token endpoint and the ID token checked as
section 3.1.3.7 says: it came straight from the token endpoint over TLS (step 6: TLS server
validation "MAY be used to validate the issuer in place of checking the token signature"),
``iss`` is the issuer (step 2), ``aud`` holds the client id and ``azp`` is it when present
(steps 3-5), it has not expired (step 9), and ``nonce`` is the one sent (step 11).

The user is the ID token's ``HTSEC_PORTAL_LOGIN_CLAIM`` (default ``sub``): a bare name, or
``name@$(UID_DOMAIN)``; anything else (another domain, a name HTCondor's credd would refuse,
an ``email`` without ``email_verified`` true) signs no one in. Such a user may see,
re-authorise and delete their own credentials (``READ`` and ``WRITE`` on them); administration
needs an ID token of the pool.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from authlib.common.security import is_secure_transport
from fastapi import Request

from htsec.authz import credential_owner
from htsec.config import param
from htsec.creds.crypto import aad_for
from htsec.creds.store import CredStore
from htsec.errors import ConfigError, Forbidden, HtsecError, LoginFailed
from htsec.portal.oauth import authorization_client, redeem_code
from htsec.portal.providers import OAuthProvider
from htsec.portal.sessions import BrowserSession

__all__ = ["PENDING", "OidcUser", "finish", "login_provider", "start", "user_of"]

#: The cookie holding a sign-in in progress (sealed state, nonce and PKCE verifier).
PENDING = "__Host-htsec-signin"
PENDING_LIFETIME = 600
LEEWAY = 60  # seconds of clock skew allowed on exp and iat


@dataclass(frozen=True)
class OidcUser:
    """A dashboard viewer signed in at an OpenID provider: their own credentials only."""

    subject: str
    kid: str = "oidc"
    authorizations: tuple[str, ...] | None = ("READ", "WRITE")


def login_provider(request: Request) -> tuple[OAuthProvider, str] | None:
    """The provider of ``HTSEC_PORTAL_LOGIN_PROVIDER`` and its issuer; None when unset."""
    name = (param("HTSEC_PORTAL_LOGIN_PROVIDER") or "").strip().lower()
    if not name:
        return None
    provider = request.app.state.portal_providers.get(name)
    if provider is None or not provider.issuer:
        raise ConfigError(
            f"HTSEC_PORTAL_LOGIN_PROVIDER = {name}: configure it as a provider with "
            f"{name.upper()}_CLIENT_ID and {name.upper()}_ISSUER (OpenID Connect)"
        )
    return provider, provider.issuer.rstrip("/")


def _redirect_uri(request: Request) -> str:
    return f"{str(request.app.state.portal_base).rstrip('/')}/dashboard/return"


def _aad(session: BrowserSession) -> bytes:
    return aad_for("portal_sessions", "oidc_signin", session.hash)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def start(request: Request, session: BrowserSession) -> tuple[str, str]:
    """Where to send the browser, and the sealed cookie value to set (section 3.1.2.1)."""
    found = login_provider(request)
    if found is None:
        raise Forbidden("signing in with OpenID Connect is not enabled here")
    provider, _issuer = found
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    client = authorization_client(provider, _redirect_uri(request))
    url, _ = client.create_authorization_url(
        provider.authorization_url,
        state=state,
        code_verifier=verifier,
        nonce=nonce,
        scope="openid",
    )
    pending = {"state": state, "nonce": nonce, "verifier": verifier, "at": int(time.time())}
    cs: CredStore = request.app.state.credstore
    sealed = cs.sealer.seal(json.dumps(pending), _aad(session))
    return str(url), _b64(sealed)


def _pending(request: Request, session: BrowserSession, cookie: str | None) -> dict[str, Any]:
    cs: CredStore = request.app.state.credstore
    try:
        raw = base64.urlsafe_b64decode((cookie or "") + "=" * (-len(cookie or "") % 4))
        pending = json.loads(cs.sealer.open(raw, _aad(session)))
    except (binascii.Error, ValueError, HtsecError):
        pending = None
    if not isinstance(pending, dict) or time.time() > pending.get("at", 0) + PENDING_LIFETIME:
        raise Forbidden("this sign-in was not started in this browser, or took too long; retry")
    return pending


def finish(
    request: Request,
    session: BrowserSession,
    cookie: str | None,
    code: str | None,
    state: str | None,
    error: str | None,
) -> str:
    """The local user the provider vouches for (sections 3.1.2.5-3.1.3.7), or Forbidden."""
    pending = _pending(request, session, cookie)
    if not state or not hmac.compare_digest(state.encode(), str(pending["state"]).encode()):
        raise Forbidden("the sign-in's state does not match this browser's; sign in again")
    if error is not None:
        shown = error if error.isascii() and error.isprintable() else "an error"
        raise Forbidden(f"the provider answered {shown[:64]}; nobody was signed in")
    if not code:
        raise Forbidden("the provider sent no code; sign in again")
    found = login_provider(request)
    if found is None:
        raise Forbidden("signing in with OpenID Connect is not enabled here")
    provider, issuer = found
    claims = _id_token(provider, _token(request, provider, code, str(pending["verifier"])))
    _check(claims, provider, issuer, str(pending["nonce"]))
    return user_of(request, claims)


def _token(request: Request, provider: OAuthProvider, code: str, verifier: str) -> str:
    """Section 3.1.3.1: the code exchanged (with the PKCE verifier) for the ID token."""
    if not is_secure_transport(provider.token_url):  # step 6 relies on it
        raise ConfigError(f"{provider.token_url} is neither https nor loopback http")
    try:
        answer = redeem_code(provider, _redirect_uri(request), code, verifier, what="sign-in")
    except LoginFailed as exc:
        raise Forbidden(f"{exc}; nobody was signed in") from None
    id_token = answer.get("id_token")
    if not isinstance(id_token, str):
        raise Forbidden("the provider issued no ID token (is it an OpenID Connect provider?)")
    return id_token


def _id_token(provider: OAuthProvider, id_token: str) -> dict[str, Any]:
    """The ID token's claims. Its signature is not checked: it came straight from the token
    endpoint, over TLS or to a loopback address (section 3.1.3.7, step 6)."""
    parts = id_token.split(".")
    if len(parts) != 3 or len(id_token) > 16384:
        raise Forbidden("the provider's ID token is not a JWT")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        raise Forbidden("the provider's ID token cannot be read") from None
    if not isinstance(claims, dict):
        raise Forbidden("the provider's ID token cannot be read")
    return claims


def _check(claims: dict[str, Any], provider: OAuthProvider, issuer: str, nonce: str) -> None:
    """Section 3.1.3.7, steps 2-5, 9 and 11."""
    now = time.time()
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    problems = [
        (str(claims.get("iss", "")).rstrip("/") != issuer, "it is from another issuer"),
        (provider.client_id not in audiences, "it is not for this portal (aud)"),
        ("azp" in claims and claims["azp"] != provider.client_id, "azp is another client"),
        (not isinstance(claims.get("exp"), int | float), "it has no exp"),
        (isinstance(claims.get("exp"), int | float) and now > claims["exp"] + LEEWAY, "expired"),
        (claims.get("nonce") != nonce, "its nonce is not the one sent"),
    ]
    for failed, why in problems:
        if failed:
            raise Forbidden(f"the provider's ID token was refused: {why}; nobody was signed in")


def user_of(request: Request, claims: dict[str, Any]) -> str:
    """The local user an ID token's claims name (``HTSEC_PORTAL_LOGIN_CLAIM``), or Forbidden.
    An ``email`` counts only with ``email_verified`` true: whoever typed an address at the
    provider without proving it is not its owner (OpenID Connect Core 5.1)."""
    claim = (param("HTSEC_PORTAL_LOGIN_CLAIM") or "sub").strip()
    value = claims.get(claim)
    domain: str = request.app.state.settings.uid_domain
    if not isinstance(value, str) or not value:
        raise Forbidden(f"the provider's ID token has no {claim} claim; nobody was signed in")
    if claim == "email" and claims.get("email_verified") is not True:
        raise Forbidden(
            "the provider has not verified this account's email address; nobody was signed in"
        )
    user = credential_owner(value if "@" in value else f"{value}@{domain}", domain)
    if user is None:
        raise Forbidden(
            f"{claim} {value[:80]!r} is not a user of this pool (user or user@{domain}); "
            "sign in with an ID token instead"
        )
    return user
