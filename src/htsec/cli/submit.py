"""``htsec submit FILE``: the submit gate in front of a job (condor_submit's credential step)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from htsec.cli.context import CONTEXT, App, pass_app, server_option, token_file_option
from htsec.cli.output import emit_json, err, shown
from htsec.errors import RemoteError, SubmitError

if TYPE_CHECKING:
    from htsec.client import Client
    from htsec.submit.gate import Decision

__all__ = ["submit"]


def _read(path: str) -> bytes:
    from htsec.submit.load import MAX_TEXT

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_TEXT + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_TEXT + 1)
    except OSError as exc:
        raise SubmitError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_TEXT:
        raise SubmitError(f"{path} is over {MAX_TEXT} bytes")
    return data


def _ready_lines(d: Decision, file: str) -> list[str]:
    names = [n.wire for n in d.derivation.needs]
    lines = []
    if d.derivation.oauth_services_needed:
        lines.append(f'OAuthServicesNeeded = "{d.derivation.oauth_services_needed}"')
    stored = f"{', '.join(names)} stored for {d.user}" if names else "no OAuth credentials needed"
    lines.append(f"ready: {stored}; condor_submit {file} can proceed")
    return lines


def _report(d: Decision, **extra: Any) -> dict[str, Any]:
    return {
        "state": d.state,
        "user": d.user,
        "jobs": d.derivation.jobs,
        "oauth_services_needed": d.derivation.oauth_services_needed,
        "needs": list(d.results),
        **extra,
    }


def _mismatch(d: Decision, as_json: bool) -> None:
    from htsec.submit.gate import fix_commands

    bad = d.in_state("mismatch")
    commands = fix_commands(bad)
    if as_json:
        emit_json(_report(d, fix=commands))
    else:
        lines = ["htsec: credentials exist that do not match the request:"]
        lines += [f"  {shown(r['service'])}{_h(r)}: {shown(r.get('detail', ''))}" for r in bad]
        lines += ["They can be removed with", *(f"  {c}" for c in commands)]
        lines.append("but make sure no other job is using them; then submit again.")
        err.print("\n".join(lines), markup=False)
    raise SystemExit(1)


def _h(r: Any) -> str:
    return f"_{shown(r['handle'])}" if r.get("handle") else ""


def _login(client: Client, d: Decision, as_json: bool) -> None:
    """Print the authorisation link as condor_submit does (the check made it; a server that
    did not gets asked for it); exit 1."""
    url, expires_at = d.url, d.expires_at
    if url is None:
        body = client.call(
            "POST",
            "/v1/creds/authorizations",
            json={"needs": [n.as_json() for n in d.to_authorize]},
        )
        url, expires_at = str(body.get("url", "")), body.get("expires_at")
    if as_json:
        emit_json(_report(d, url=url, expires_at=expires_at))
    else:
        # submit.cpp: "\nHellow, %s.\nPlease visit: %s\n\n" (HTCondor's typo left out).
        sys.stdout.write(f"\nHello, {shown(d.user)}.\nPlease visit: {shown(url)}\n\n")
        sys.stdout.flush()
    raise SystemExit(1)


def _queue(client: Client, text: bytes, d: Decision, file: str, as_json: bool) -> None:
    """Hand the jobs to the local execution point (POST /v1/jobs)."""
    try:
        body = client.call(
            "POST",
            "/v1/jobs",
            json={"submit": text.decode("utf-8"), "iwd": os.getcwd()},
        )
    except RemoteError as exc:
        if "Not Found" not in str(exc):
            raise
        # No jobs route on this server: the gate's answer is all there is.
        if as_json:
            emit_json(_report(d))
        else:
            click.echo("\n".join(_ready_lines(d, file)))
        return
    if as_json:
        emit_json(_report(d, state="submitted", cluster=body.get("cluster")))
        return
    for w in body.get("warnings") or []:
        err.print(f"htsec: warning: {shown(w)}", markup=False)
    click.echo(f"{body.get('procs')} job(s) submitted to cluster {body.get('cluster')}.")


@click.command("submit", context_settings=CONTEXT)
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@server_option
@token_file_option
@pass_app
def submit(app: App, file: str, as_json: bool, server: str | None, token_file: str | None) -> None:
    """Check that the OAuth credentials FILE's jobs need are stored, then queue them.

    \b
    FILE is an HTCondor submit description ('-': standard input). The tokens it needs are
    derived as condor_submit derives them: use_oauth_services, <service>_oauth_permissions,
    <service>_oauth_resource and <service>_oauth_options (each with an optional _<handle>),
    the configuration's <SERVICE>_DEFAULT_SCOPES / _USER_DEFINE_SCOPES (and _AUDIENCE), and
    the local issuer's services. One request to the credd checks them all:

    \b
      missing      prints "Hello, <user>." and "Please visit: <URL>" (a one-time link to
                   log in at the providers) and exits 1; nothing is queued
      mismatch     a stored credential has other scopes or audience: names them and the
                   'htsec cred delete' that clears them; exits 1
      all stored   without CONDOR_CONFIG (htsec's own default) the jobs go to htsec serve's
                   execution point; with a pool's CONDOR_CONFIG, prints the job attribute
                   OAuthServicesNeeded = "..." and that condor_submit FILE can proceed

    Exit status: 0 queued or ready, 1 refused (login, mismatch, bad description), 2 usage.
    """
    from htsec.config import param
    from htsec.submit.gate import decide

    text = _read(file)
    settings = app.settings  # loads the configuration htcondor2's param() reads
    client = app.client(server, token_file)
    try:
        d = decide(
            text,
            check=lambda needs: client.call(
                "POST", "/v1/creds/check", json={"needs": needs, "authorize": True}
            ),
            param=param,
        )
        if d.state == "mismatch":
            _mismatch(d, as_json)
        if d.state == "login":
            _login(client, d, as_json)
        if settings.builtin:
            _queue(client, text, d, file, as_json)
        elif as_json:
            emit_json(_report(d))
        else:
            click.echo("\n".join(_ready_lines(d, file)))
    finally:
        client.close()
