"""``htsec token``: mint, list, verify and revoke ID tokens (``token request`` is in
:mod:`htsec.cli.request`)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from htsec.cli.context import CONTEXT, App, pass_app
from htsec.cli.output import emit_json, err, out, table, when
from htsec.errors import TokenRejected, UsageError


@click.group(context_settings=CONTEXT)
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
@pass_app
def token_create(
    app: App,
    identity: str,
    key_name: str,
    lifetime: int | None,
    authz: tuple[str, ...],
    token_file: str | None,
) -> None:
    """Mint an ID token exactly as condor_token_create does, and record it."""
    a = app.authority
    tok = a.mint(identity=identity, key=key_name, lifetime=lifetime, authz=authz)
    if token_file:
        from htsec.tokens.tokendir import write_token

        path = write_token(app.settings, token_file, tok)
        err.print(f"token for {identity} written to {path}")
    else:
        click.echo(tok)


@token.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def token_list(app: App, as_json: bool) -> None:
    """List the tokens in the token directories, as condor_token_list does.

    Files HTCondor would skip (excluded names, unsafe owner or mode) are reported on stderr.
    """
    from htsec.tokens.tokendir import TokenFileEntry, iter_token_files

    entries, skipped = [], []
    for e in iter_token_files(app.settings):
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
@pass_app
def token_verify(app: App, token_arg: str, as_json: bool) -> None:
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
        v = app.authority.verify(raw)
    except TokenRejected as exc:
        if as_json:
            emit_json({"valid": False, "reason": exc.reason, "error": str(exc)})
        else:
            err.print(f"REJECTED ({exc.reason}): {exc}")
        raise SystemExit(1) from None
    info: dict[str, Any] = {
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
@pass_app
def token_issued(
    app: App, identity: str | None, key_name: str | None, live: bool, as_json: bool
) -> None:
    """List the tokens htsec has minted (from the registry; tokens themselves are never kept)."""
    a = app.authority
    now = int(time.time())
    recs = a.registry.issued(identity=identity, kid=key_name, live_at=now if live else None)
    revoked = a.registry.revocations()
    rows: list[dict[str, Any]] = []
    for r in recs:
        claims = {k: v for k, v in r.__dict__.items() if v is not None}
        why = revoked.check(claims)
        state = "revoked" if why else ("expired" if r.exp is not None and r.exp < now else "live")
        rows.append({**r.__dict__, "state": state})
    if as_json:
        emit_json({"issued": rows})
        return
    t = table("JTI", "IDENTITY", "KEY", "SCOPE", "ISSUED", "EXPIRES", "STATE", "BY")
    for row in rows:
        t.add_row(
            row["jti"],
            row["sub"],
            row["kid"],
            (row["scope"] or "").replace("condor:/", ""),
            when(row["iat"]),
            when(row["exp"]),
            row["state"],
            f"{row['minted_by']} ({row['minted_via']})",
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
@pass_app
def token_revoke(
    app: App, jti: str | None, identity: str | None, expr: str | None, reason: str | None
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
    n = app.authority.registry.revoke(kind=kind, value=value, by=caller_name(), reason=reason)
    click.echo(f"revoked {kind} {value}: {n} recorded live token(s) affected")


@token.command("revocations", context_settings=CONTEXT)
@click.option(
    "--condor-expr",
    is_flag=True,
    help="Print one ClassAd expression for HTCondor's SEC_TOKEN_REVOCATION_EXPR.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def token_revocations(app: App, condor_expr: bool, as_json: bool) -> None:
    """List recorded revocations."""
    a = app.authority
    if condor_expr:
        click.echo(a.registry.revocations().condor_expr())
        return
    rules = a.registry.rules()
    rows: list[dict[str, Any]] = [
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
    t = table("ID", "KIND", "VALUE", "WHEN", "BY", "REASON")
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
