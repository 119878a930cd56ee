"""``htsec login``: store an OAuth credential from a host without a browser (RFC 8628).

The portal (:mod:`htsec.portal.device`) runs the device flow with the provider; this command
starts it with the user's ID token, prints the user code and where to enter it, and polls at
the provider's interval until the user has approved (or denied) on another device. Nothing
secret passes through here: the pending login is sealed by the portal.
"""

from __future__ import annotations

import time
from typing import Any

import click

from htsec.cli.context import CONTEXT, App, pass_app, server_option, token_file_option
from htsec.cli.output import err, shown
from htsec.errors import RemoteError

__all__ = ["login"]

#: Seconds to wait for the portal per poll: it waits up to 10 s for the provider.
POLL_TIMEOUT = 30.0


@click.command("login", context_settings=CONTEXT)
@click.option("--service", required=True, help="OAuth service (provider) name, e.g. box.")
@click.option("--handle", metavar="HANDLE", help="Credential handle (service_handle).")
@click.option(
    "--scopes",
    default="",
    help="Scopes, comma or space separated (default: the "
    "provider's <SERVICE>_DEFAULT_SCOPES, else openid).",
)
@click.option("--audience", default="", help="Audience / resource (RFC 8707).")
@server_option
@token_file_option
@pass_app
def login(
    app: App,
    service: str,
    handle: str | None,
    scopes: str,
    audience: str,
    server: str | None,
    token_file: str | None,
) -> None:
    """Log in at SERVICE's provider on another device and store the credential (device flow).

    \b
    Prints a code and a URL; open the URL anywhere (a phone will do), enter the code, log in
    and approve. The credential is stored in the credd as soon as you have.
    """
    from htsec.client import Client

    client = Client(app.settings, url=server, token_file=token_file, timeout=POLL_TIMEOUT)
    body = {"service": service, "handle": handle, "scopes": scopes.replace(",", " ").split()}
    if audience:
        body["audience"] = audience
    try:
        # The provider's texts reach the terminal through shown() (control characters made
        # visible); the sealed "login" goes back to the portal as it came.
        started: dict[str, Any] = client.call("POST", "/v1/device-logins", json=body)
        interval = max(1, int(started["interval"]))
        expires_in = int(started["expires_in"])
        deadline = time.monotonic() + expires_in
        click.echo(
            f"To store your {shown(service)} credential, visit:\n\n"
            f"    {shown(started['verification_uri'])}"
        )
        click.echo(f"\nand enter the code:\n\n    {shown(started['user_code'])}\n")
        if started.get("verification_uri_complete"):
            click.echo(f"(or open {shown(started['verification_uri_complete'])})\n")
        click.echo(
            f"Waiting for you to approve (the code expires in {expires_in} s; Ctrl-C to stop) ..."
        )
        while True:
            time.sleep(interval)
            if time.monotonic() > deadline:
                raise RemoteError("the code expired before it was approved; run htsec login again")
            answer = client.call("POST", "/v1/device-logins/poll", json={"login": started["login"]})
            status = answer.get("status")
            if status == "pending":
                continue
            if status == "slow_down":
                interval += int(answer.get("add_interval", 5))
                continue
            if status == "stored":
                cred = answer["credential"]
                scopes_got = shown(" ".join(cred.get("scopes") or []) or "-")
                click.echo(
                    f"stored {shown(cred['name'])} for {shown(cred['user'])} (scopes: {scopes_got})"
                )
                return
            if status == "denied":
                raise RemoteError("the login was denied at the provider; nothing was stored")
            if status == "expired":
                raise RemoteError("the code expired before it was approved; run htsec login again")
            raise RemoteError(f"the portal answered an unknown status {status!r}")
    except KeyboardInterrupt:
        err.print("htsec: login stopped; nothing was stored", markup=False)
        raise SystemExit(130) from None
    finally:
        client.close()
