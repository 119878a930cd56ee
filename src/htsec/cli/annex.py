"""``htsec annex``: secure cloud burst to AWS (docs/annex.md)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from htsec.cli.context import CONTEXT, App, pass_app
from htsec.cli.output import cell, emit_json, err, out, shown, table, when
from htsec.errors import AnnexError, UsageError

if TYPE_CHECKING:
    from htsec.annex.aws import Clients

__all__ = ["annex"]

ANNEX_AUTHZ = ("READ", "ADVERTISE_STARTD", "ADVERTISE_MASTER")


def say(text: str, console: Console = err) -> None:
    """Print ``text`` as it is: AWS messages, tags and metadata URLs hold brackets
    (``http://[fd00:ec2::254]``) that rich would take for markup and drop, or fail on."""
    console.print(shown(text), markup=False)


def _param(knob: str) -> str | None:
    from htsec.config import param

    try:
        return param(knob)
    except Exception:  # no HTCondor configuration at all: the option must be given
        return None


def _bucket(bucket: str | None) -> str:
    bucket = bucket or _param("ANNEX_DEFAULT_S3_BUCKET")
    if not bucket:
        raise UsageError("no annex bucket: pass --bucket or set ANNEX_DEFAULT_S3_BUCKET")
    return bucket


def _clients(region: str | None) -> Clients:
    from htsec.annex.aws import Clients

    return Clients(region or _param("ANNEX_DEFAULT_AWS_REGION") or None)


def _hours(value: float, what: str) -> int:
    if not value > 0:
        raise UsageError(f"{what} must be > 0 hours")
    return max(1, round(value * 3600))


bucket_option = click.option("--bucket", help="The annex bucket (ANNEX_DEFAULT_S3_BUCKET).")
region_option = click.option("--region", help="AWS region (ANNEX_DEFAULT_AWS_REGION, AWS_REGION).")


@click.group(context_settings=CONTEXT)
def annex() -> None:
    """Burst to AWS: instances that join the pool with ID tokens (docs/annex.md)."""


@annex.command("setup", context_settings=CONTEXT)
@bucket_option
@region_option
@click.option("--dry-run", is_flag=True, help="Print what would be created; change nothing.")
@click.option("--print-admin-policy", is_flag=True, help="Print the admin IAM policy and exit.")
def setup_cmd(
    bucket: str | None, region: str | None, dry_run: bool, print_admin_policy: bool
) -> None:
    """Create the bucket, spot-fleet role and admin policy (idempotent)."""
    from htsec.annex import setup

    name = _bucket(bucket)
    if print_admin_policy:
        click.echo(setup.admin_policy_json(name))
        return
    aws = _clients(region)
    steps = setup.plan(aws, name)
    made = setup.run(steps, dry_run=dry_run, report=lambda s: say(f"{s.state:>13}  {s.what}", out))
    verb = "would create" if dry_run else "created"
    out.print(f"setup: {verb} {made} of {len(steps)}; the rest already existed")


@annex.command("create", context_settings=CONTEXT)
@click.argument("name")
@click.option("--count", type=int, default=0, help="On-demand instances to launch.")
@click.option(
    "--slots", type=int, default=0, help="Spot fleet target capacity (with --spot-fleet-config)."
)
@click.option(
    "--duration",
    type=float,
    default=3000 / 3600,
    show_default="0.83 (3000 s)",
    help="Lease in hours.",
)
@click.option(
    "--idle",
    type=float,
    default=900 / 3600,
    show_default="0.25 (900 s)",
    help="Idle shutdown in hours.",
)
@click.option("--owner", "owners", multiple=True, help="Only these users' jobs may run (repeat).")
@click.option("--instance-type", default="m5.large", show_default=True)
@click.option("--ami", default=None, help="Image id (ANNEX_DEFAULT_ODI_IMAGE_ID).")
@click.option("--key-name", default=None, help="EC2 key pair for ssh.")
@click.option("--security-group", "security_groups", multiple=True)
@click.option("--subnet", default=None)
@click.option(
    "--spot-fleet-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SpotFleetRequestConfig JSON.",
)
@click.option(
    "--collector", default=None, help="Collector the instances report to (COLLECTOR_HOST)."
)
@click.option(
    "--signing-key", default="POOL", show_default=True, help="Key that signs the annex token."
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to show instances coming up (0: do not wait).",
)
@bucket_option
@region_option
@pass_app
def create_cmd(app: App, name: str, count: int, slots: int, duration: float, idle: float,
               owners: tuple[str, ...], instance_type: str, ami: str | None, key_name: str | None,
               security_groups: tuple[str, ...], subnet: str | None, spot_fleet_config: Path | None,
               collector: str | None, signing_key: str, wait_s: float, bucket: str | None,
               region: str | None) -> None:  # fmt: skip
    """Create annex NAME: upload its configuration, launch, record the lease.

    Re-running after an interruption resumes with the same client token (no duplicates).
    """
    from htsec.annex.create import CreateRequest, create, wait_ready
    from htsec.annex.names import validate_name

    validate_name(name)
    if (count > 0) == (slots > 0) or (slots > 0) != (spot_fleet_config is not None):
        raise UsageError("give --count N (on-demand) or --slots W with --spot-fleet-config FILE")
    fleet: dict[str, Any] | None = None
    if spot_fleet_config is not None:
        try:
            fleet = json.loads(spot_fleet_config.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--spot-fleet-config {spot_fleet_config}: {exc}") from None
        if not isinstance(fleet, dict):
            raise UsageError(f"--spot-fleet-config {spot_fleet_config}: not a JSON object")
    host = collector or _param("COLLECTOR_HOST")
    if not host:
        raise UsageError("no collector: pass --collector or set COLLECTOR_HOST")
    req = CreateRequest(
        name=name, bucket=_bucket(bucket), collector=host, count=count, slots=slots,
        duration=_hours(duration, "--duration"), idle=_hours(idle, "--idle"), owners=owners,
        instance_type=instance_type, ami=ami or _param("ANNEX_DEFAULT_ODI_IMAGE_ID") or "",
        key_name=key_name, security_groups=security_groups, subnet=subnet, spot_fleet_config=fleet,
    )  # fmt: skip
    identity = f"annex-{name}@{app.settings.uid_domain}"

    def mint(lease_end: int) -> str:
        now = int(time.time())
        return app.authority.mint(
            identity=identity,
            key=signing_key,
            lifetime=max(1, lease_end - now),
            authz=ANNEX_AUTHZ,
            minted_by=app.caller_name(),
            via="annex",
            now=now,
        )

    aws = _clients(region)
    lease = create(aws, req, mint, say=say)
    say(
        f"annex {name}: {lease.kind}, {lease.count} {'slots' if slots else 'instances'}, "
        f"client token {lease.client_token}, lease ends {when(lease.lease_end)}",
        out,
    )
    if wait_s > 0 and lease.kind == "on-demand":
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err, transient=False,
        ) as progress:  # fmt: skip
            task = progress.add_task(f"annex {name} running", total=lease.count)

            def show(states: dict[str, int]) -> None:
                rest = ", ".join(f"{k} {v}" for k, v in sorted(states.items()) if k != "running")
                progress.update(
                    task, completed=states.get("running", 0),
                    description=f"annex {name} running" + (f" ({rest})" if rest else ""),
                )  # fmt: skip

            wait_ready(aws, lease, timeout=wait_s, on_progress=show)


@annex.group("lease", context_settings=CONTEXT)
def lease_group() -> None:
    """The lease of annexes."""


@lease_group.command("check", context_settings=CONTEXT)
@bucket_option
@region_option
def lease_check(bucket: str | None, region: str | None) -> None:
    """End every annex whose lease is over; delete objects every instance fetched (run it
    every few minutes: EventBridge + Lambda, or cron; docs/annex.md)."""
    from htsec.annex.lease import check

    result = check(_clients(region), _bucket(bucket))
    for name, ids in sorted(result.ended.items()):
        say(f"ended annex {name}: terminated {len(ids)} instance(s)", out)
    for name in result.objects_deleted:
        say(f"annex {name}: every instance fetched its configuration; object deleted", out)


def _in_pool(collector: str | None) -> Callable[[str], set[str] | None]:
    def query(name: str) -> set[str] | None:
        if not collector:
            return None
        try:
            import htcondor2

            ads = htcondor2.Collector(collector).query(
                htcondor2.AdTypes.Startd,
                constraint=f'AnnexName == "{name}"',
                projection=["EC2InstanceID"],
            )
        except Exception:  # an unreachable collector: "unknown", not a failure of status
            return None
        return {str(ad.get("EC2InstanceID")) for ad in ads}

    return query


@annex.command("status", context_settings=CONTEXT)
@click.argument("name", required=False)
@click.option("--collector", default=None, help="Ask this collector which instances joined.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@bucket_option
@region_option
def status_cmd(name: str | None, collector: str | None, as_json: bool, bucket: str | None,
               region: str | None) -> None:  # fmt: skip
    """Annexes (or NAME): instances by state, in the pool or not, lease left; and strays."""
    from htsec.annex.lease import status

    now = time.time()
    annexes, strays = status(_clients(region), _bucket(bucket), name, in_pool=_in_pool(collector))
    rows: list[dict[str, Any]] = []
    for a in annexes:
        ids = {i["InstanceId"] for i in a.instances}
        rows.append(
            {
                "annex": a.name,
                "state": a.lease.state if a.lease else "?",
                "instances": a.states,
                "in_pool": None if a.in_pool is None else sorted(ids & a.in_pool),
                "lease_left_s": int(a.lease_left(now) or 0),
                "client_token": a.lease.client_token if a.lease else None,
            }
        )
    stray_rows: list[dict[str, Any]] = [
        {"instance": i["InstanceId"], "state": i.get("State", {}).get("Name"),
         "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])}}
        for i in strays
    ]  # fmt: skip
    if as_json:
        emit_json({"annexes": rows, "strays": stray_rows})
        return
    t = table("annex", "lease", "instances", "in pool", "lease left")
    for r in rows:
        inst = ", ".join(f"{k} {v}" for k, v in sorted(r["instances"].items())) or "none"
        pool = "unknown" if r["in_pool"] is None else str(len(r["in_pool"]))
        left = r["lease_left_s"]
        t.add_row(
            cell(r["annex"]), cell(r["state"]), cell(inst), pool,
            f"{left // 60} min" if left > 0 else "over",
        )  # fmt: skip
    out.print(t)
    for s in stray_rows:
        say(
            f"stray: {s['instance']} ({s['state']}) of annex "
            f"{s['tags'].get('htcondor:AnnexName')!r}: no live lease",
            out,
        )


@annex.command("off", context_settings=CONTEXT)
@click.argument("name")
@bucket_option
@region_option
def off_cmd(name: str, bucket: str | None, region: str | None) -> None:
    """End annex NAME exactly (no other annex is touched)."""
    from htsec.annex.lease import off

    ids = off(_clients(region), _bucket(bucket), name)
    say(f"ended annex {name}: terminated {len(ids)} instance(s)", out)


@annex.command("extend", context_settings=CONTEXT)
@click.argument("name")
@click.option("--duration", type=float, required=True, help="New lease from now, in hours.")
@bucket_option
@region_option
def extend_cmd(name: str, duration: float, bucket: str | None, region: str | None) -> None:
    """Move the lease end of annex NAME to DURATION hours from now."""
    from htsec.annex.lease import extend

    lease = extend(_clients(region), _bucket(bucket), name, _hours(duration, "--duration"))
    say(f"annex {name}: lease ends {when(lease.lease_end)}", out)


@annex.command("bootstrap", context_settings=CONTEXT)
@click.option(
    "--config-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/condor"),
    show_default=True,
)
@click.option(
    "--poweroff-command",
    default="systemctl poweroff",
    show_default=True,
    help="Run when bootstrap fails (fail closed).",
)
@click.option(
    "--spot-wait",
    type=float,
    default=3000.0,
    show_default=True,
    help="Seconds to wait for the spot fleet tag.",
)
@click.option(
    "--attempts", type=click.IntRange(1, 20), default=5, show_default=True, help="Tries per step."
)
@click.option(
    "--metadata", "endpoints", multiple=True, help="Metadata service URL (default IPv4, then IPv6)."
)
def bootstrap_cmd(config_root: Path, poweroff_command: str, spot_wait: float, attempts: int,
                  endpoints: tuple[str, ...]) -> None:  # fmt: skip
    """Configure this EC2 instance as an annex node (as root, at boot).

    contrib/htsec-annex-bootstrap.service runs it before HTCondor starts.
    """
    import subprocess

    from htsec.annex.bootstrap import Options, bootstrap

    if os.geteuid() != 0:
        raise UsageError(
            "htsec annex bootstrap runs as root "
            "(it installs the firewall and HTCondor's configuration)"
        )
    poweroff = tuple(shlex.split(poweroff_command))
    opts = Options(
        config_root=config_root, poweroff=poweroff, spot_wait=spot_wait, attempts=attempts,
        say=lambda m: say(f"bootstrap: {m}"),
    )  # fmt: skip
    if endpoints:
        opts.endpoints = endpoints
    try:
        result = bootstrap(opts)
    except AnnexError as exc:
        say(f"bootstrap failed: {exc}; powering off (fail closed)")
        subprocess.run(list(poweroff), check=False, timeout=120)
        sys.exit(1)
    say(
        f"bootstrap: instance {result.instance_id} joined annex {result.annex}: "
        f"{len(result.files)} files installed under {config_root} "
        f"({result.imds_calls} metadata + {result.aws_calls} AWS calls)",
        out,
    )
