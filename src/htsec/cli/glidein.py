"""``htsec glidein``: per-site pilot tokens for glidein factories."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from htsec.cli.context import CONTEXT, App, pass_app
from htsec.cli.output import err
from htsec.errors import UsageError


@click.group(context_settings=CONTEXT)
def glidein() -> None:
    """Per-site pilot tokens for glidein factories (GlideinWMS style)."""


@glidein.command("token", context_settings=CONTEXT)
@click.option(
    "--site",
    required=True,
    help="GLIDEIN_Site name; signs with key HTSEC_GLIDEIN_KEY_NAME (site-{site}).",
)
@click.option(
    "--lifetime",
    type=click.IntRange(min=1),
    metavar="SECONDS",
    help="Token lifetime (default HTSEC_GLIDEIN_LIFETIME, 86400).",
)
@click.option(
    "--recipient",
    required=True,
    multiple=True,
    metavar="AGE1...|FILE",
    help="Factory public key (age X25519), or a file holding it; repeat for several.",
)
@click.option(
    "--identity",
    metavar="NAME@DOMAIN",
    help="Default: SITE@glidein.<this host>; never user@$(UID_DOMAIN), a user's identity.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the envelope here (default stdout).",
)
@pass_app
def glidein_token(
    app: App,
    site: str,
    lifetime: int | None,
    recipient: tuple[str, ...],
    identity: str | None,
    output: Path | None,
) -> None:
    """Mint SITE's pilot token and encrypt it to the factory (age, ASCII-armored).

    Rotating the site's key ('htsec key rotate site-SITE') revokes that site's tokens only.
    """
    from htsec._fs import write_atomic
    from htsec.tokens.glidein import mint_pilot_token, parse_recipient, wrap

    recips = []
    for r in recipient:
        p = Path(r)
        text = r
        if not r.startswith("age1") and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines()]
            text = next((ln for ln in lines if ln.startswith("age1")), "")
            if not text:
                raise UsageError(f"{p} holds no age public key (age1...)")
        recips.append(parse_recipient(text))
    tok, key_name, created = mint_pilot_token(
        app.authority, site, lifetime=lifetime, identity=identity
    )
    if created:
        err.print(f"created signing key {key_name} for site {site}")
    envelope = wrap(tok, recips)
    if output:
        write_atomic(output, envelope, 0o600)
        err.print(f"pilot token for site {site} (key {key_name}) written to {output}")
    else:
        click.echo(envelope.decode("ascii"), nl=False)


@glidein.command("keygen", context_settings=CONTEXT)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File for the factory's secret key (written 0600).",
)
def glidein_keygen(output: Path) -> None:
    """Make a factory key pair; prints the public key to give to frontends."""
    from htsec._fs import write_atomic
    from htsec.tokens.glidein import generate_identity

    if output.exists():
        raise UsageError(f"{output} exists; refusing to overwrite a factory key")
    secret, public = generate_identity()
    write_atomic(output, f"# public key: {public}\n{secret}\n".encode(), 0o600)
    click.echo(public)


@glidein.command("unwrap", context_settings=CONTEXT)
@click.option(
    "--identity-file",
    "-i",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The factory's secret key file (from 'htsec glidein keygen').",
)
@click.argument(
    "envelope", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True), default="-"
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token file here, 0600 (default stdout).",
)
def glidein_unwrap(identity_file: Path, envelope: Path, output: Path | None) -> None:
    """Decrypt a pilot-token envelope on the factory (ENVELOPE, or stdin)."""
    from htsec._fs import read_private, write_atomic
    from htsec.tokens.glidein import unwrap

    ident = read_private(identity_file, limit=65536).decode("utf-8", "replace")
    data = sys.stdin.buffer.read(1 << 20) if str(envelope) == "-" else envelope.read_bytes()
    tok = unwrap(data, ident)
    if output:
        write_atomic(output, (tok + "\n").encode(), 0o600)
        err.print(f"token written to {output}")
    else:
        click.echo(tok)
