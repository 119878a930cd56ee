"""HTCondor's OAuth web server, as far as the credential directory sees it.

``OAuthCredmonWebserver.py`` (``oauth_return``, htcondor/htcondor
``src/condor_credd/condor_credmon_oauth/credmon/CredentialMonitors/``) runs under Apache as user
``condor`` (umask 022). After a browser login it

1. makes the user's directory with ``os.makedirs`` if missing: mode 0755 from the umask, plus the
   setgid bit inherited from the ``2770`` root, so ``2755``;
2. pops ``refresh_token`` off the token response (requests-oauthlib has added ``expires_at``);
   ``use_refresh_token`` is whether there was one;
3. writes the rest (``.use``), ``{"refresh_token"}`` plus ``scopes`` and ``audience`` with blanks
   removed when the provider's ad has them (``.top``), and ``{"client_id", "client_secret",
   "token_url", "use_refresh_token"}`` (``.meta``), each with ``tempfile.mkstemp`` in the user
   directory and ``json.dump``;
4. renames them into place in the order ``.use``, ``.top``, ``.meta``, each after ``chmod 0400``
   (``credmon.utils.atomic_rename``).

:func:`login` does exactly that, with the tokens of a real login at the test provider;
:func:`web_server_writes` is the short form (``.top`` and ``.meta`` written in place).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.oidc import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, obtain_refresh_token
from tests.oidc import Provider as OidcProvider

SERVICE = "oidc"
SCOPES = "openid"
AUDIENCE = "https://storage.example.org"


def make_root(tmp_path: Path) -> Path:
    """``SEC_CREDENTIAL_DIRECTORY_OAUTH`` as HTCondor's packages make it: ``2770``."""
    root = tmp_path / "oauth_credentials"
    root.mkdir()
    os.chmod(root, 0o2770)
    return root


def provider_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, oidc: OidcProvider) -> None:
    """The pool's ``OIDC_*`` knobs, as a pool using HTCondor's web server has them."""
    secret = tmp_path / "oidc.secret"
    secret.write_text(CLIENT_SECRET)
    secret.chmod(0o600)
    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_SECRET_FILE", str(secret))
    monkeypatch.setenv("_CONDOR_OIDC_TOKEN_URL", oidc.token_url)


def write_files(
    root: Path,
    user: str,
    token: dict[str, Any],
    token_url: str,
    *,
    scopes: str = SCOPES,
    audience: str = AUDIENCE,
    service: str = SERVICE,
    use_refresh_token: bool | None = None,
) -> None:
    """Steps 1-4 above for one login's token response (``use_refresh_token`` overrides what
    the web server derives, as an administrator may edit ``.meta``)."""
    old_umask = os.umask(0o022)
    try:
        user_dir = os.path.join(root, user)
        if not os.path.isdir(user_dir):
            os.makedirs(user_dir)
        token = dict(token)
        token.setdefault("expires_at", time.time() + int(token["expires_in"]))
        refresh_token_string = token.pop("refresh_token", "")
        refresh_token: dict[str, Any] = {"refresh_token": refresh_token_string}
        if scopes:
            refresh_token["scopes"] = scopes.replace(" ", "")
        if audience:
            refresh_token["audience"] = audience.replace(" ", "")
        metadata = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_url": token_url,
            "use_refresh_token": (
                bool(refresh_token_string) if use_refresh_token is None else use_refresh_token
            ),
        }
        temporary = []
        for obj in (token, refresh_token, metadata):
            fd, path = tempfile.mkstemp(dir=user_dir)
            with os.fdopen(fd, "w") as f:
                json.dump(obj, f)
            temporary.append(path)
        for path, suffix in zip(temporary, (".use", ".top", ".meta"), strict=True):
            os.chmod(path, 0o400)
            os.rename(path, os.path.join(user_dir, service + suffix))
    finally:
        os.umask(old_umask)


def login(root: Path, oidc: OidcProvider, user: str) -> dict[str, Any]:
    """A real browser login of ``user`` at the provider, stored as the web server does; returns
    the token response (with its refresh token)."""
    token = obtain_refresh_token(oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, user, SCOPES)
    write_files(root, user, token, oidc.token_url)
    return token


def token_requests(oidc: OidcProvider) -> int:
    """Requests the provider's token endpoint has had (logins included)."""
    return int(oidc.stats()["requests"].get("/token", 0))


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def write(path: Path, data: str, mode: int = 0o400) -> None:
    """Write ``data`` to ``path`` with ``mode`` (created or truncated)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)


def web_server_writes(root: Path, oidc: OidcProvider, user: str) -> str:
    """What HTCondor's credmon web server writes after a browser login (FORMATS.md 3)."""
    tokens = obtain_refresh_token(oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, user, "openid")
    write(
        root / user / "oidc.top",
        json.dumps({"refresh_token": tokens["refresh_token"], "scopes": "openid", "audience": ""}),
    )
    write(
        root / user / "oidc.meta",
        json.dumps(
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "token_url": oidc.token_url,
                "use_refresh_token": True,
            }
        ),
    )
    return str(tokens["refresh_token"])


def top_rt(root: Path, user: str) -> str:
    """The refresh token in ``user``'s ``oidc.top``."""
    return str(json.loads((root / user / "oidc.top").read_text())["refresh_token"])
