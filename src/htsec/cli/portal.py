"""``htsec portal``: the OAuth portal alone (a drop-in for HTCondor's credmon web server)."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from htsec.cli.context import CONTEXT, App, pass_app

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port (default: the port of HTSEC_PORTAL_URL, else 9681).",
)
@click.option(
    "--behind-proxy",
    is_flag=True,
    help="Plain HTTP on a loopback address, for a reverse proxy that terminates TLS "
    "(Apache or nginx at CREDMON_WEB_PREFIX).",
)
@pass_app
def portal(app: App, host: str, port: int | None, behind_proxy: bool) -> None:
    """Run the OAuth portal alone: /key/<64 hex>, /login/<name>, /return/<provider>.

    Serves htsec's one-time links and condor_credd's pending logins (SEC_CREDENTIAL_DIRECTORY_OAUTH)
    under the path of HTSEC_PORTAL_URL or CREDMON_WEB_PREFIX; sessions and logins live in the
    store, so several portals on one database serve one address. See htsec-portal(1).
    """
    from htsec.creds.links import portal_url
    from htsec.errors import UsageError
    from htsec.portal.app import create_portal_app
    from htsec.web.protocol import run_server

    settings = app.settings
    if port is None:
        port = urlsplit(portal_url(settings)).port or 9681
    tls: dict[str, str] = {}
    if behind_proxy:
        if host not in _LOOPBACK:
            raise UsageError("--behind-proxy listens on a loopback address only (--host 127.0.0.1)")
    else:
        from htsec._tls import ensure_tls

        files = ensure_tls(settings.tls_dir, (host,) if host not in ("0.0.0.0", "::") else ())  # noqa: S104
        tls = {"certfile": str(files.cert), "keyfile": str(files.key)}
    web = create_portal_app(settings)
    scheme = "http" if behind_proxy else "https"
    click.echo(
        f"htsec portal: listening on {scheme}://{host}:{port}; links are "
        f"{portal_url(settings)}/key/<64 hex>",
        err=True,
    )
    run_server(
        web,
        host=host,
        port=port,
        max_connections=settings.serve_max_connections,
        certfile=tls.get("certfile"),
        keyfile=tls.get("keyfile"),
    )
