"""``htsec token request``: ask a server for a token, and approve or deny requests."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

from htsec.cli.context import CONTEXT, App, pass_app, server_option, token_file_option
from htsec.cli.output import cell, emit_json, err, out, shown, table, when
from htsec.errors import HtsecError, UsageError

if TYPE_CHECKING:
    from htsec.client import Client


@click.group("request", context_settings=CONTEXT, invoke_without_command=True)
@click.option(
    "--identity",
    "-i",
    metavar="USER@DOMAIN",
    help="Identity to request (default condor@$(UID_DOMAIN)).",
)
@click.option("--authz", multiple=True, metavar="PERM", help="Authorization to request; repeat.")
@click.option("--lifetime", type=click.IntRange(min=0), metavar="SECONDS", help="Token lifetime.")
@click.option("--no-wait", is_flag=True, help="Print the request id and the secret and exit.")
@click.option(
    "--token",
    "token_file_out",
    metavar="NAME|PATH",
    help="Write the token to SEC_TOKEN_DIRECTORY/NAME (or PATH) instead of stdout.",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Give up waiting after this many seconds.",
)
@server_option
@pass_app
def token_request(
    app: App,
    identity: str | None,
    authz: tuple[str, ...],
    lifetime: int | None,
    no_wait: bool,
    token_file_out: str | None,
    timeout: int,
    server: str | None,
) -> None:
    """Ask an htsec server for a token; an administrator (or a rule) approves it.

    \b
    Administrators manage requests with the sub-commands:
      htsec token request list | approve ID | deny ID | auto-approve --netblock CIDR --lifetime S
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    s = app.settings
    identity = identity or f"condor@{s.uid_domain}"
    c = app.client(server, None)
    import socket

    body = c.call(
        "POST",
        "/v1/token-requests",
        auth=False,
        json={
            "identity": identity,
            "authz": list(authz),
            "lifetime": lifetime,
            "client_id": f"{os.environ.get('USER', 'unknown')}@{socket.gethostname()}",
        },
    )
    rid, secret = body["request"]["id"], body["secret"]
    if no_wait:
        click.echo(f"request {rid}")
        click.echo(f"collect with: htsec token request collect {rid} (secret on the next line)")
        click.echo(secret)
        return
    if body["request"]["state"] != "approved":
        err.print(f"Token request enqueued. Ask an administrator to please approve request {rid}.")
    _collect(app, c, rid, secret, timeout, token_file_out)


#: Seconds between two questions of a client waiting for its request to be decided.
POLL = 5.0


def _collect(
    app: App,
    c: Client,
    rid: str,
    secret: str,
    timeout: int,
    token_file_out: str | None,
    *,
    poll: float = POLL,
) -> None:
    """Ask every ``poll`` seconds (less near the deadline) until the request is decided."""
    deadline = time.monotonic() + timeout
    while True:
        body = c.call(
            "GET",
            f"/v1/token-requests/{rid}",
            auth=False,
            headers={"X-Htsec-Request-Secret": secret},
        )
        state = body["request"]["state"]
        if body.get("token"):
            tok = body["token"]
            if token_file_out:
                from htsec.tokens.tokendir import write_token

                path = write_token(app.settings, token_file_out, tok)
                err.print(f"request {rid} approved; token written to {path}")
            else:
                click.echo(tok)
            return
        if state in ("denied", "expired", "collected"):
            raise HtsecError(f"token request {rid} was {state}")
        if time.monotonic() > deadline:
            raise HtsecError(f"gave up waiting for request {rid} after {timeout} s")
        time.sleep(min(poll, max(0.2, deadline - time.monotonic())))


@token_request.command("collect", context_settings=CONTEXT)
@click.argument("rid")
@click.option("--token", "token_file_out", metavar="NAME|PATH", help="Where to write the token.")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, show_default=True)
@server_option
@pass_app
def request_collect(
    app: App, rid: str, token_file_out: str | None, timeout: int, server: str | None
) -> None:
    """Wait for request RID (made with --no-wait) and fetch its token; the secret is read
    from standard input."""
    secret = sys.stdin.readline().strip()
    if not secret:
        raise UsageError("give the request's secret on standard input")
    _collect(app, app.client(server, None), rid, secret, timeout, token_file_out)


@token_request.command("list", context_settings=CONTEXT)
@click.option("--all", "show_all", is_flag=True, help="Include decided and expired requests.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_option
@token_file_option
@pass_app
def request_list(
    app: App, show_all: bool, as_json: bool, server: str | None, token_file: str | None
) -> None:
    """List pending token requests (needs ADMINISTRATOR)."""
    body = app.client(server, token_file).call(
        "GET", "/v1/token-requests", params={"all": "true" if show_all else "false"}
    )
    reqs = body["requests"]
    if as_json:
        emit_json(body)
        return
    if not reqs:
        err.print("no pending token requests")
        return
    t = table("REQUEST", "CLIENT", "PEER", "IDENTITY", "AUTHZ", "LIFETIME", "STATE", "EXPIRES")
    for r in reqs:
        t.add_row(
            cell(r["id"]),
            cell(r["client_id"]),
            cell(r["peer"]),
            cell(r["identity"]),
            " ".join(r["authz"]) or "(all)",
            str(r["lifetime"]) if r["lifetime"] is not None else "none",
            r["state"],
            when(r["expires_at"]),
        )
    out.print(t)


@token_request.command("approve", context_settings=CONTEXT)
@click.argument("rid")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@server_option
@token_file_option
@pass_app
def request_approve(
    app: App, rid: str, yes: bool, server: str | None, token_file: str | None
) -> None:
    """Approve token request RID (needs ADMINISTRATOR)."""
    c = app.client(server, token_file)
    if not yes and sys.stdin.isatty():
        reqs = {r["id"]: r for r in c.call("GET", "/v1/token-requests")["requests"]}
        r = reqs.get(rid)
        if r is None:
            raise UsageError(f"no pending token request {rid}")
        click.echo(
            f"Request {shown(rid)}: identity {shown(r['identity'])}, "
            f"authz {shown(' '.join(r['authz'])) or 'all'}, lifetime {shown(r['lifetime'])}, "
            f"from {shown(r['peer'])} (client id, as the requester gave it: "
            f"{shown(r['client_id']) or 'none'})"
        )
        if not click.confirm("Approve?"):
            raise UsageError("not approved")
    body = c.call("POST", f"/v1/token-requests/{rid}/approve")
    click.echo(f"approved request {rid} for {body['request']['identity']}")


@token_request.command("deny", context_settings=CONTEXT)
@click.argument("rid")
@server_option
@token_file_option
@pass_app
def request_deny(app: App, rid: str, server: str | None, token_file: str | None) -> None:
    """Deny token request RID (needs ADMINISTRATOR)."""
    app.client(server, token_file).call("POST", f"/v1/token-requests/{rid}/deny")
    click.echo(f"denied request {rid}")


@token_request.command("auto-approve", context_settings=CONTEXT)
@click.option("--netblock", required=True, metavar="CIDR", help="Network requests must come from.")
@click.option(
    "--lifetime",
    required=True,
    type=click.IntRange(min=1),
    metavar="SECONDS",
    help="How long the rule lives (at most TOKEN_REQUEST_AUTO_APPROVE_MAX_LIFETIME).",
)
@server_option
@token_file_option
@pass_app
def request_auto_approve(
    app: App, netblock: str, lifetime: int, server: str | None, token_file: str | None
) -> None:
    """Approve, while the rule lives, requests from CIDR for condor@... identities limited to
    ADVERTISE_STARTD / ADVERTISE_SCHEDD / ADVERTISE_MASTER (needs ADMINISTRATOR)."""
    body = app.client(server, token_file).call(
        "POST", "/v1/auto-approve-rules", json={"netblock": netblock, "lifetime": lifetime}
    )
    rule = body["rule"]
    click.echo(
        f"auto-approval rule #{rule['id']} for {rule['netblock']} until {when(rule['expires_at'])}"
    )
