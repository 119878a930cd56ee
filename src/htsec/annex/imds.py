"""A small IMDSv2 client: a session token first, every read with it, never through a proxy."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from htsec.errors import AnnexError

__all__ = ["Imds"]

_MAX = 64 * 1024


class Imds:
    """The instance metadata service at ``base`` (``http://169.254.169.254`` or
    ``http://[fd00:ec2::254]``); ``calls`` counts the requests sent."""

    def __init__(self, base: str, *, ttl: int = 300, timeout: float = 2.0) -> None:
        if not base.startswith("http://"):
            raise AnnexError(f"metadata endpoint {base!r} must be an http:// URL")
        self.base = base.rstrip("/")
        self.ttl = ttl
        self.timeout = timeout
        self.calls = 0
        self._token: str | None = None
        # An explicit empty proxy map: http_proxy in the environment must not see metadata.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _send(self, req: urllib.request.Request) -> tuple[int, bytes]:
        self.calls += 1
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return int(resp.status), resp.read(_MAX)
        except urllib.error.HTTPError as exc:
            return int(exc.code), b""
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AnnexError(f"metadata service {self.base} unreachable: {reason}") from None

    def token(self) -> str:
        """A new IMDSv2 session token (valid ``ttl`` seconds)."""
        req = urllib.request.Request(  # noqa: S310 (base is checked to be http://)
            f"{self.base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.ttl)},
        )
        status, body = self._send(req)
        if status != 200 or not body:
            raise AnnexError(f"metadata service {self.base} gave no session token (HTTP {status})")
        self._token = body.decode("ascii", "replace").strip()
        return self._token

    def get(self, path: str) -> str | None:
        """The text at ``/latest/<path>``; None when it does not exist (404)."""
        if self._token is None:
            self.token()
        assert self._token is not None
        req = urllib.request.Request(  # noqa: S310 (base is checked to be http://)
            f"{self.base}/latest/{path}", headers={"X-aws-ec2-metadata-token": self._token}
        )
        status, body = self._send(req)
        if status == 401:  # the session token expired: one new one
            self.token()
            req.add_header("X-aws-ec2-metadata-token", self._token or "")
            status, body = self._send(req)
        if status == 404:
            return None
        if status != 200:
            raise AnnexError(f"metadata service {self.base}: {path}: HTTP {status}")
        return body.decode("utf-8", "replace")

    def json(self, path: str) -> dict[str, Any]:
        text = self.get(path)
        try:
            value = json.loads(text or "")
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise AnnexError(f"metadata service {self.base}: {path} is not a JSON object")
        return value
