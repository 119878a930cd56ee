"""A real OAuth 2.0 / OpenID Connect provider for the tests (TESTING.md, "OAuth / OIDC provider").

The provider is npm ``oidc-provider`` 9.x run by ``tests/rigs/oidc/provider.mjs`` on node, one
process per :func:`start_provider` call, listening on a free ``http://127.0.0.1`` port. Its state
is in memory, so a fresh process is a clean slate. ``scripts/setup --test`` installs its
``node_modules`` (``npm ci``).

Config keys (a dict, written to JSON for the rig; :func:`default_config` gives a working one):

``clients``
    list of client metadata in oidc-provider's (RFC 7591) spelling: ``client_id``,
    ``client_secret``, ``redirect_uris``, ``grant_types`` (default: authorization_code,
    refresh_token, client_credentials), ``token_endpoint_auth_method``, ``scope``...
``ttl``
    seconds per artifact: ``AccessToken``, ``RefreshToken``, ``ClientCredentials``,
    ``AuthorizationCode``, ``IdToken``, ``Grant``, ``Session``, ``Interaction``, ``DeviceCode``.
``resource_servers``
    resource indicator -> ``{"scope": "space separated", "audience", "format": "jwt"|"opaque",
    "alg": "ES256", "access_token_ttl", "extra_claims": {...}}``; the key ``"*"`` matches any
    indicator. JWT access tokens (``typ: at+jwt``) carry ``aud``, ``scope``, ``sub``,
    ``client_id``, ``iss``, ``iat``, ``exp``, ``jti`` and the extra claims.
``default_resource``
    indicator used when a request names none (default: none, so opaque access tokens).
``scopes``
    the static OIDC scopes (default openid, offline_access, profile, email).
``extra_token_claims``
    claims added to every JWT access token.
``pkce_required``, ``issue_refresh_tokens``, ``rotate_refresh_tokens``
    all true by default; ``expires_with_session`` false by default.
``features``
    raw oidc-provider ``features`` merged in (e.g. ``{"deviceFlow": {"enabled": false}}``).
``jwks``
    signing keys (default: a fresh RS256 and ES256 key per process).

Consent is automatic, refresh tokens need no ``offline_access``, and rotation is on with reuse
detection: presenting a rotated-out refresh token fails with ``invalid_grant`` and revokes the
whole grant. The admin API under ``/__rig/`` queues faults (:func:`inject_fault`) and revokes a
user's grants (:func:`revoke_grants`).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "REDIRECT_URI",
    "RIG_DIR",
    "WLCG_AUDIENCE",
    "WLCG_SCOPES",
    "FlowError",
    "OidcUnavailable",
    "Provider",
    "clear_faults",
    "client_credentials",
    "default_config",
    "inject_fault",
    "introspect",
    "mint_refresh_tokens",
    "obtain_refresh_token",
    "provider_fixture",
    "refresh",
    "revoke_grants",
    "start_provider",
]

RIG_DIR = Path(__file__).resolve().parent / "rigs" / "oidc"
READY_TIMEOUT = 30.0  # seconds from spawning node to "READY <issuer>"
SETUP_HINT = "run scripts/setup --test (it runs npm ci in tests/rigs/oidc)"

CLIENT_ID = "htsec-credmon"
CLIENT_SECRET = "htsec-credmon-secret"  # a test value, valid only on the rig
REDIRECT_URI = "https://credmon.example.org/callback"  # never contacted
WLCG_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"
WLCG_SCOPES = (
    "storage.read:/ storage.create:/ storage.modify:/ storage.stage:/ "
    "compute.read compute.create compute.modify compute.cancel"
)

Client = Sequence[str]  # (client_id, client_secret)


class OidcUnavailable(RuntimeError):
    """The rig cannot run here; ``missing`` when node or its node_modules are not installed."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


class FlowError(RuntimeError):
    """The authorization-code flow did not end in a code and tokens."""


def default_config(**overrides: Any) -> dict[str, Any]:
    """One confidential client (:data:`CLIENT_ID`) allowed every grant, one JWT resource server
    (:data:`WLCG_AUDIENCE` with :data:`WLCG_SCOPES` and ``wlcg.ver``), 60 s access tokens.
    Top-level keys in ``overrides`` replace the defaults."""
    config: dict[str, Any] = {
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [REDIRECT_URI],
                "grant_types": [
                    "authorization_code",
                    "refresh_token",
                    "client_credentials",
                    "urn:ietf:params:oauth:grant-type:device_code",
                ],
            }
        ],
        "ttl": {"AccessToken": 60, "RefreshToken": 3600, "Grant": 3600},
        "resource_servers": {
            WLCG_AUDIENCE: {"scope": WLCG_SCOPES, "extra_claims": {"wlcg.ver": "1.0"}},
        },
    }
    config.update(overrides)
    return config


# -- the provider process --------------------------------------------------------------------


@dataclass(eq=False)
class Provider:
    issuer: str
    process: subprocess.Popen[bytes]
    log_path: Path
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def token_url(self) -> str:
        return str(self.metadata["token_endpoint"])

    @property
    def authorization_url(self) -> str:
        return str(self.metadata["authorization_endpoint"])

    @property
    def introspection_url(self) -> str:
        return str(self.metadata["introspection_endpoint"])

    @property
    def revocation_url(self) -> str:
        return str(self.metadata["revocation_endpoint"])

    @property
    def device_authorization_url(self) -> str:
        return str(self.metadata["device_authorization_endpoint"])

    @property
    def jwks_url(self) -> str:
        return str(self.metadata["jwks_uri"])

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the rig's admin API (``/__rig/...``); raises on a non-2xx answer."""
        r = httpx.request(method, f"{self.issuer}/__rig/{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        """``requests`` (count per path, admin calls excluded), ``pending_faults``, ``grants``
        (grant ids per account), ``refresh_token_uses``: ``presented`` (refresh grants that
        reached the provider), ``distinct`` (refresh tokens among them) and ``reused`` (a hash
        of each refresh token presented more than once -> how often)."""
        return dict(self.admin("GET", "stats"))

    def stop(self) -> None:
        _running.discard(self)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdin is not None:
            self.process.stdin.close()


_running: set[Provider] = set()


@atexit.register
def _stop_all() -> None:
    for p in list(_running):
        p.stop()


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise OidcUnavailable(f"node is not installed: {SETUP_HINT}", missing=True)
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    major = int(version.stdout.strip().lstrip("v").split(".")[0] or 0)
    if major < 20:
        raise OidcUnavailable(
            f"node {version.stdout.strip()} is too old (need >= 20)", missing=True
        )
    if not (RIG_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        raise OidcUnavailable(f"oidc-provider is not installed: {SETUP_HINT}", missing=True)
    return node


def start_provider(config: dict[str, Any], tmp_path: Path) -> Provider:
    """Start the rig with ``config``, its files (config JSON, log) in ``tmp_path``; returns once
    discovery answers. Raises :class:`OidcUnavailable` when node or the npm install is missing,
    ``RuntimeError`` (with the log) when the provider does not come up within 30 s."""
    node = _node()
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = tmp_path / "oidc-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = tmp_path / "oidc-provider.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [node, str(RIG_DIR / "provider.mjs"), str(config_path), "--watch-stdin"],
            cwd=RIG_DIR,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OIDC_RIG_PORT": "0"},
        )
    deadline = time.monotonic() + READY_TIMEOUT
    issuer = None
    while issuer is None:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                issuer = line.split(" ", 1)[1].strip()
        if issuer is None:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(5)
                raise RuntimeError(f"the OIDC provider did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
    provider = Provider(issuer, process, log_path, config)
    _running.add(provider)
    try:
        r = httpx.get(provider.discovery_url, timeout=10)
        r.raise_for_status()
        provider.metadata = r.json()
    except BaseException:
        provider.stop()
        raise
    return provider


def provider_fixture(
    config: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    *,
    scope: Literal["session", "package", "module", "class", "function"] = "module",
) -> Any:
    """A pytest fixture running one provider (``default_config()`` unless ``config``, a dict or a
    function returning one) for ``scope``; assign it to a module-level name, e.g.
    ``oidc = provider_fixture(default_config(ttl={"AccessToken": 2}))``. Skips where node or the
    npm install is missing, but fails if ``CI`` is set."""

    @pytest.fixture(scope=scope)
    def _provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
        cfg = config() if callable(config) else (config or default_config())
        unavailable: OidcUnavailable | None = None
        try:
            provider = start_provider(cfg, tmp_path_factory.mktemp("oidc"))
        except OidcUnavailable as exc:
            unavailable = exc
        if unavailable is not None:
            if os.environ.get("CI"):
                pytest.fail(
                    f"{unavailable} (CI is set: failing instead of skipping)", pytrace=False
                )
            pytest.skip(str(unavailable))
        try:
            yield provider
        finally:
            provider.stop()

    return _provider


# -- flows -----------------------------------------------------------------------------------


class _Forms(HTMLParser):
    """The forms of a page: [(action, method, {name: value})]."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), a.get("method", "get").lower(), {}))
        elif tag == "input" and self.forms and "name" in a:
            self.forms[-1][2][a["name"]] = a.get("value", "")


def _same_origin(url: str, issuer: str) -> bool:
    u, i = urlsplit(url), urlsplit(issuer)
    return (u.scheme, u.netloc) == (i.scheme, i.netloc)


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(
    provider: Provider,
    client_id: str,
    redirect_uri: str,
    user: str,
    scopes: Sequence[str] | str,
    resource: str | Sequence[str] | None = None,
    *,
    extra: dict[str, str] | None = None,
) -> tuple[str, str]:
    """The browser half of the authorization-code flow with PKCE (S256) and ``state``: log in as
    ``user`` through the devInteractions form and return ``(code, code_verifier)``. The redirect
    to ``redirect_uri`` is read from ``Location``, never followed."""
    verifier, challenge = _pkce_pair()
    state = secrets.token_urlsafe(16)
    params: dict[str, Any] = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scopes if isinstance(scopes, str) else " ".join(scopes),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **(extra or {}),
    }
    if resource is not None:
        params["resource"] = resource
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        r = browser.get(provider.authorization_url, params=params)
        for _ in range(20):
            if r.is_redirect:
                location = urljoin(str(r.url), r.headers["location"])
                if not _same_origin(location, provider.issuer):
                    break
                r = browser.get(location)
                continue
            parser = _Forms()
            parser.feed(r.text)
            if r.status_code != 200 or not parser.forms:
                raise FlowError(f"unexpected {r.status_code} at {r.url}: {r.text[:2000]}")
            action, _method, fields = parser.forms[0]
            if "login" in fields:
                fields.update(login=user, password="rig")
            r = browser.post(urljoin(str(r.url), action), data=fields)
        else:
            raise FlowError("the authorization flow did not end within 20 steps")
    if not location.startswith(redirect_uri):
        raise FlowError(f"redirected to {location}, not to {redirect_uri}")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    if "error" in query:
        raise FlowError(f"authorization failed: {query}")
    if query.get("state") != state:
        raise FlowError(f"state mismatch: sent {state}, got {query.get('state')}")
    if query.get("iss", provider.issuer) != provider.issuer:
        raise FlowError(f"iss mismatch: {query.get('iss')}")
    return query["code"], verifier


def obtain_refresh_token(
    provider: Provider,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    user: str,
    scopes: Sequence[str] | str,
    resource: str | None = None,
) -> dict[str, Any]:
    """Run the real authorization-code + PKCE flow as ``user`` and return the token response
    (``access_token``, ``refresh_token``, ``expires_in``, ``scope``, ``token_type``, and
    ``id_token`` when ``openid`` was asked for)."""
    code, verifier = authorize(provider, client_id, redirect_uri, user, scopes, resource)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    if resource is not None:
        data["resource"] = resource
    r = httpx.post(provider.token_url, data=data, auth=(client_id, client_secret), timeout=10)
    if r.status_code != 200:
        raise FlowError(f"token endpoint answered {r.status_code}: {r.text}")
    return dict(r.json())


def refresh(
    provider: Provider,
    client: Client,
    refresh_token: str,
    *,
    scope: str | None = None,
    resource: str | None = None,
    timeout: float = 10,
) -> httpx.Response:
    """POST a refresh_token grant as ``client`` (``(client_id, client_secret)``); the raw
    response, so tests can look at failures."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope is not None:
        data["scope"] = scope
    if resource is not None:
        data["resource"] = resource
    return httpx.post(provider.token_url, data=data, auth=tuple(client), timeout=timeout)  # type: ignore[arg-type]


def client_credentials(
    provider: Provider,
    client: Client,
    *,
    scope: str | None = None,
    resource: str | None = None,
) -> httpx.Response:
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    if resource is not None:
        data["resource"] = resource
    return httpx.post(provider.token_url, data=data, auth=tuple(client), timeout=10)  # type: ignore[arg-type]


def introspect(provider: Provider, client: Client, token: str) -> dict[str, Any]:
    """RFC 7662 introspection of an opaque access or refresh token (``{"active": false}`` once
    expired or revoked)."""
    r = httpx.post(
        provider.introspection_url,
        data={"token": token},
        auth=tuple(client),  # type: ignore[arg-type]
        timeout=10,
    )
    r.raise_for_status()
    return dict(r.json())


def inject_fault(
    provider: Provider,
    kind: str | int,
    count: int = 1,
    *,
    delay_ms: int | None = None,
    path: str = "/token",
    retry_after: int | None = None,
    body: Any = None,
) -> None:
    """Make the next ``count`` requests to ``path`` (default: the token endpoint) fail:
    ``kind`` is an HTTP status (500, 503, 429...: an OAuth-style JSON error, or ``body``; with
    ``Retry-After`` if given), ``"malformed"`` (200 with truncated JSON), ``"drop"`` (connection
    closed without an answer), ``"slow"`` (sleep ``delay_ms``, default 2000, then answer
    normally) or ``"late"`` (process the request -- rotating a refresh token -- then sleep
    ``delay_ms`` before answering). Faults queue up in order."""
    spec: dict[str, Any] = {"kind": str(kind), "count": count, "path": path}
    if delay_ms is not None:
        spec["delay_ms"] = delay_ms
    if retry_after is not None:
        spec["retry_after"] = retry_after
    if body is not None:
        spec["body"] = body
    provider.admin("POST", "fault", spec)


def clear_faults(provider: Provider) -> None:
    provider.admin("DELETE", "fault")


def mint_refresh_tokens(
    provider: Provider, count: int, prefix: str = "user", scope: str = "openid"
) -> list[str]:
    """Refresh tokens made server-side in bulk (accounts ``<prefix>0..``), each with its own
    grant, as the token endpoint issues them after a login; for benchmarks."""
    body = {"client_id": CLIENT_ID, "count": count, "prefix": prefix, "scope": scope}
    return list(provider.admin("POST", "mint-refresh", body)["refresh_tokens"])


def revoke_grants(provider: Provider, account: str) -> list[str]:
    """Revoke every grant ``account`` gave (as an admin or the user would at the IdP): its
    refresh and access tokens stop working. Returns the revoked grant ids."""
    return list(provider.admin("POST", "revoke", {"account": account})["revoked"])
