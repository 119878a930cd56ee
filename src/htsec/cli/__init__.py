"""The ``htsec`` command: one entry point, a sub-command per part.

Expected errors (:class:`htsec.errors.HtsecError`) print one line and exit 1 (rejected token or
failed action) or 2 (usage or configuration); anything else prints "unexpected error" and the
traceback goes to ``$(HTSEC_HOME)/htsec.log`` (or the terminal with ``--debug``).

Each command group is a module of this package (``htsec token`` is :mod:`htsec.cli.token`,
...); what they work on is an :class:`htsec.cli.context.App` in click's context, printing is
:mod:`htsec.cli.output`'s.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from htsec import __version__
from htsec.cli import context
from htsec.cli.annex import annex
from htsec.cli.config import config
from htsec.cli.cred import cred
from htsec.cli.credmon import credmon
from htsec.cli.glidein import glidein
from htsec.cli.issuer import issuer
from htsec.cli.jobs import history, q, rm
from htsec.cli.key import key
from htsec.cli.login import login
from htsec.cli.output import err
from htsec.cli.portal import portal
from htsec.cli.request import token_request
from htsec.cli.serve import credd, serve
from htsec.cli.shepherd import flock, shepherd
from htsec.cli.store import store
from htsec.cli.submit import submit
from htsec.cli.token import token
from htsec.errors import HtsecError

__all__ = ["htsec", "main"]

log = logging.getLogger("htsec")


@click.group("htsec", context_settings=context.CONTEXT)
@click.option("--debug", is_flag=True, help="Log debugging detail and show tracebacks.")
@click.version_option(__version__, prog_name="htsec")
@click.pass_context
def htsec(ctx: click.Context, debug: bool) -> None:
    """htsec: the security and credential plane of an HTCondor pool.

    \b
    First steps on one machine:
      htsec serve                       # start the server (creates keys and TLS on first run)
      htsec token create --identity alice@$(htsec config show --value UID_DOMAIN)
    Configuration is HTCondor's: set CONDOR_CONFIG to use a pool's; without it htsec uses a
    built-in default under HTSEC_HOME (~/.htsec). 'htsec config show' prints what is in effect.
    """
    ctx.ensure_object(context.App).debug = debug
    from htsec._log import RedactSecrets

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())


token.add_command(token_request)
for command in (
    config,
    key,
    token,
    glidein,
    cred,
    store,
    serve,
    credmon,
    issuer,
    credd,
    login,
    portal,
    annex,
    q,
    rm,
    history,
    submit,
    shepherd,
    flock,
):
    htsec.add_command(command)


# --------------------------------------------------------------------------------------------
def _log_path() -> Path:
    home = os.environ.get("HTSEC_HOME")
    return Path(home).expanduser() / "htsec.log" if home else Path.home() / ".htsec" / "htsec.log"


def _fail(exc: BaseException, *, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(exc)
    path = _log_path()
    try:
        from htsec._fs import append_private

        append_private(
            path,
            f"--- {dt.datetime.now(dt.UTC).isoformat()} htsec "
            f"{__version__}\n" + "".join(traceback.format_exception(exc)),
        )
        where = str(path)
    except OSError:
        where = "the terminal (rerun with --debug)"
    err.print(
        f"htsec: unexpected error ({exc.__class__.__name__}); details in {where}", markup=False
    )
    raise SystemExit(70)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``htsec`` console script."""
    app = context.App()
    try:
        htsec.main(
            args=list(argv) if argv is not None else None,
            prog_name="htsec",
            standalone_mode=False,
            obj=app,
        )
    except click.exceptions.Abort:
        err.print("aborted")
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except HtsecError as exc:
        err.print(f"htsec: error: {exc}", markup=False)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as exc:
        _fail(exc, debug=app.debug)
