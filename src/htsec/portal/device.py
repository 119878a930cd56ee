"""OAuth 2.0 Device Authorization Grant (RFC 8628), run by the portal for ``htsec login``.

https://www.rfc-editor.org/rfc/rfc8628

A submit host without a browser asks the portal to start a device login (``POST
/v1/device-logins``, with the user's ID token); the portal sends the device authorization
request to the provider (section 3.1) with its own client credentials and answers with the user
code and the verification URI (section 3.2) and an opaque ``login``. The CLI then polls (``POST
/v1/device-logins/poll``) at the provider's ``interval``; each poll is one device access token
request (section 3.4) from the portal. When the user has approved, the portal stores the refresh
token sealed in the credential store and wakes the credmon. The client secret, the device code
and the refresh token never reach the submit host.

The pending login is no server state: ``login`` is the device code and what it is for, sealed
with the credential store's key under the user's name (:class:`htsec.creds.crypto.Sealer`).
Any portal process sharing the store can answer the next poll, only the user who started it
can use it, and it stops at the provider's ``expires_in``.

Providers are HTCondor's (:mod:`htsec.credmon.providers`: ``<NAME>_CLIENT_ID``,
``<NAME>_CLIENT_SECRET_FILE``, ``<NAME>_TOKEN_URL`` or ``<NAME>_ISSUER``); the device
authorization endpoint is ``<NAME>_DEVICE_AUTHORIZATION_URL`` or, with ``<NAME>_ISSUER``, the
discovery document's ``device_authorization_endpoint``.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import is_secure_transport
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from htsec.authz import Perm, credential_owner
from htsec.config import param
from htsec.credmon.providers import Provider, discover, load_providers
from htsec.creds.api import wake_credmon
from htsec.creds.crypto import aad_for
from htsec.creds.names import TokenName
from htsec.creds.store import CredStore
from htsec.errors import ConfigError, Forbidden, HtsecError, NotFound, TokenClientError
from htsec.web.auth import Caller, peer, require
from htsec.web.verifier import VerifiedCaller

__all__ = ["DeviceEndpoint", "router"]

router = APIRouter(prefix="/v1/device-logins", tags=["device login"])

#: Seconds the portal waits for the provider per request.
PROVIDER_TIMEOUT = 10.0
#: RFC 8628 section 3.2: "If no value is provided, clients MUST use 5 as the default."
DEFAULT_INTERVAL = 5
#: Section 3.5: on ``slow_down`` "the interval MUST be increased by 5 seconds for this and all
#: subsequent requests".
SLOW_DOWN_STEP = 5
_MAX_LOGIN = 8192  # characters of the sealed pending login


class StartIn(BaseModel):
    service: str = Field(min_length=1, max_length=128)
    handle: str | None = Field(default=None, max_length=128)
    scopes: list[str] = Field(default_factory=list, max_length=64)
    audience: str = Field(default="", max_length=1024)


class PollIn(BaseModel):
    login: str = Field(min_length=1, max_length=_MAX_LOGIN)


@dataclass(frozen=True, repr=False)
class DeviceEndpoint:
    """A provider that can run the device flow (its repr hides the client secret)."""

    provider: Provider
    device_url: str

    def __repr__(self) -> str:
        return f"DeviceEndpoint({self.provider!r}, device_url={self.device_url!r})"

    def post(self, url: str, form: dict[str, str]) -> httpx.Response:
        """A form POST to the provider with the client authenticated (RFC 6749 section
        2.3.1, authlib's ``ClientAuth``): the device authorization request (section 3.1
        authenticates the client as at the token endpoint) and the token requests."""
        p = self.provider
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        url, headers, body = ClientAuth(p.client_id, p.client_secret, p.auth_method).prepare(
            "POST", url, headers, urlencode(form)
        )
        return httpx.post(
            url, headers=headers, content=body, timeout=PROVIDER_TIMEOUT, follow_redirects=False
        )


_lock = threading.Lock()


def device_endpoint(request: Request, service: str) -> DeviceEndpoint:
    """The configured provider named ``service`` with its device authorization endpoint;
    looked up once per process (discovery included) and kept in the app's state."""
    cache: dict[str, DeviceEndpoint] = request.app.state.__dict__.setdefault("device_endpoints", {})
    name = service.lower()
    if name in cache:
        return cache[name]
    with _lock:
        if name not in cache:
            cache[name] = _load_endpoint(name)
    return cache[name]


def _load_endpoint(name: str) -> DeviceEndpoint:
    provider = load_providers().get(name)
    if provider is None or provider.local:
        raise NotFound(
            f"no OAuth provider {name!r} is configured here ({name.upper()}_CLIENT_ID and "
            f"{name.upper()}_TOKEN_URL or {name.upper()}_ISSUER)"
        )
    device_url = param(f"{name.upper()}_DEVICE_AUTHORIZATION_URL")
    if not device_url and provider.issuer:
        device_url = discover(provider.issuer).get("device_authorization_endpoint")
    if not device_url or not provider.token_url or not provider.client_id:
        raise ConfigError(
            f"provider {name} cannot run a device login: it needs {name.upper()}_CLIENT_ID, a "
            f"token URL and {name.upper()}_DEVICE_AUTHORIZATION_URL (or {name.upper()}_ISSUER "
            "whose discovery document has a device_authorization_endpoint)"
        )
    for url in (device_url, provider.token_url):
        # The client secret goes to these: https, or http to this host only.
        if not is_secure_transport(url):
            raise ConfigError(f"provider {name}: {url} is neither https nor loopback http")
    return DeviceEndpoint(provider, device_url)


# -- the sealed pending login ----------------------------------------------------------------


def _aad(user: str) -> bytes:
    return aad_for("device_login", "pending", user)


def _seal(cs: CredStore, user: str, pending: dict[str, Any]) -> str:
    sealed = cs.sealer.seal(json.dumps(pending, separators=(",", ":")), _aad(user))
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def _open(cs: CredStore, user: str, login: str) -> dict[str, Any]:
    """The pending login ``login`` of ``user``; NotFound for anything else (another user's,
    altered, sealed under a key no longer held)."""
    try:
        sealed = base64.urlsafe_b64decode(login + "=" * (-len(login) % 4))
        pending = json.loads(cs.sealer.open(sealed, _aad(user)))
    except (binascii.Error, ValueError, HtsecError):
        raise NotFound(
            f"no device login of {user} is pending under that login; start a new one"
        ) from None
    if not isinstance(pending, dict):
        raise NotFound("the device login is malformed; start a new one")
    return pending


def _owner(request: Request, caller: VerifiedCaller) -> str:
    """The user whose credential a device login stores: the caller's own (WRITE)."""
    require(caller, Perm.WRITE, to="store credentials")
    domain: str = request.app.state.settings.uid_domain
    user = credential_owner(caller.subject, domain)
    if user is None:
        raise Forbidden(
            f"{caller.subject} owns no credentials: they belong to user@{domain} (UID_DOMAIN)"
        )
    return user


def _code(error: object, status: int | httpx.Response) -> str:
    """An OAuth error code fit to show (RFC 6749 section 5.2: printable ASCII), else the
    HTTP status."""
    if isinstance(error, str) and error.isascii() and error.isprintable() and len(error) <= 64:
        return error
    return f"HTTP {status.status_code if isinstance(status, httpx.Response) else status}"


def _provider_error(exc: Exception, what: str) -> TokenClientError:
    if isinstance(exc, httpx.TimeoutException):
        return TokenClientError(f"the provider did not answer the {what} in time")
    if isinstance(exc, httpx.HTTPStatusError):
        return TokenClientError(
            f"the provider answered the {what} with HTTP {exc.response.status_code}"
        )
    return TokenClientError(f"the {what} failed: {type(exc).__name__}")


@dataclass(frozen=True)
class _Audit:
    """Who polled for which credential: a refused or failed login's audit row."""

    actor: str
    user: str
    service: str
    handle: str | None
    peer: str

    def record(self, cs: CredStore, outcome: str, *, action: str) -> None:
        cs.record_access(
            actor=self.actor,
            user=self.user,
            service=self.service,
            handle=self.handle,
            peer=self.peer,
            outcome=outcome,
            action=action,
        )


# -- routes ----------------------------------------------------------------------------------


@router.post("", status_code=201)
def start(body: StartIn, request: Request, caller: Caller) -> dict[str, Any]:
    """Section 3.1: ask the provider for a device code for the caller's credential
    ``service`` (``handle``); answers the user code, the verification URI(s), ``interval``,
    ``expires_in`` and the sealed ``login`` to poll with."""
    user = _owner(request, caller)
    name = TokenName(body.service, body.handle or "")  # HTCondor's naming rules, or 400
    endpoint = device_endpoint(request, body.service)
    scopes = body.scopes or (param(f"{body.service.upper()}_DEFAULT_SCOPES") or "openid").split()
    form = {"client_id": endpoint.provider.client_id or "", "scope": " ".join(scopes)}
    if body.audience:
        form["resource"] = body.audience  # RFC 8707, as the credmon sends it
    try:
        resp = endpoint.post(endpoint.device_url, form)
        answer = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _provider_error(exc, "device authorization request") from None
    if resp.status_code != 200 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise TokenClientError(
            f"the provider refused the device authorization request: {_code(error, resp)}"
        )
    try:
        device_code = str(answer["device_code"])
        user_code = str(answer["user_code"])
        verification_uri = str(answer["verification_uri"])
        expires_in = int(answer["expires_in"])
        interval = int(answer.get("interval", DEFAULT_INTERVAL))
    except (KeyError, TypeError, ValueError):
        raise TokenClientError("the provider's device authorization answer is incomplete") from None
    complete = answer.get("verification_uri_complete")
    pending = {
        "device_code": device_code,
        "service": name.service,
        "handle": name.handle,
        "scopes": scopes,
        "audience": body.audience,
        "expires_at": int(time.time()) + expires_in,
    }
    return {
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": complete if isinstance(complete, str) else None,
        "expires_in": expires_in,
        "interval": max(1, interval),
        "login": _seal(_creds(request), user, pending),
    }


def _creds(request: Request) -> CredStore:
    cs: CredStore = request.app.state.credstore
    return cs


@router.post("/poll")
def poll(body: PollIn, request: Request, caller: Caller) -> dict[str, Any]:
    """Section 3.4: one device access token request. ``status`` is ``pending`` (ask again in
    ``interval`` seconds), ``slow_down`` (the same, with the larger interval), ``denied``,
    ``expired``, or ``stored`` with the credential (never its tokens)."""
    user = _owner(request, caller)
    cs = _creds(request)
    pending = _open(cs, user, body.login)
    service, handle = str(pending["service"]), str(pending["handle"]) or None
    audit = _Audit(caller.subject, user, service, handle, peer(request.scope))
    if time.time() >= int(pending["expires_at"]):
        audit.record(cs, "expired", action="device-login")
        return {"status": "expired"}
    endpoint = device_endpoint(request, service)
    form = {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": str(pending["device_code"])}
    if pending.get("audience"):
        form["resource"] = str(pending["audience"])
    try:
        resp = endpoint.post(str(endpoint.provider.token_url), form)
        token = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _provider_error(exc, "device access token request") from None
    if not isinstance(token, dict):
        raise TokenClientError("the provider's token answer is not a JSON object")
    if resp.status_code != 200 or "error" in token:
        return _not_yet(cs, audit, token.get("error"), resp.status_code)
    refresh_token = token.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        audit.record(cs, "no_refresh_token", action="device-login")
        raise TokenClientError(
            "the provider issued no refresh token: ask for offline access in --scopes "
            "(e.g. offline_access) or allow the client refresh tokens"
        )
    granted = token.get("scope")
    expires_in = token.get("expires_in")
    info = cs.put(
        user,
        service,
        handle,
        refresh_token=refresh_token,
        access_token=token.get("access_token"),
        expires_at=int(time.time()) + int(expires_in) if isinstance(expires_in, int) else None,
        token_type=str(token.get("token_type") or "bearer"),
        scopes=granted.split() if isinstance(granted, str) else list(pending["scopes"]),
        audience=str(pending.get("audience") or ""),
        provider=endpoint.provider.name,
        actor=caller.subject,
        peer=peer(request.scope),
    )
    wake_credmon(request)
    return {"status": "stored", "credential": info.as_dict()}


def _not_yet(cs: CredStore, audit: _Audit, error: object, status: int) -> dict[str, Any]:
    """Section 3.5's error codes as a poll status; any other answer is the provider's
    refusal (audited, 502)."""
    if error == "authorization_pending":
        return {"status": "pending"}
    if error == "slow_down":
        return {"status": "slow_down", "add_interval": SLOW_DOWN_STEP}
    outcome = {"access_denied": "denied", "expired_token": "expired"}.get(str(error))
    if outcome is not None:
        audit.record(cs, outcome, action="device-login")
        return {"status": outcome}
    audit.record(cs, "provider_error", action="device-login")
    raise TokenClientError(
        f"the provider refused the device access token request: {_code(error, status)}"
    )
