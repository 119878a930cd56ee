"""``htsec cred``: OAuth credentials in the credd (through the server; ``import`` locally)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from htsec.cli.context import CONTEXT, App, pass_app, server_option, token_file_option
from htsec.cli.output import emit_json, err, out, table, when
from htsec.errors import UsageError


@click.group(context_settings=CONTEXT)
def cred() -> None:
    """Store, list and delete your OAuth credentials in the credd (like condor_store_cred)."""


_handle_opt = click.option("--handle", metavar="HANDLE", help="Credential handle (service_handle).")


@cred.command("add", context_settings=CONTEXT)
@click.option("--service", required=True, help="OAuth service (provider) name, e.g. scitokens.")
@_handle_opt
@click.option(
    "--refresh-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the refresh token (read once; keep it 0600).",
)
@click.option("--from-stdin", is_flag=True, help="Read the refresh token from standard input.")
@click.option("--scopes", default="", help="Scopes, comma or space separated.")
@click.option("--audience", default="", help="Audience / resource.")
@server_option
@token_file_option
@pass_app
def cred_add(
    app: App,
    service: str,
    handle: str | None,
    refresh_token_file: Path | None,
    from_stdin: bool,
    scopes: str,
    audience: str,
    server: str | None,
    token_file: str | None,
) -> None:
    """Store a refresh token for SERVICE (never on the command line: file or stdin)."""
    if bool(refresh_token_file) == bool(from_stdin):
        raise UsageError(
            "give the refresh token with exactly one of --refresh-token-file or --from-stdin"
        )
    if refresh_token_file:
        from htsec._fs import read_private

        secret = read_private(refresh_token_file, limit=16384).decode("utf-8", "replace").strip()
    else:
        secret = sys.stdin.read(16385).strip()
    if not secret:
        raise UsageError("the refresh token is empty")
    params = {"handle": handle} if handle else {}
    body = app.client(server, token_file).call(
        "PUT",
        f"/v1/creds/{service}",
        params=params,
        json={
            "refresh_token": secret,
            "scopes": scopes.replace(",", " ").split(),
            "audience": audience,
        },
    )
    click.echo(f"stored {body['name']} for {body['user']} (version {body['version']})")


def _cred_rows(rows: list[dict[str, Any]]) -> None:
    t = table("USER", "CREDENTIAL", "PROVIDER", "SCOPES", "ACCESS EXPIRES", "STATE", "UPDATED")
    for r in rows:
        state = r["state"] + (f" ({r['last_error']})" if r.get("last_error") else "")
        t.add_row(
            r["user"],
            r["name"],
            r["provider"],
            ",".join(r["scopes"]),
            when(r["access_expires_at"]),
            state,
            when(r["updated_at"]),
        )
    out.print(t)


@cred.command("list", context_settings=CONTEXT)
@click.option("--user", help="Another user's credentials (needs ADMINISTRATOR).")
@click.option("--all-users", is_flag=True, help="Everyone's credentials (needs ADMINISTRATOR).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_option
@token_file_option
@pass_app
def cred_list(
    app: App,
    user: str | None,
    all_users: bool,
    as_json: bool,
    server: str | None,
    token_file: str | None,
) -> None:
    """List credentials: service, handle, scopes, expiry, state (never token bytes)."""
    params: dict[str, str] = (
        {"all_users": "true"} if all_users else ({"user": user} if user else {})
    )
    body = app.client(server, token_file).call("GET", "/v1/creds", params=params)
    if as_json:
        emit_json(body)
    elif not body["credentials"]:
        err.print("no credentials stored")
    else:
        _cred_rows(body["credentials"])


@cred.command("delete", context_settings=CONTEXT)
@click.option("--service", required=True)
@_handle_opt
@click.option("--user", help="Another user's credential (needs ADMINISTRATOR).")
@server_option
@token_file_option
@pass_app
def cred_delete(
    app: App,
    service: str,
    handle: str | None,
    user: str | None,
    server: str | None,
    token_file: str | None,
) -> None:
    """Delete a credential."""
    params = {k: v for k, v in (("handle", handle), ("user", user)) if v}
    app.client(server, token_file).call("DELETE", f"/v1/creds/{service}", params=params)
    click.echo(f"deleted {service}{'_' + handle if handle else ''}")


@cred.command("status", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_option
@token_file_option
@pass_app
def cred_status(app: App, as_json: bool, server: str | None, token_file: str | None) -> None:
    """Per-service health: how many credentials are active, need re-authorisation, or failed."""
    body = app.client(server, token_file).call("GET", "/v1/creds-status")
    if as_json:
        emit_json(body)
        return
    if not body["services"]:
        err.print("no credentials stored")
        return
    t = table("SERVICE", "STATE", "COUNT")
    for service, states in sorted(body["services"].items()):
        for state, n in sorted(states.items()):
            t.add_row(service, state, str(n))
    out.print(t)


@cred.command("import", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@pass_app
def cred_import(app: App, directory: Path, as_json: bool) -> None:
    """Import an HTCondor credential directory (SEC_CREDENTIAL_DIRECTORY_OAUTH) into the store.

    Reads each <user>/<service>[_<handle>].top (+ .meta, .use); secrets go into the store,
    sealed. Files that cannot be read are reported and skipped; the rest are imported.
    """
    from htsec.creds.importer import import_directory

    report = import_directory(app.credstore, directory, actor=app.caller_name())
    if as_json:
        emit_json(report)
        return
    click.echo(f"imported {len(report['imported'])} credential(s) from {directory}")
    for p in report["problems"]:
        err.print(f"skipped {p['path']}: {p['problem']}", markup=False)
