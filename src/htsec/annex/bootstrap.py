"""``htsec annex bootstrap``: the instance side, run as root at boot before HTCondor starts.

1. Firewall the metadata service from non-root (IPv4, IPv6, forwarded traffic) -- first, so no
   later step can be raced by a user process.
2. IMDSv2 session token; identity document (instance id, region); public IPv4; the role's
   temporary credentials.
3. Which annex: the launch's client token ``<name>_<uuid4>`` (on-demand), or for a spot fleet
   the fleet request's, once the fleet has tagged the instance ``aws:ec2spot:fleet-request-id``
   (back-off, at most ``spot_wait`` seconds, then power off).
4. Fetch ``<name>/config-<name>.tar.gz`` (the role may read only that object), check it against
   the launch's ``htsec:config-sha256`` tag and its manifest, install it (safe modes), write the
   instance's own settings and the master's shutdown script, tag the instance configured.

Every step is retried a bounded number of times; when one still fails the instance powers off
(fail closed): an annex node that cannot prove what it is never joins the pool.
"""

from __future__ import annotations

import random
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from htsec._fs import write_atomic
from htsec.annex import firewall
from htsec.annex.aws import Clients, aws_call
from htsec.annex.imds import Imds
from htsec.annex.names import (
    TAG_BUCKET,
    TAG_CONFIG_SHA256,
    TAG_CONFIGURED,
    TAG_FLEET,
    TAG_NAME,
    annex_of_client_token,
    config_key,
)
from htsec.annex.tarball import install, sha256
from htsec.errors import AnnexError

__all__ = ["Options", "Result", "bootstrap"]

T = TypeVar("T")
SHUTDOWN_SCRIPT = "htsec-annex-poweroff"
INSTANCE_CONFIG = "config.d/01htsec-instance.config"


@dataclass
class Options:
    config_root: Path = Path("/etc/condor")
    endpoints: tuple[str, ...] = ("http://169.254.169.254", "http://[fd00:ec2::254]")
    poweroff: tuple[str, ...] = ("systemctl", "poweroff")
    spot_wait: float = 3000.0
    attempts: int = 5
    firewall: bool = True
    nft: str = "nft"
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    say: Callable[[str], None] = lambda _: None


@dataclass
class Result:
    annex: str
    instance_id: str
    files: list[Path] = field(default_factory=list)
    imds_calls: int = 0
    aws_calls: int = 0


def _retry(opts: Options, what: str, fn: Callable[[], T]) -> T:
    delay = 1.0
    for attempt in range(1, opts.attempts + 1):
        try:
            return fn()
        except AnnexError as exc:
            if attempt == opts.attempts:
                raise AnnexError(f"{what}: gave up after {attempt} attempts: {exc}") from None
            opts.say(f"{what}: {exc}; retrying in {delay:.0f} s")
            opts.sleep(delay)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def _metadata(opts: Options) -> Imds:
    last: AnnexError | None = None
    for base in opts.endpoints:
        imds = Imds(base)
        try:
            imds.token()
            return imds
        except AnnexError as exc:
            last = exc
    raise last or AnnexError("no metadata endpoint configured")


def _wait_for_fleet(
    opts: Options, describe: Callable[[], dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    """Describe the instance until the fleet tag appears (back-off from 2 s, doubling with
    jitter, capped at 5 minutes a sleep), at most ``opts.spot_wait`` seconds."""
    start = opts.clock()
    delay = 2.0
    while True:
        inst = describe()
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        if tags.get(TAG_FLEET):
            return tags[TAG_FLEET], inst
        waited = opts.clock() - start
        if waited + delay > opts.spot_wait:
            raise AnnexError(
                f"no {TAG_FLEET} tag after {waited:.0f} s (at most {opts.spot_wait:.0f} s): "
                "this instance belongs to no known annex"
            )
        opts.say(f"waiting {delay:.0f} s for the spot fleet to tag this instance")
        opts.sleep(delay)
        delay = min(delay * 2 + random.uniform(0, delay), 300.0)  # noqa: S311 (jitter)


def _instance_config(instance_id: str, public_ip: str | None, root: Path) -> str:
    lines = [
        "# htsec annex: this instance's own settings, written at boot.",
        f'EC2InstanceID = "{instance_id}"',
        f"SEC_TOKEN_SYSTEM_DIRECTORY = {root / 'tokens.d'}",
        f"DEFAULT_MASTER_SHUTDOWN_SCRIPT = {root / SHUTDOWN_SCRIPT}",
    ]
    if public_ip:
        lines.append(f"TCP_FORWARDING_HOST = {public_ip}")
    return "\n".join(lines) + "\n"


def bootstrap(opts: Options) -> Result:
    """Configure this instance as a node of its annex (see the module docstring)."""
    if opts.firewall:
        firewall.apply(opts.nft)
    imds = _retry(opts, "metadata session token", lambda: _metadata(opts))
    ident = _retry(
        opts, "instance identity", lambda: imds.json("dynamic/instance-identity/document")
    )
    instance_id, region = str(ident.get("instanceId", "")), str(ident.get("region", ""))
    if not instance_id.startswith("i-") or not region:
        raise AnnexError("the identity document names no instance id or region")
    public_ip = _retry(opts, "public IPv4", lambda: imds.get("meta-data/public-ipv4"))
    roles = _retry(opts, "instance role", lambda: imds.get("meta-data/iam/security-credentials/"))
    role = (roles or "").strip().splitlines()[0] if roles and roles.strip() else ""
    if not role:
        raise AnnexError("this instance has no role: it cannot be an annex node")
    creds = _retry(
        opts, "role credentials", lambda: imds.json(f"meta-data/iam/security-credentials/{role}")
    )
    aws = Clients(
        region,
        aws_access_key_id=creds.get("AccessKeyId"),
        aws_secret_access_key=creds.get("SecretAccessKey"),
        aws_session_token=creds.get("Token"),
    )
    aws_calls = 0

    def describe() -> dict[str, Any]:
        nonlocal aws_calls
        aws_calls += 1
        with aws_call(f"describing instance {instance_id}"):
            res = aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        if not res or not res[0].get("Instances"):
            raise AnnexError(f"EC2 does not know instance {instance_id}")
        return dict(res[0]["Instances"][0])

    inst = _retry(opts, "instance description", describe)
    name = annex_of_client_token(str(inst.get("ClientToken") or ""))
    if name is None:
        fleet, inst = _wait_for_fleet(opts, lambda: _retry(opts, "instance description", describe))

        def fleet_token() -> str:
            nonlocal aws_calls
            aws_calls += 1
            with aws_call(f"describing spot fleet request {fleet}"):
                got = aws.ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[fleet])
            cfgs = got.get("SpotFleetRequestConfigs", [])
            return (
                str(cfgs[0].get("SpotFleetRequestConfig", {}).get("ClientToken", ""))
                if cfgs
                else ""
            )

        name = annex_of_client_token(_retry(opts, "spot fleet client token", fleet_token))
        if name is None:
            raise AnnexError(
                f"spot fleet {fleet} was not made by an annex (no <name>_<uuid> token)"
            )
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    if tags.get(TAG_NAME) != name:
        raise AnnexError(
            f"client token says annex {name!r} but the instance is tagged "
            f"{tags.get(TAG_NAME)!r}; refused"
        )
    bucket, expected = tags.get(TAG_BUCKET, ""), tags.get(TAG_CONFIG_SHA256, "")
    if not bucket or len(expected) != 64:
        raise AnnexError(f"instance {instance_id} lacks the {TAG_BUCKET}/{TAG_CONFIG_SHA256} tags")
    opts.say(f"instance {instance_id} belongs to annex {name}")

    def fetch() -> bytes:
        nonlocal aws_calls
        aws_calls += 1
        with aws_call(f"fetching s3://{bucket}/{config_key(name)}"):
            data: bytes = aws.s3.get_object(Bucket=bucket, Key=config_key(name))["Body"].read()
        if sha256(data) != expected:
            raise AnnexError(
                f"s3://{bucket}/{config_key(name)} does not match the launch's checksum; refused"
            )
        return data

    data = _retry(opts, "configuration", fetch)
    files = install(data, opts.config_root, annex=name)
    hook = opts.config_root / SHUTDOWN_SCRIPT
    script = "#!/bin/sh\n# htsec annex: HTCondor's master runs this when it exits.\nexec "
    write_atomic(hook, (script + shlex.join(opts.poweroff) + "\n").encode(), 0o755)
    own = opts.config_root / INSTANCE_CONFIG
    write_atomic(own, _instance_config(instance_id, public_ip, opts.config_root).encode(), 0o644)
    files += [hook, own]
    try:
        aws_calls += 1
        with aws_call("tagging this instance configured"):
            aws.ec2.create_tags(
                Resources=[instance_id], Tags=[{"Key": TAG_CONFIGURED, "Value": "1"}]
            )
    except AnnexError as exc:  # the lease check then keeps the object until the lease ends
        opts.say(f"could not mark the instance configured: {exc}")
    return Result(name, instance_id, files, imds.calls, aws_calls)
