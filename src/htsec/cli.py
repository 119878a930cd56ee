"""The ``htsec`` command: one entry point, a sub-command per part.

Expected errors (:class:`htsec.errors.HtsecError`) print one line and exit 1 (rejected token or
failed action) or 2 (usage or configuration); anything else prints "unexpected error" and the
traceback goes to ``$(HTSEC_HOME)/htsec.log`` (or the terminal with ``--debug``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from htsec import __version__
from htsec._time import utc_text
from htsec.config import KNOBS, Settings, load, param
from htsec.errors import HtsecError, TokenRejected, UsageError

__all__ = ["cli", "main"]

log = logging.getLogger("htsec")
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state: dict[str, Any] = {"debug": False, "settings": None}

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def settings() -> Settings:
    if _state["settings"] is None:
        _state["settings"] = load()
    s: Settings = _state["settings"]
    return s


def _authority() -> Any:
    from htsec.tokens.authority import Authority

    if _state.get("authority") is None:
        _state["authority"] = Authority(settings())
    return _state["authority"]


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def when(ts: int | None) -> str:
    if ts is None:
        return "never"
    try:
        return utc_text(ts)
    except ValueError:
        return f"{ts} (not a date)"


def shown(text: object) -> str:
    """Text from a server or a requester, for a terminal: control characters made visible
    (an escape sequence could rewrite the line above a confirmation prompt)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def cell(text: object) -> str:
    """:func:`shown`, and safe from rich's markup (``[/x]`` would break the table)."""
    return escape(shown(text))


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c, no_wrap=c not in ("FILE", "VALUE", "SCOPE"), overflow="fold")
    return table


# --------------------------------------------------------------------------------------------
@click.group(context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Log debugging detail and show tracebacks.")
@click.version_option(__version__, prog_name="htsec")
def cli(debug: bool) -> None:
    """htsec: the security and credential plane of an HTCondor pool.

    \b
    First steps on one machine:
      htsec serve                       # start the server (creates keys and TLS on first run)
      htsec token create --identity alice@$(htsec config show --value UID_DOMAIN)
    Configuration is HTCondor's: set CONDOR_CONFIG to use a pool's; without it htsec uses a
    built-in default under HTSEC_HOME (~/.htsec). 'htsec config show' prints what is in effect.
    """
    _state["debug"] = debug
    from htsec._log import RedactSecrets

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())


# --------------------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def config() -> None:
    """Show the configuration htsec uses."""


@config.command("show", context_settings=CONTEXT)
@click.argument("knobs", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option(
    "--value", "bare", is_flag=True, help="Print only the values, one a line (for scripts)."
)
def config_show(knobs: Sequence[str], as_json: bool, bare: bool) -> None:
    """Print the effective value of KNOBS (default: every knob htsec reads).

    Values come from HTCondor's configuration, after macro expansion and _CONDOR_<KNOB>
    environment overrides (htsec's own knobs also from HTSEC_<KNOB>). Unset knobs print as
    'undefined' (with --value, as an empty line).
    """
    s = settings()
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


# --------------------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def key() -> None:
    """Manage signing keys in SEC_PASSWORD_DIRECTORY (HTCondor's passwords.d format)."""


@key.command("create", context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "--secret-stdin",
    is_flag=True,
    help="Read the secret from standard input instead of generating 64 random bytes.",
)
def key_create(name: str, secret_stdin: bool) -> None:
    """Create signing key NAME (POOL is SEC_TOKEN_POOL_SIGNING_KEY_FILE).

    The file is written 0600, atomically, scrambled as HTCondor's condor_store_cred does, so
    HTCondor daemons can use it as is.
    """
    secret = None
    if secret_stdin:
        secret = sys.stdin.buffer.read(65536)
        if not secret:
            raise UsageError("no secret on standard input")
    k = _authority().keyring.create(name, secret)
    click.echo(f"created key {k.name} in {k.path} (fingerprint {k.fingerprint})")


@key.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def key_list(as_json: bool) -> None:
    """List signing keys with their files, modes and the number of live tokens each signed."""
    a = _authority()
    rows = []
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
    t = _table("KEY", "FILE", "MODE", "MODIFIED", "FINGERPRINT", "LIVE TOKENS")
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
def key_rotate(name: str, yes: bool) -> None:
    """Replace key NAME with a new random secret: every token it signed stops working.

    Prints how many issued, unexpired, unrevoked tokens the rotation kills.
    """
    a = _authority()
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


# --------------------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def token() -> None:
    """Mint, list, verify and revoke HTCondor ID tokens; request tokens from a server."""


@token.command("create", context_settings=CONTEXT)
@click.option(
    "--identity",
    "-i",
    required=True,
    metavar="USER@DOMAIN",
    help="The identity ('sub') the token authenticates as.",
)
@click.option(
    "--key",
    "key_name",
    default="POOL",
    show_default=True,
    help="Signing key name in SEC_PASSWORD_DIRECTORY.",
)
@click.option(
    "--lifetime",
    type=click.IntRange(min=0),
    metavar="SECONDS",
    help="Expire after this many seconds (default: no expiry, as condor_token_create).",
)
@click.option(
    "--authz",
    multiple=True,
    metavar="PERM",
    help="Limit the token to this authorization (READ, WRITE, ADMINISTRATOR, "
    "ADVERTISE_STARTD, ...); repeat for more.",
)
@click.option(
    "--token",
    "token_file",
    metavar="NAME|PATH",
    help="Write to SEC_TOKEN_DIRECTORY/NAME (or PATH) mode 0600 instead of stdout.",
)
def token_create(
    identity: str,
    key_name: str,
    lifetime: int | None,
    authz: tuple[str, ...],
    token_file: str | None,
) -> None:
    """Mint an ID token exactly as condor_token_create does, and record it."""
    a = _authority()
    tok = a.mint(identity=identity, key=key_name, lifetime=lifetime, authz=authz)
    if token_file:
        from htsec.tokens.tokendir import write_token

        path = write_token(settings(), token_file, tok)
        err.print(f"token for {identity} written to {path}")
    else:
        click.echo(tok)


@token.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_list(as_json: bool) -> None:
    """List the tokens in the token directories, as condor_token_list does.

    Files HTCondor would skip (excluded names, unsafe owner or mode) are reported on stderr.
    """
    from htsec.tokens.tokendir import TokenFileEntry, iter_token_files

    entries, skipped = [], []
    for e in iter_token_files(settings()):
        if isinstance(e, TokenFileEntry):
            entries.append(e)
        else:
            skipped.append({"file": str(e[0]), "reason": e[1]})
    if as_json:
        emit_json(
            {
                "tokens": [
                    {
                        "file": str(e.path),
                        "line": e.line,
                        "header": e.header,
                        "payload": e.payload,
                        "error": e.error,
                    }
                    for e in entries
                ],
                "skipped": skipped,
            }
        )
        return
    for e in entries:
        if e.error:
            click.echo(f"File: {e.path}:{e.line} is not a token: {e.error}")
        else:
            h = json.dumps(e.header, separators=(",", ":"))
            p = json.dumps(e.payload, separators=(",", ":"), sort_keys=True)
            click.echo(f"Header: {h} Payload: {p} File: {e.path}")
    for s in skipped:
        err.print(f"skipped {s['file']}: {s['reason']}")


@token.command("verify", context_settings=CONTEXT)
@click.argument("token_arg", metavar="TOKEN|FILE|-")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_verify(token_arg: str, as_json: bool) -> None:
    """Check a token as an HTCondor daemon with this configuration would (more strictly).

    Prints the identity, authorizations (those the scope lists, and every level they grant with
    what they imply, as HTCondor's permission hierarchy), expiry and key, or the reason the
    token is rejected (exit status 1). Recorded revocations and SEC_TOKEN_REVOCATION_EXPR both
    apply.
    """
    from htsec.authz import granted, in_order
    from htsec.tokens.tokendir import read_token_arg

    raw = read_token_arg(token_arg)
    try:
        v = _authority().verify(raw)
    except TokenRejected as exc:
        if as_json:
            emit_json({"valid": False, "reason": exc.reason, "error": str(exc)})
        else:
            err.print(f"REJECTED ({exc.reason}): {exc}")
        raise SystemExit(1) from None
    info = {
        "valid": True,
        "identity": v.subject,
        "authorizations": list(v.authorizations) if v.authorizations is not None else None,
        "grants": in_order(granted(v.authorizations)),
        "issuer": v.issuer,
        "key": v.kid,
        "jti": v.jti,
        "issued": v.iat,
        "expires": v.exp,
    }
    if as_json:
        emit_json(info)
        return
    click.echo(f"valid token for {v.subject}")
    authz = ", ".join(v.authorizations) if v.authorizations is not None else "all (no scope)"
    click.echo(f"  authorizations: {authz}")
    click.echo(f"  grants:  {', '.join(info['grants'])}")
    click.echo(f"  issued:  {when(v.iat)}")
    click.echo(f"  expires: {when(v.exp)}")
    click.echo(f"  key:     {v.kid}    issuer: {v.issuer}    jti: {v.jti}")


@token.command("issued", context_settings=CONTEXT)
@click.option("--identity", help="Only tokens of this identity.")
@click.option("--key", "key_name", help="Only tokens signed by this key.")
@click.option("--live", is_flag=True, help="Only tokens that have not expired.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_issued(identity: str | None, key_name: str | None, live: bool, as_json: bool) -> None:
    """List the tokens htsec has minted (from the registry; tokens themselves are never kept)."""
    a = _authority()
    now = int(time.time())
    recs = a.registry.issued(identity=identity, kid=key_name, live_at=now if live else None)
    revoked = a.registry.revocations()
    rows = []
    for r in recs:
        claims = {k: v for k, v in r.__dict__.items() if v is not None}
        why = revoked.check(claims)
        state = "revoked" if why else ("expired" if r.exp is not None and r.exp < now else "live")
        rows.append({**r.__dict__, "state": state})
    if as_json:
        emit_json({"issued": rows})
        return
    t = _table("JTI", "IDENTITY", "KEY", "SCOPE", "ISSUED", "EXPIRES", "STATE", "BY")
    for r in rows:
        t.add_row(
            r["jti"],
            r["sub"],
            r["kid"],
            (r["scope"] or "").replace("condor:/", ""),
            when(r["iat"]),
            when(r["exp"]),
            r["state"],
            f"{r['minted_by']} ({r['minted_via']})",
        )
    out.print(t)


@token.command("revoke", context_settings=CONTEXT)
@click.option("--jti", help="Revoke the token with this id.")
@click.option("--identity", help="Revoke every token of this identity issued until now.")
@click.option(
    "--expr",
    "expr",
    metavar="CLASSAD-EXPR",
    help="Revoke tokens whose claims match, e.g. 'sub =?= \"a@b\" && iat <= 1700000000'.",
)
@click.option("--reason", help="Why (kept with the revocation).")
def token_revoke(
    jti: str | None, identity: str | None, expr: str | None, reason: str | None
) -> None:
    """Record a revocation; 'htsec token verify' and every htsec service apply it at once.

    For HTCondor daemons, 'htsec token revocations --condor-expr' prints all revocations as one
    SEC_TOKEN_REVOCATION_EXPR.
    """
    given = [(k, v) for k, v in (("jti", jti), ("identity", identity), ("expr", expr)) if v]
    if len(given) != 1:
        raise UsageError("give exactly one of --jti, --identity or --expr")
    from htsec.tokens.authority import caller_name

    kind, value = given[0]
    n = _authority().registry.revoke(kind=kind, value=value, by=caller_name(), reason=reason)
    click.echo(f"revoked {kind} {value}: {n} recorded live token(s) affected")


@token.command("revocations", context_settings=CONTEXT)
@click.option(
    "--condor-expr",
    is_flag=True,
    help="Print one ClassAd expression for HTCondor's SEC_TOKEN_REVOCATION_EXPR.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_revocations(condor_expr: bool, as_json: bool) -> None:
    """List recorded revocations."""
    a = _authority()
    if condor_expr:
        click.echo(a.registry.revocations().condor_expr())
        return
    rules = a.registry.rules()
    rows = [
        {
            "id": r.id,
            "kind": r.kind,
            "value": r.value,
            "created_at": r.created_at,
            "created_by": r.created_by,
            "reason": r.reason,
        }
        for r in rules
    ]
    if as_json:
        emit_json({"revocations": rows})
        return
    t = _table("ID", "KIND", "VALUE", "WHEN", "BY", "REASON")
    for r in rows:
        t.add_row(
            str(r["id"]),
            r["kind"],
            r["value"],
            when(r["created_at"]),
            r["created_by"],
            r["reason"] or "",
        )
    out.print(t)


# --------------------------------------------------------------------------------------------
def _client(server: str | None, token_file: str | None) -> Any:
    from htsec.client import Client

    return Client(settings(), url=server, token_file=token_file)


_server_opt = click.option(
    "--server",
    metavar="URL",
    help="htsec server (default HTSEC_SERVER_URL, https://127.0.0.1:9680).",
)
_token_opt = click.option(
    "--token-file",
    metavar="FILE",
    help="Authenticate with this token instead of the token directory.",
)


@token.group("request", context_settings=CONTEXT, invoke_without_command=True)
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
@_server_opt
@click.pass_context
def token_request(
    ctx: click.Context,
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
    if ctx.invoked_subcommand is not None:
        return
    s = settings()
    identity = identity or f"condor@{s.uid_domain}"
    c = _client(server, None)
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
    _collect(c, rid, secret, timeout, token_file_out)


def _collect(c: Any, rid: str, secret: str, timeout: int, token_file_out: str | None) -> None:
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

                path = write_token(settings(), token_file_out, tok)
                err.print(f"request {rid} approved; token written to {path}")
            else:
                click.echo(tok)
            return
        if state in ("denied", "expired", "collected"):
            raise HtsecError(f"token request {rid} was {state}")
        if time.monotonic() > deadline:
            raise HtsecError(f"gave up waiting for request {rid} after {timeout} s")
        time.sleep(
            min(5.0, max(0.2, deadline - time.monotonic()))
            if not os.environ.get("HTSEC_TEST_POLL_FAST")
            else 0.2
        )


@token_request.command("collect", context_settings=CONTEXT)
@click.argument("rid")
@click.option("--token", "token_file_out", metavar="NAME|PATH", help="Where to write the token.")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, show_default=True)
@_server_opt
def request_collect(rid: str, token_file_out: str | None, timeout: int, server: str | None) -> None:
    """Wait for request RID (made with --no-wait) and fetch its token; the secret is read
    from standard input."""
    secret = sys.stdin.readline().strip()
    if not secret:
        raise UsageError("give the request's secret on standard input")
    _collect(_client(server, None), rid, secret, timeout, token_file_out)


@token_request.command("list", context_settings=CONTEXT)
@click.option("--all", "show_all", is_flag=True, help="Include decided and expired requests.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_server_opt
@_token_opt
def request_list(show_all: bool, as_json: bool, server: str | None, token_file: str | None) -> None:
    """List pending token requests (needs ADMINISTRATOR)."""
    body = _client(server, token_file).call(
        "GET", "/v1/token-requests", params={"all": "true" if show_all else "false"}
    )
    reqs = body["requests"]
    if as_json:
        emit_json(body)
        return
    if not reqs:
        err.print("no pending token requests")
        return
    t = _table("REQUEST", "CLIENT", "PEER", "IDENTITY", "AUTHZ", "LIFETIME", "STATE", "EXPIRES")
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
@_server_opt
@_token_opt
def request_approve(rid: str, yes: bool, server: str | None, token_file: str | None) -> None:
    """Approve token request RID (needs ADMINISTRATOR)."""
    c = _client(server, token_file)
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
@_server_opt
@_token_opt
def request_deny(rid: str, server: str | None, token_file: str | None) -> None:
    """Deny token request RID (needs ADMINISTRATOR)."""
    _client(server, token_file).call("POST", f"/v1/token-requests/{rid}/deny")
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
@_server_opt
@_token_opt
def request_auto_approve(
    netblock: str, lifetime: int, server: str | None, token_file: str | None
) -> None:
    """Approve, while the rule lives, requests from CIDR for condor@... identities limited to
    ADVERTISE_STARTD / ADVERTISE_SCHEDD / ADVERTISE_MASTER (needs ADMINISTRATOR)."""
    body = _client(server, token_file).call(
        "POST", "/v1/auto-approve-rules", json={"netblock": netblock, "lifetime": lifetime}
    )
    rule = body["rule"]
    click.echo(
        f"auto-approval rule #{rule['id']} for {rule['netblock']} until {when(rule['expires_at'])}"
    )


# --------------------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
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
def glidein_token(
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
        _authority(), site, lifetime=lifetime, identity=identity
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


# --------------------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
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
@_server_opt
@_token_opt
def cred_add(
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
    body = _client(server, token_file).call(
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
    t = _table("USER", "CREDENTIAL", "PROVIDER", "SCOPES", "ACCESS EXPIRES", "STATE", "UPDATED")
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
@_server_opt
@_token_opt
def cred_list(
    user: str | None, all_users: bool, as_json: bool, server: str | None, token_file: str | None
) -> None:
    """List credentials: service, handle, scopes, expiry, state (never token bytes)."""
    params: dict[str, str] = (
        {"all_users": "true"} if all_users else ({"user": user} if user else {})
    )
    body = _client(server, token_file).call("GET", "/v1/creds", params=params)
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
@_server_opt
@_token_opt
def cred_delete(
    service: str, handle: str | None, user: str | None, server: str | None, token_file: str | None
) -> None:
    """Delete a credential."""
    params = {k: v for k, v in (("handle", handle), ("user", user)) if v}
    _client(server, token_file).call("DELETE", f"/v1/creds/{service}", params=params)
    click.echo(f"deleted {service}{'_' + handle if handle else ''}")


@cred.command("status", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_server_opt
@_token_opt
def cred_status(as_json: bool, server: str | None, token_file: str | None) -> None:
    """Per-service health: how many credentials are active, need re-authorisation, or failed."""
    body = _client(server, token_file).call("GET", "/v1/creds-status")
    if as_json:
        emit_json(body)
        return
    if not body["services"]:
        err.print("no credentials stored")
        return
    t = _table("SERVICE", "STATE", "COUNT")
    for service, states in sorted(body["services"].items()):
        for state, n in sorted(states.items()):
            t.add_row(service, state, str(n))
    out.print(t)


@cred.command("import", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def cred_import(directory: Path, as_json: bool) -> None:
    """Import an HTCondor credential directory (SEC_CREDENTIAL_DIRECTORY_OAUTH) into the store.

    Reads each <user>/<service>[_<handle>].top (+ .meta, .use); secrets go into the store,
    sealed. Files that cannot be read are reported and skipped; the rest are imported.
    """
    from htsec.creds.importer import import_directory

    report = import_directory(_credstore(), directory, actor=_caller_name())
    if as_json:
        emit_json(report)
        return
    click.echo(f"imported {len(report['imported'])} credential(s) from {directory}")
    for p in report["problems"]:
        err.print(f"skipped {p['path']}: {p['problem']}", markup=False)


def _caller_name() -> str:
    from htsec.tokens.authority import caller_name

    return caller_name()


def _credstore() -> Any:
    from htsec.creds.crypto import Sealer, generate_key_file
    from htsec.creds.store import CredStore

    s = settings()
    generate_key_file(s.store_key_file)
    return CredStore(_authority().store, Sealer(s.store_key_file))


# --------------------------------------------------------------------------------------------
@cli.group(context_settings=CONTEXT)
def store() -> None:
    """Administer htsec's database and its encryption keys."""


@store.command("init", context_settings=CONTEXT)
def store_init() -> None:
    """Create the database (migrated to the newest schema) and the data key file."""
    from htsec.creds.crypto import generate_key_file

    s = settings()
    created = generate_key_file(s.store_key_file)
    _authority().store  # noqa: B018 - opens and migrates
    click.echo(
        f"store ready: {s.database_url}; data keys in {s.store_key_file}"
        + (" (created)" if created else "")
    )


@store.command("rekey", context_settings=CONTEXT)
def store_rekey() -> None:
    """Re-seal every secret under a new data key, without downtime.

    A new key is put first in HTSEC_STORE_KEY_FILE (old keys stay readable), every row is
    re-sealed, then the old keys are dropped. Other htsec processes pick up the new file by
    themselves.
    """
    cs = _credstore()
    old = cs.sealer.current_kid
    new = cs.sealer.begin_rekey()
    n = cs.reseal_all()
    dropped = cs.sealer.finish_rekey()
    cs.audit(
        actor=_caller_name(), action="rekey", outcome="ok", detail=f"{old} -> {new}, {n} row(s)"
    )
    click.echo(f"re-sealed {n} credential(s) under data key {new}; dropped {dropped} old key(s)")


# --------------------------------------------------------------------------------------------
@cli.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default from HTSEC_SERVER_URL).")
def serve(host: str, port: int | None) -> None:
    """Run every htsec service in one process on the embedded default (HTTPS).

    On first run it creates the POOL signing key, a private CA and a server certificate under
    HTSEC_HOME, and prints how to mint a first token.
    """
    from htsec.serve import run

    run(settings(), host=host, port=port)


@cli.command(context_settings=CONTEXT)
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
def credmon(
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

    s = settings()  # configuration errors are reported here, before any process starts
    directory = cred_dir or s.cred_dir
    code = supervise(
        cred_dir=directory,
        once=once,
        interval=interval,
        log_file=log_file,
        debug=debug_here or bool(_state["debug"]),
        metrics_port=metrics_port,
    )
    raise SystemExit(code)


@cli.group(context_settings=CONTEXT)
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
def issuer_keygen(algorithm: str, output: Path | None, kid: str | None) -> None:
    """Write a new issuer private key (0600) and print its public JWK."""
    from htsec.credmon.issuer import generate_key, key_location

    settings()
    configured_path, configured_kid = key_location()
    path = output or configured_path
    jwk = generate_key(path, algorithm, kid=kid or configured_kid)
    err.print(f"private key written to {path}")
    click.echo(json.dumps(jwk, indent=2))


@issuer.command("token", context_settings=CONTEXT)
@click.argument("username")
@click.option("--provider", default="scitokens", show_default=True)
def issuer_token(username: str, provider: str) -> None:
    """Sign a token for USERNAME now (for testing a relying party)."""
    from htsec.credmon.issuer import load_issuer

    settings()
    tok, _ = load_issuer(provider).mint(username)
    click.echo(tok)


@cli.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default from HTSEC_SERVER_URL).")
def credd(host: str, port: int | None) -> None:
    """Run the credd API alone (token requests and credentials), for real deployments.

    The API of 'htsec serve' without the in-process credmon: run 'htsec credmon' beside it
    (it is poked with SIGHUP through SEC_CREDENTIAL_DIRECTORY_OAUTH/pid after each store).
    """
    from htsec.serve import run

    run(settings(), host=host, port=port, credmon=False)


# --------------------------------------------------------------------------------------------
def _log_path() -> Path:
    home = os.environ.get("HTSEC_HOME")
    return Path(home).expanduser() / "htsec.log" if home else Path.home() / ".htsec" / "htsec.log"


def _fail(exc: BaseException) -> NoReturn:
    if _state["debug"]:
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
    _state.update(debug=False, settings=None, authority=None)
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="htsec", standalone_mode=False
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
        _fail(exc)
