"""``htsec serve``: every service in one process, on the embedded default."""

from __future__ import annotations

import logging
import socket
import sys
from urllib.parse import urlsplit

from htsec.config import Settings, param
from htsec.errors import ConfigError
from htsec.tokens.authority import Authority
from htsec.tokens.keys import POOL

__all__ = ["run"]

log = logging.getLogger("htsec.serve")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _max_connections() -> int:
    from htsec._http import MAX_CONNECTIONS

    raw = (param("HTSEC_SERVE_MAX_CONNECTIONS") or "").strip()
    if not raw:
        return MAX_CONNECTIONS
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"HTSEC_SERVE_MAX_CONNECTIONS = {raw!r} is not a positive number")
    return int(raw)


def run(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    credmon: bool | None = None,
) -> None:
    """Serve the API; ``credmon`` None follows ``HTSEC_SERVE_CREDMON`` (default on)."""
    import uvicorn

    from htsec._http import bounded_protocol
    from htsec._log import uvicorn_log_config
    from htsec._tls import ensure_tls
    from htsec.server import create_app

    if port is None:
        port = urlsplit(settings.server_url).port or 9680
    if port and not _port_free(host, port):
        raise ConfigError(
            f"port {port} on {host} is in use (another 'htsec serve'?); pick one with --port "
            "and set HTSEC_SERVER_URL for clients"
        )
    authority = Authority(settings)
    notes = []
    if not authority.keyring.exists(POOL):
        k = authority.keyring.create(POOL)
        notes.append(f"created the POOL signing key in {k.path}")
    wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    tls = ensure_tls(settings.tls_dir, () if wildcard else (host,))
    authority.store  # noqa: B018 - open and migrate the store before announcing readiness
    if credmon is None:
        credmon = (param("HTSEC_SERVE_CREDMON") or "true").strip().lower() not in (
            "false",
            "no",
            "0",
        )
    max_connections = _max_connections()
    app = create_app(settings, authority, with_credmon=credmon)
    url = f"https://{host if ':' not in host else f'[{host}]'}:{port}"
    lines = [
        f"htsec serve: listening on {url} (trust domain {settings.trust_domain})",
        f"  configuration: {settings.config_source}",
        f"  database:      {settings.database_url}",
        f"  CA for clients: {tls.ca_cert}",
        *[f"  {n}" for n in notes],
        "Mint a first (administrator) token in another terminal:",
        f"  htsec token create --identity admin@{settings.uid_domain} --authz ADMINISTRATOR "
        "--token admin",
        "Then, e.g.: htsec token request list",
    ]
    if url != settings.server_url:
        lines.append(f"  (clients: set HTSEC_SERVER_URL={url})")
    print("\n".join(lines), file=sys.stderr, flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        log_level="info",
        log_config=uvicorn_log_config(),
        access_log=True,
        server_header=False,
        # Bounded heads, header counts and connections, refused as problem documents.
        http=bounded_protocol(max_connections),
        # Peers are who connects: uvicorn would otherwise believe X-Forwarded-For from
        # 127.0.0.1, and auto-approval rules match on the peer's address.
        proxy_headers=False,
    )
