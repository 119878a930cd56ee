"""Talking to ``htsec serve`` over HTTPS, trusting htsec's own CA, with an ID token."""

from __future__ import annotations

from typing import Any

import httpx

from htsec.config import Settings
from htsec.errors import RemoteError, UsageError
from htsec.tokens.tokendir import TokenFileEntry, iter_token_files, read_token_file

__all__ = ["Client", "find_token"]


def find_token(settings: Settings) -> str | None:
    """The first token in the token directories issued by this trust domain (HTCondor's rule)."""
    for entry in iter_token_files(settings):
        if (
            isinstance(entry, TokenFileEntry)
            and entry.payload is not None
            and entry.payload.get("iss") == settings.trust_domain
        ):
            return entry.token
    return None


class Client:
    def __init__(
        self,
        settings: Settings,
        *,
        url: str | None = None,
        token_file: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.url = (url or settings.server_url).rstrip("/")
        self._token_file = token_file
        verify: Any = True
        if self.url.startswith("https://") and settings.ca_file.exists():
            verify = str(settings.ca_file)
        self.http = httpx.Client(base_url=self.url, verify=verify, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _auth(self) -> dict[str, str]:
        token = read_token_file(self._token_file) if self._token_file else find_token(self.settings)
        if token is None:
            raise UsageError(
                f"no token for trust domain {self.settings.trust_domain} in "
                f"{', '.join(str(d) for d in self.settings.token_dirs())}; create one with "
                "'htsec token create --identity ADMIN@DOMAIN --authz ADMINISTRATOR --token admin'"
            )
        return {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> dict[str, Any]:
        headers = kw.pop("headers", {})
        if auth:
            headers.update(self._auth())
        try:
            resp = self.http.request(method, path, headers=headers, **kw)
        except httpx.ConnectError as exc:
            raise RemoteError(
                f"cannot reach htsec at {self.url} ({exc}); is 'htsec serve' running?"
            ) from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"request to {self.url}{path} failed: {exc}") from None
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            body = {"detail": resp.text[:200]}
        if resp.status_code >= 400:
            raise RemoteError(f"{self.url} refused: {body.get('detail', resp.reason_phrase)}")
        return body
