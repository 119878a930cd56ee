"""``htsec issuer``: the local SciTokens/WLCG issuer."""

from __future__ import annotations

import json
from pathlib import Path

import click

from htsec.cli.context import CONTEXT, App, pass_app
from htsec.cli.output import err


@click.group(context_settings=CONTEXT)
def issuer() -> None:
    """The local SciTokens/WLCG issuer (LOCAL_CREDMON_* knobs)."""


@issuer.command("keygen", context_settings=CONTEXT)
@click.option(
    "--algorithm", type=click.Choice(["ES256", "RS256"]), default="ES256", show_default=True
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file (default LOCAL_CREDMON_PRIVATE_KEY).",
)
@click.option("--kid", help="Key id (default LOCAL_CREDMON_KEY_ID, 'local').")
@pass_app
def issuer_keygen(app: App, algorithm: str, output: Path | None, kid: str | None) -> None:
    """Write a new issuer private key (0600) and print its public JWK."""
    from htsec.credmon.issuer import generate_key, key_location

    app.settings  # noqa: B018 - the configuration is read (and checked) first
    configured_path, configured_kid = key_location()
    path = output or configured_path
    jwk = generate_key(path, algorithm, kid=kid or configured_kid)
    err.print(f"private key written to {path}")
    click.echo(json.dumps(jwk, indent=2))


@issuer.command("token", context_settings=CONTEXT)
@click.argument("username")
@click.option("--provider", default="scitokens", show_default=True)
@pass_app
def issuer_token(app: App, username: str, provider: str) -> None:
    """Sign a token for USERNAME now (for testing a relying party)."""
    from htsec.credmon.issuer import load_issuer

    app.settings  # noqa: B018 - the configuration is read (and checked) first
    tok, _ = load_issuer(provider).mint(username)
    click.echo(tok)
