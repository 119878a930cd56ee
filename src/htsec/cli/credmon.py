"""``htsec credmon``: the credential monitor (a drop-in for condor_credmon_oauth)."""

from __future__ import annotations

from pathlib import Path

import click

from htsec.cli.context import CONTEXT, App, pass_app


@click.command(context_settings=CONTEXT)
@click.option(
    "--cred-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="HTCondor credential directory (default SEC_CREDENTIAL_DIRECTORY_OAUTH).",
)
@click.option(
    "--once",
    is_flag=True,
    help="One full pass (import, refresh what is due, publish), then exit: 0 only if "
    "every credential is fresh or recorded as failed with a reason.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="Seconds between passes (SIGHUP or a new credential wakes it at once).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log here instead of standard error.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics on 127.0.0.1:PORT.",
)
@click.option(
    "--debug",
    "debug_here",
    is_flag=True,
    help="Log debugging detail (as condor_credmon_oauth's --debug; same as htsec --debug).",
)
@pass_app
def credmon(
    app: App,
    cred_dir: Path | None,
    once: bool,
    interval: float,
    log_file: Path | None,
    metrics_port: int | None,
    debug_here: bool,
) -> None:
    """Keep access tokens fresh and issue local tokens: a drop-in for condor_credmon_oauth.

    Refreshes on each token's real expiry, concurrently, with per-provider rate limits and
    back-off; several credmons on one PostgreSQL store never refresh the same credential.
    """
    from htsec.credmon.supervisor import supervise

    s = app.settings  # configuration errors are reported here, before any process starts
    directory = cred_dir or s.cred_dir
    code = supervise(
        cred_dir=directory,
        once=once,
        interval=interval,
        log_file=log_file,
        debug=debug_here or app.debug,
        metrics_port=metrics_port,
    )
    raise SystemExit(code)
