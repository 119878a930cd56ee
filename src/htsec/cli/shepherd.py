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

__all__ = ["flock", "shepherd"]

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
@click.option(
    "--once", is_flag=True, help="Run one cycle and exit (non-zero if it could not read the pool)."
)
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
    if not sh.run(stop, cycles=1 if once else None) and once:
        from htsec.errors import Busy

        raise Busy("the cycle could not read the whole pool or failed (see the log); nothing lent")


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


@click.group(context_settings=CONTEXT)
def flock() -> None:
    """Secure flocking: the isolation of flocking slots (docs/flocking.md)."""


@flock.group("isolation", context_settings=CONTEXT)
def isolation() -> None:
    """Network namespace + nftables + bubblewrap for flocking slots, and the submit host's NAT."""


def _isolation_options(f: Any) -> Any:
    opts = [
        click.option("--side", type=click.Choice(["slot", "gateway"]), default="slot",
                     help="slot: on the execute host; gateway: on the submit host."),
        click.option("--slot", help="(slot) the slot's name, 1-10 of A-Z a-z 0-9 _."),
        click.option("--uplink", help="(slot) the flocking VLAN interface, e.g. em1.2512."),
        click.option("--address", help="(slot) its address on the VLAN, e.g. 10.27.2.5/24."),
        click.option("--via", help="(slot) the submit host's address on the VLAN."),
        click.option("--host-address", multiple=True,
                     help="(slot) this host's own addresses/networks (repeat)."),
        click.option("--lan", multiple=True, help="the cluster's private networks (repeat)."),
        click.option("--vlan", help="(gateway) the submit host's VLAN interface."),
        click.option("--wan", help="(gateway) its interface to the internet."),
        click.option("--subnet", help="(gateway) the flocking VLAN's network."),
    ]  # fmt: skip
    for o in reversed(opts):
        f = o(f)
    return f


def _need(**kw: str | None) -> dict[str, str]:
    from htsec.errors import UsageError

    missing = [k for k, v in kw.items() if not v]
    if missing:
        raise UsageError("missing " + ", ".join(f"--{m.replace('_', '-')}" for m in missing))
    return {k: v for k, v in kw.items() if v}


def _specs(o: dict[str, Any]) -> Any:
    from htsec.flock.isolation import GatewaySpec, SlotSpec

    if o["side"] == "gateway":
        g = _need(vlan=o["vlan"], wan=o["wan"], subnet=o["subnet"])
        return GatewaySpec(g["vlan"], g["wan"], g["subnet"], tuple(o["lan"]))
    s = _need(slot=o["slot"], uplink=o["uplink"], address=o["address"], via=o["via"])
    return SlotSpec(
        s["slot"], s["uplink"], s["address"], s["via"], tuple(o["lan"]),
        tuple(o["host_address"]),
    )  # fmt: skip


@isolation.command("render", context_settings=CONTEXT)
@_isolation_options
def render(**o: Any) -> None:
    """Print the commands and nftables rules that apply would run (changes nothing)."""
    import shlex

    from htsec.flock.isolation import GatewaySpec, render_gateway, render_slot

    spec = _specs(o)
    if isinstance(spec, GatewaySpec):
        click.echo("# nft -f - <<'EOF'\n" + render_gateway(spec) + "# EOF")
        return
    cmds, script = render_slot(spec)
    for argv in cmds[:-1]:
        click.echo(shlex.join(argv))
    click.echo(shlex.join(cmds[-1]) + " <<'EOF'\n" + script + "EOF")


@isolation.command("apply", context_settings=CONTEXT)
@_isolation_options
def apply(**o: Any) -> None:
    """Create (or refresh) the slot's namespace and rules, or the submit host's rules (root)."""
    from htsec.flock.isolation import GatewaySpec, apply_gateway, apply_slot

    spec = _specs(o)
    if isinstance(spec, GatewaySpec):
        apply_gateway(spec)
        click.echo("gateway rules applied (table inet htsec_flock_gw)")
    else:
        fresh = apply_slot(spec)
        click.echo(f"slot {spec.slot}: {'created' if fresh else 'present; rules refreshed'}")


@isolation.command("remove", context_settings=CONTEXT)
@click.option("--side", type=click.Choice(["slot", "gateway"]), default="slot")
@click.option("--slot", help="(slot) the slot's name.")
def remove(side: str, slot: str | None) -> None:
    """Remove a slot's namespace (its processes are killed) or the submit host's rules."""
    from htsec.flock.isolation import remove_gateway, remove_slot

    if side == "gateway":
        gone = remove_gateway()
        click.echo("gateway rules removed" if gone else "no gateway rules")
        return
    name = _need(slot=slot)["slot"]
    click.echo(f"slot {name}: {'removed' if remove_slot(name) else 'absent'}")
