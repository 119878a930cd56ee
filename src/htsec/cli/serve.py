"""``htsec serve`` (every service in one process) and ``htsec credd`` (the API alone)."""

from __future__ import annotations

import click

from htsec.cli.context import CONTEXT, App, pass_app


@click.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default from HTSEC_SERVER_URL).")
@pass_app
def serve(app: App, host: str, port: int | None) -> None:
    """Run every htsec service in one process on the embedded default (HTTPS).

    On first run it creates the POOL signing key, a private CA and a server certificate under
    HTSEC_HOME, and prints how to mint a first token.
    """
    from htsec.serve import run

    run(app.settings, host=host, port=port)


@click.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default from HTSEC_SERVER_URL).")
@pass_app
def credd(app: App, host: str, port: int | None) -> None:
    """Run the credd API alone (token requests and credentials), for real deployments.

    The API of 'htsec serve' without the in-process credmon: run 'htsec credmon' beside it
    (it is poked with SIGHUP through SEC_CREDENTIAL_DIRECTORY_OAUTH/pid after each store).
    """
    from htsec.serve import run

    run(app.settings, host=host, port=port, credmon=False)
