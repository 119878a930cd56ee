"""``htsec serve``: every service in one process, on the embedded default; ``htsec credd``:
the API alone.

The app is composed by :mod:`htsec.server`; this module runs it under uvicorn with the bounded
HTTP protocol (:mod:`htsec.web.protocol`) and, for ``htsec serve``, runs the credmon inside
it (:func:`in_process_credmon`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from htsec.config import Settings
from htsec.errors import ConfigError, HtsecError
from htsec.tokens.authority import Authority
from htsec.tokens.keys import POOL

if TYPE_CHECKING:
    from fastapi import FastAPI

    from htsec.server import Lifespan

__all__ = ["in_process_credmon", "in_process_execute", "run"]

log = logging.getLogger("htsec.serve")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def in_process_credmon(settings: Settings) -> Lifespan:
    """The all-in-one server refreshes credentials too: its credmon runs as a task of the app's
    lifespan, supervised (:mod:`htsec.credmon.service`: restarted with back-off) and reported
    in ``/v1/health``; a new credential wakes it at once (``app.state.credmon_wake``)."""
    from htsec.credmon.daemon import Credmon
    from htsec.credmon.service import CredmonService
    from htsec.server import add_health_check

    @contextlib.asynccontextmanager
    async def credmon_lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            credmon = Credmon(settings, cred_dir=settings.cred_dir, creds=app.state.credstore)
        except HtsecError as exc:
            log.warning("credmon not started: %s", exc)
            failure = {"state": "not started", "error": exc.__class__.__name__}
            add_health_check(app, "credmon", lambda: (False, failure))
            yield
            return
        service = CredmonService(credmon)
        add_health_check(app, "credmon", lambda: (service.healthy, service.health()))
        # Routes run in worker threads; an asyncio.Event is set only from its own loop.
        loop = asyncio.get_running_loop()
        app.state.credmon_wake = lambda: loop.call_soon_threadsafe(credmon.engine.wake.set)
        app.state.credmon_listeners = credmon.engine.listeners  # token delivery to jobs
        app.state.metrics.extra.append(credmon.engine.metrics.registry)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            yield
        finally:
            stop.set()
            await task

    return credmon_lifespan


def in_process_execute(settings: Settings, then: Lifespan | None = None) -> Lifespan:
    """The all-in-one server runs jobs too (:mod:`htsec.execute`): its runner starts after
    ``then`` (the credmon) and stops before it; jobs it cut short run again next start."""
    from htsec.execute.creds import CredDelivery
    from htsec.execute.point import ExecutePoint

    @contextlib.asynccontextmanager
    async def execute_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if then is not None:
                await stack.enter_async_context(then(app))
            # Tokens go into sandboxes from the store, kept current on the credmon's events:
            # its listener when it runs here, inotify on the credential directory otherwise.
            delivery = CredDelivery(
                app.state.credstore,
                cred_dir=settings.cred_dir,
                wake_credmon=app.state.credmon_wake,
            )
            delivery.start()
            stack.callback(delivery.close)
            listeners = getattr(app.state, "credmon_listeners", None)
            if listeners is not None:
                listeners.append(delivery.notify)
            point = ExecutePoint(settings, app.state.authority.store, delivery=delivery)
            await asyncio.to_thread(point.start)
            app.state.execute = point
            try:
                yield
            finally:
                app.state.execute = None
                await asyncio.to_thread(point.stop)

    return execute_lifespan


def run(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    credmon: bool | None = None,
) -> None:
    """Serve the API; ``credmon`` None follows ``HTSEC_SERVE_CREDMON`` (default on); the
    execution point runs with ``htsec serve`` only (``credmon`` not False)."""
    from htsec._tls import ensure_tls
    from htsec.server import create_app
    from htsec.web.protocol import run_server

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
    execute = credmon is not False
    if credmon is None:
        credmon = settings.serve_credmon
    lifespan = in_process_credmon(settings) if credmon else None
    if execute:
        lifespan = in_process_execute(settings, lifespan)
    app = create_app(settings, authority, lifespan=lifespan)
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
    run_server(
        app,
        host=host,
        port=port,
        max_connections=settings.serve_max_connections,
        certfile=str(tls.cert),
        keyfile=str(tls.key),
    )
