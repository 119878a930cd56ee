"""The OAuth providers users log in at, from HTCondor's knobs, with presets.

For a provider ``NAME`` the portal reads what HTCondor's credd and web server read
(:func:`htsec.credmon.providers.load_providers` does the reading): ``NAME_CLIENT_ID``,
``NAME_CLIENT_SECRET_FILE``, ``NAME_AUTHORIZATION_URL``, ``NAME_TOKEN_URL``, ``NAME_USER_URL``
or ``NAME_ISSUER`` (OpenID Connect discovery), and ``NAME_RETURN_URL_SUFFIX``: the redirect
URI is ``<portal URL><suffix>`` exactly (default suffix ``/return/<name>``), as the credd
builds ``ReturnUrl`` from ``CREDMON_WEB_PREFIX``.

Presets fill in endpoints and the parameters a provider needs to issue a refresh token:

=============  ==========================================================================
``box``        Box (``account.box.com`` / ``api.box.com``)
``gdrive``     Google Drive (``accounts.google.com``): ``access_type=offline``,
               ``prompt=consent`` (Google issues a refresh token only then); also ``google``
``onedrive``   Microsoft OneDrive (``login.microsoftonline.com/common``, v2.0): the scope
               ``offline_access`` is added; also ``microsoft``
=============  ==========================================================================

Any knob set wins over the preset. ``NAME_EXTRA_SCOPES`` is not an HTCondor knob and not read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from htsec.config import param
from htsec.credmon.providers import Provider, load_providers

__all__ = [
    "PRESETS",
    "OAuthProvider",
    "Preset",
    "ProviderCache",
    "load_oauth_providers",
    "provider_title",
]

log = logging.getLogger("htsec.portal")


@dataclass(frozen=True)
class Preset:
    title: str
    authorization_url: str
    token_url: str
    user_url: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()


_BOX = Preset(
    "Box",
    "https://account.box.com/api/oauth2/authorize",
    "https://api.box.com/oauth2/token",
    "https://api.box.com/2.0/users/me",
)
_GOOGLE = Preset(
    "Google Drive",
    "https://accounts.google.com/o/oauth2/v2/auth",
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v3/userinfo",
    params=MappingProxyType({"access_type": "offline", "prompt": "consent"}),
)
_MICROSOFT = Preset(
    "OneDrive",
    "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    "https://login.microsoftonline.com/common/oauth2/v2.0/token",
    "https://graph.microsoft.com/v1.0/me",
    scopes=("offline_access",),
)
PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "box": _BOX,
        "gdrive": _GOOGLE,
        "google": _GOOGLE,
        "googledrive": _GOOGLE,
        "onedrive": _MICROSOFT,
        "microsoft": _MICROSOFT,
    }
)


@dataclass(frozen=True, repr=False)
class OAuthProvider:
    """Everything the portal needs to run one provider's authorization-code flow."""

    name: str
    title: str
    client_id: str
    client_secret: str | None
    authorization_url: str
    token_url: str
    redirect_uri: str
    user_url: str | None = None
    token_auth: str = "client_secret_basic"  # noqa: S105 - a method name
    params: Mapping[str, str] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    #: ``NAME_ISSUER`` (OpenID Connect), when set: the dashboard's sign-in checks ``iss``.
    issuer: str | None = None

    def __repr__(self) -> str:
        return (
            f"OAuthProvider({self.name!r}, client_id={self.client_id!r}, "
            f"authorization_url={self.authorization_url!r}, client_secret=[secure])"
        )


def provider_title(name: str) -> str:
    """How a provider is named on pages: its preset's title, else its knob name."""
    preset = PRESETS.get(name.lower())
    return preset.title if preset else name


def _one(p: Provider, base: str) -> OAuthProvider | None:
    preset = PRESETS.get(p.name)
    auth = p.authorization_url or (preset.authorization_url if preset else None)
    token = p.token_url or (preset.token_url if preset else None)
    if not p.client_id or not auth or not token:
        missing = [
            k
            for k, v in (
                ("CLIENT_ID", p.client_id),
                ("AUTHORIZATION_URL", auth),
                ("TOKEN_URL", token),
            )
            if not v
        ]
        log.warning(
            "portal: provider %s left out: %s not set",
            p.name,
            ", ".join(f"{p.name.upper()}_{k}" for k in missing),
        )
        return None
    suffix = param(f"{p.name.upper()}_RETURN_URL_SUFFIX")
    suffix = suffix.strip() if suffix and suffix.strip() else f"/return/{p.name}"
    return OAuthProvider(
        name=p.name,
        title=preset.title if preset else p.name,
        client_id=p.client_id,
        client_secret=p.client_secret,
        authorization_url=auth,
        token_url=token,
        redirect_uri=base.rstrip("/") + suffix,
        user_url=p.user_url or (preset.user_url if preset else None),
        token_auth=p.auth_method,
        params=preset.params if preset else {},
        scopes=preset.scopes if preset else (),
        issuer=p.issuer,
    )


def load_oauth_providers(base: str) -> dict[str, OAuthProvider]:
    """Every configured OAuth provider the portal can send users to (by lower-case name);
    ``base`` is the portal's URL. A provider lacking a client id or endpoints is left out,
    with a warning naming the knobs."""
    out: dict[str, OAuthProvider] = {}
    for name, p in load_providers().providers.items():
        if p.local:
            continue
        one = _one(p, base)
        if one is not None:
            out[name] = one
    return out


class ProviderCache:
    """:func:`load_oauth_providers`, read once (on first use: OpenID discovery may need the
    network) and kept; a :class:`~htsec.errors.ConfigError` is raised to each caller until the
    configuration is fixed and the portal restarted."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._lock = threading.Lock()
        self._providers: dict[str, OAuthProvider] | None = None

    def get(self, name: str) -> OAuthProvider | None:
        with self._lock:
            if self._providers is None:
                self._providers = load_oauth_providers(self.base)
            return self._providers.get(name.lower())
