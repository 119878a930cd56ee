"""``htsec store``: the database and its data keys."""

from __future__ import annotations

import click

from htsec.cli.context import CONTEXT, App, pass_app


@click.group(context_settings=CONTEXT)
def store() -> None:
    """Administer htsec's database and its encryption keys."""


@store.command("init", context_settings=CONTEXT)
@pass_app
def store_init(app: App) -> None:
    """Create the database (migrated to the newest schema) and the data key file."""
    from htsec.creds.crypto import generate_key_file

    s = app.settings
    created = generate_key_file(s.store_key_file)
    app.authority.store  # noqa: B018 - opens and migrates
    click.echo(
        f"store ready: {s.database_url}; data keys in {s.store_key_file}"
        + (" (created)" if created else "")
    )


@store.command("rekey", context_settings=CONTEXT)
@pass_app
def store_rekey(app: App) -> None:
    """Re-seal every secret under a new data key, without downtime.

    A new key is put first in HTSEC_STORE_KEY_FILE (old keys stay readable), every row is
    re-sealed, then the old keys are dropped. Other htsec processes pick up the new file by
    themselves.
    """
    cs = app.credstore
    old = cs.sealer.current_kid
    new = cs.sealer.begin_rekey()
    n = cs.reseal_all()
    dropped = cs.sealer.finish_rekey()
    cs.audit(
        actor=app.caller_name(), action="rekey", outcome="ok", detail=f"{old} -> {new}, {n} row(s)"
    )
    click.echo(f"re-sealed {n} credential(s) under data key {new}; dropped {dropped} old key(s)")
