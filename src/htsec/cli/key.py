"""``htsec key``: signing keys in SEC_PASSWORD_DIRECTORY (HTCondor's passwords.d format)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from htsec.cli.context import CONTEXT, App, pass_app
from htsec.cli.output import emit_json, err, out, table, when
from htsec.errors import UsageError


@click.group(context_settings=CONTEXT)
def key() -> None:
    """Manage signing keys in SEC_PASSWORD_DIRECTORY (HTCondor's passwords.d format)."""


@key.command("create", context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "--secret-stdin",
    is_flag=True,
    help="Read the secret from standard input instead of generating 64 random bytes.",
)
@pass_app
def key_create(app: App, name: str, secret_stdin: bool) -> None:
    """Create signing key NAME (POOL is SEC_TOKEN_POOL_SIGNING_KEY_FILE).

    The file is written 0600, atomically, scrambled as HTCondor's condor_store_cred does, so
    HTCondor daemons can use it as is.
    """
    secret = None
    if secret_stdin:
        secret = sys.stdin.buffer.read(65536)
        if not secret:
            raise UsageError("no secret on standard input")
    k = app.authority.keyring.create(name, secret)
    click.echo(f"created key {k.name} in {k.path} (fingerprint {k.fingerprint})")


@key.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def key_list(app: App, as_json: bool) -> None:
    """List signing keys with their files, modes and the number of live tokens each signed."""
    a = app.authority
    rows: list[dict[str, Any]] = []
    now = int(time.time())
    for name in a.keyring.names():
        info = a.keyring.info(name)
        rows.append(
            {
                "name": name,
                "path": str(info.path),
                "mode": f"{info.mode:04o}",
                "uid": info.uid,
                "bytes": info.secret_bytes,
                "modified": info.modified,
                "fingerprint": info.fingerprint,
                "live_tokens": a.registry.count_live(name, now),
                "problem": info.problem,
            }
        )
    if as_json:
        emit_json({"keys": rows})
        return
    if not rows:
        err.print(f"no keys in {a.keyring.password_dir}; create one with 'htsec key create POOL'")
        return
    t = table("KEY", "FILE", "MODE", "MODIFIED", "FINGERPRINT", "LIVE TOKENS")
    for r in rows:
        t.add_row(
            r["name"],
            r["path"],
            r["mode"],
            when(r["modified"]),
            r["fingerprint"] or f"[red]{r['problem']}[/]",
            str(r["live_tokens"]),
        )
    out.print(t)


@key.command("rotate", context_settings=CONTEXT)
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def key_rotate(app: App, name: str, yes: bool) -> None:
    """Replace key NAME with a new random secret: every token it signed stops working.

    Prints how many issued, unexpired, unrevoked tokens the rotation kills.
    """
    a = app.authority
    a.keyring.get(name)  # exists and is safe
    doomed = a.registry.count_live(name)
    if (
        not yes
        and sys.stdin.isatty()
        and not click.confirm(f"rotating {name} kills {doomed} live token(s); continue?")
    ):
        raise UsageError("not rotated")
    k = a.keyring.create(name, replace=True)
    click.echo(
        f"rotated key {name} (new fingerprint {k.fingerprint}); "
        f"{doomed} issued token(s) signed by it no longer verify"
    )
