"""``htsec shepherd``: the flocking policy daemon (docs/flocking.md)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from htsec.cli.context import CONTEXT, App, pass_app
from htsec.cli.output import cell, emit_json, out, table, when

__all__ = ["shepherd"]

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The shepherd's TOML file (default: built-in defaults, seed 001's rules).",
)


@click.group(context_settings=CONTEXT)
def shepherd() -> None:
    """Lend idle execute hosts to flocking while local work is short (docs/flocking.md)."""


@shepherd.command("run", context_settings=CONTEXT)
@config_option
@click.option("--once", is_flag=True, help="Run one cycle and exit.")
@pass_app
def run(app: App, config_path: Path | None, once: bool) -> None:
    """Observe the pool, decide and switch hosts, every interval, until SIGTERM/SIGINT."""
    from htsec.flock.config import load_config
    from htsec.flock.daemon import Shepherd
    from htsec.flock.driver import Driver, LocalDriver
    from htsec.flock.hooks import Hook, IcingaHook, WebhookHook

    cfg = load_config(config_path)
    store = app.authority.store
    driver: Driver
    if cfg.driver == "local":
        driver = LocalDriver(store, cfg.state_dir)
    else:
        from htsec.flock.condor import CondorDriver

        driver = CondorDriver(cfg.htcondor)
    hooks: list[Hook] = []
    if cfg.icinga is not None:
        hooks.append(IcingaHook(cfg.icinga))
    if cfg.webhook is not None:
        hooks.append(WebhookHook(cfg.webhook))
    logging.getLogger("htsec.flock").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    sh = Shepherd(cfg, driver, store=store, hooks=hooks)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sh.run(stop, cycles=1 if once else None)


def _status(config_path: Path | None) -> dict[str, Any]:
    from htsec.flock.config import load_config
    from htsec.flock.state import load_state

    cfg = load_config(config_path)
    st = load_state(cfg.state_dir)
    last = st.last_cycle
    hosts = last.get("hosts", [])
    by_mode: dict[str, list[str]] = {}
    for h in hosts:
        by_mode.setdefault(h["mode"], []).append(h["name"])
    return {
        "state_dir": str(cfg.state_dir),
        "last_cycle_at": last.get("at"),
        "idle_jobs": last.get("idle_jobs"),
        "lend_below": last.get("lend_below", cfg.policy.lend_below),
        "reclaim_above": last.get("reclaim_above", cfg.policy.reclaim_above),
        "complete": last.get("complete"),
        "errors": last.get("errors", []),
        "override": last.get("override"),
        "reserve": cfg.policy.reserve,
        "max_lent": last.get("max_lent"),
        "hosts_by_mode": {m: sorted(v) for m, v in sorted(by_mode.items())},
        "hosts": hosts,
        "interrupted": st.pending,
        "last_actions": st.last_actions[-20:],
    }


@shepherd.command("status", context_settings=CONTEXT)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Hosts by mode, the queue, the reserve and the last actions (from the state file)."""
    s = _status(config_path)
    if as_json:
        emit_json(s)
        return
    at = s["last_cycle_at"]
    out.print(f"last cycle: {when(int(at)) if at else 'never'}")
    idle = "unknown" if s["idle_jobs"] is None else s["idle_jobs"]
    out.print(
        f"idle local jobs: {idle} (lend below {s['lend_below']}, reclaim above "
        f"{s['reclaim_above']}); reserve {s['reserve']:.0%} (at most {s['max_lent']} lent)"
    )
    if s["override"]:
        out.print(f"override: {cell(s['override'])}")
    for e in s["errors"]:
        out.print(f"[red]error:[/red] {cell(e)} (no lending)")
    if s["interrupted"]:
        out.print(f"[red]interrupted cycle:[/red] {len(s['interrupted'])} actions not done")
    t = table("MODE", "HOSTS", "NAMES")
    for mode, names in s["hosts_by_mode"].items():
        shown = ", ".join(names[:8]) + (f", ... (+{len(names) - 8})" if len(names) > 8 else "")
        t.add_row(cell(mode), str(len(names)), cell(shown))
    out.print(t)
    a = table("WHEN", "HOST", "ACTION", "OUTCOME", "REASON")
    for x in s["last_actions"]:
        a.add_row(
            when(int(x["at"])),
            cell(x["host"]),
            cell(x["kind"]),
            cell(x["outcome"]),
            cell(x["reason"]),
        )
    out.print(a)
