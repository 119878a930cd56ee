"""OAuth2 providers the credmon refreshes against, configured with HTCondor's knobs.

For a provider ``NAME`` (FORMATS.md section 3; HTCondor's ``condor_credmon_oauth``):
``NAME_CLIENT_ID``, ``NAME_CLIENT_SECRET_FILE``, ``NAME_TOKEN_URL``, ``NAME_AUTHORIZATION_URL``,
``NAME_USER_URL``; or ``NAME_ISSUER`` for OpenID Connect discovery of the endpoints
(OpenID Connect Discovery 1.0 section 4). Which names are OAuth2 providers:
``OAUTH2_CREDMON_PROVIDER_NAMES`` or any defined ``NAME_CLIENT_ID``; names in
``LOCAL_CREDMON_PROVIDER_NAMES`` (default ``scitokens``) are served by the local issuer.
htsec's own: ``HTSEC_CREDMON_RATE`` (refreshes per second per provider, default 50, 0 for no
limit; also for providers known only from a credential's ``.meta``) and
``NAME_TOKEN_AUTH`` (``client_secret_basic``, the default, or ``client_secret_post``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from htsec import _fs
from htsec.config import float_knob, param
from htsec.errors import ConfigError

__all__ = ["Provider", "ProviderSet", "load_providers"]


@dataclass(frozen=True, repr=False)
class Provider:
    name: str
    client_id: str | None
    client_secret: str | None
    token_url: str | None
    # Where the portal sends browsers and asks who logged in (htsec.portal.providers); the
    # credmon itself only refreshes.
    authorization_url: str | None = None
    user_url: str | None = None
    issuer: str | None = None
    auth_method: str = "client_secret_basic"
    rate: float = 50.0
    local: bool = False

    def __repr__(self) -> str:
        fp = hashlib.sha256((self.client_secret or "").encode()).hexdigest()[:8]
        return (
            f"Provider({self.name!r}, client_id={self.client_id!r}, "
            f"token_url={self.token_url!r}, client_secret=[secure {fp}])"
        )


class ProviderSet:
    def __init__(
        self, providers: dict[str, Provider], local_names: set[str], *, default_rate: float = 50.0
    ) -> None:
        self.providers = providers
        self.local_names = local_names
        # For a credential whose provider is not configured here (its token URL and client
        # come from its .meta): HTSEC_CREDMON_RATE all the same.
        self.default_rate = default_rate

    def get(self, name: str) -> Provider | None:
        return self.providers.get(name.lower())

    def is_local(self, name: str) -> bool:
        return name.lower() in self.local_names


def _names(knob: str) -> list[str]:
    raw = param(knob) or ""
    return [n.strip().lower() for n in raw.replace(",", " ").split() if n.strip()]


def _client_id_names() -> list[str]:
    import htcondor2

    names = []
    for key in htcondor2.param:
        k = str(key).upper()
        if k.endswith("_CLIENT_ID") and not k.startswith(("LOCAL_CREDMON", "SEC_")):
            names.append(k[: -len("_CLIENT_ID")].lower())
    return names


def discover(issuer: str, *, timeout: float = 10.0) -> dict[str, str]:
    """OpenID Connect discovery: ``<issuer>/.well-known/openid-configuration``."""
    import httpx  # only for discovery: not imported by every credmon start-up

    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        doc = httpx.get(url, timeout=timeout).raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError(f"OpenID discovery at {url} failed: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("token_endpoint"), str):
        raise ConfigError(f"OpenID discovery at {url} has no token_endpoint")
    return {k: v for k, v in doc.items() if isinstance(v, str)}


def load_providers(*, discover_endpoints: bool = True) -> ProviderSet:
    """Every configured provider; a provider whose secret file is unsafe is a ConfigError."""
    local = set(_names("LOCAL_CREDMON_PROVIDER_NAMES") or ["scitokens"])
    names = set(_names("OAUTH2_CREDMON_PROVIDER_NAMES")) | set(_client_id_names())
    rate = float_knob("HTSEC_CREDMON_RATE", 50.0, what="refreshes per second")
    out: dict[str, Provider] = {}
    for name in sorted(names - local):
        up = name.upper()
        secret = None
        secret_file = param(f"{up}_CLIENT_SECRET_FILE")
        if secret_file:
            try:
                secret = _fs.read_private(Path(secret_file), limit=16384).decode().strip()
            except FileNotFoundError:
                raise ConfigError(
                    f"{up}_CLIENT_SECRET_FILE = {secret_file} does not exist"
                ) from None
        token_url = param(f"{up}_TOKEN_URL")
        issuer = param(f"{up}_ISSUER")
        auth_url = param(f"{up}_AUTHORIZATION_URL")
        user_url = param(f"{up}_USER_URL")
        if issuer and discover_endpoints and not token_url:
            doc = discover(issuer)
            token_url = doc["token_endpoint"]
            auth_url = auth_url or doc.get("authorization_endpoint")
            user_url = user_url or doc.get("userinfo_endpoint")
        method = (param(f"{up}_TOKEN_AUTH") or "client_secret_basic").strip()
        if method not in ("client_secret_basic", "client_secret_post"):
            raise ConfigError(
                f"{up}_TOKEN_AUTH = {method!r}: use client_secret_basic or client_secret_post"
            )
        out[name] = Provider(
            name=name,
            client_id=param(f"{up}_CLIENT_ID"),
            client_secret=secret,
            token_url=token_url,
            authorization_url=auth_url,
            user_url=user_url,
            issuer=issuer,
            auth_method=method,
            rate=rate,
        )
    for name in local:
        out[name] = Provider(
            name=name, client_id=None, client_secret=None, token_url=None, local=True
        )
    return ProviderSet(out, local, default_rate=rate)
