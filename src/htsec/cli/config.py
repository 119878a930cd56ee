"""``htsec config``: the configuration htsec uses."""

from __future__ import annotations

from collections.abc import Sequence

import click

from htsec.cli.context import CONTEXT, App, pass_app
from htsec.cli.output import emit_json, err
from htsec.config import KNOBS, param


@click.group(context_settings=CONTEXT)
def config() -> None:
    """Show the configuration htsec uses."""


@config.command("show", context_settings=CONTEXT)
@click.argument("knobs", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option(
    "--value", "bare", is_flag=True, help="Print only the values, one a line (for scripts)."
)
@pass_app
def config_show(app: App, knobs: Sequence[str], as_json: bool, bare: bool) -> None:
    """Print the effective value of KNOBS (default: every knob htsec reads).

    Values come from HTCondor's configuration, after macro expansion and _CONDOR_<KNOB>
    environment overrides (htsec's own knobs also from HTSEC_<KNOB>). Unset knobs print as
    'undefined' (with --value, as an empty line).
    """
    s = app.settings
    names = [k.upper() for k in knobs] or list(KNOBS)
    derived = {
        "HTSEC_HOME": str(s.home),
        "HTSEC_DATABASE_URL": s.database_url,
        "HTSEC_SERVER_URL": s.server_url,
        "HTSEC_CA_FILE": str(s.ca_file),
        "HTSEC_GLIDEIN_KEY_NAME": s.glidein_key_name,
        "HTSEC_GLIDEIN_LIFETIME": str(s.glidein_lifetime),
        "SEC_TOKEN_DIRECTORY": str(s.token_dir),
        "UID_DOMAIN": s.uid_domain,
    }
    values = {k: (param(k) if param(k) is not None else derived.get(k)) for k in names}
    if as_json:
        emit_json({"config_source": s.config_source, "values": values})
        return
    if bare:
        for k in names:
            click.echo(values[k] or "")
        return
    err.print(f"# configuration: {s.config_source}" + (" (htsec built-in)" if s.builtin else ""))
    for k in names:
        v = values[k]
        click.echo(f"{k} = {v if v is not None else 'undefined'}")
