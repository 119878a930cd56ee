"""Ending, extending and inspecting annexes: ``lease check``, ``off``, ``extend``, ``status``.

``check`` is the periodic job (EventBridge + Lambda, or cron; docs/annex.md): every annex whose
lease has ended is ended (its instances terminated, its spot fleet cancelled, its object, role
and profile deleted); every live annex whose instances have all fetched their configuration
(tag ``htsec:configured``) has its object deleted early. Instances are matched by the exact
annex name (tag) or client token ``<name>_<uuid4>``: ending ``test`` never touches ``test2``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from htsec.annex import record, roles
from htsec.annex.aws import Clients, aws_call
from htsec.annex.create import find_fleet, instances_of
from htsec.annex.names import (
    TAG_CONFIGURED,
    TAG_LEASE_END,
    TAG_NAME,
    annex_of_client_token,
    config_key,
    validate_name,
)
from htsec.annex.record import Lease
from htsec.errors import AnnexError

if TYPE_CHECKING:  # boto3-stubs (development only)
    from mypy_boto3_ec2.type_defs import FilterTypeDef, InstanceTypeDef

__all__ = ["AnnexStatus", "check", "end", "extend", "lambda_handler", "status"]


def _require(aws: Clients, bucket: str, name: str) -> Lease:
    validate_name(name)
    lease = record.load(aws, bucket, name)
    if lease is None or lease.state == record.ENDED:
        raise AnnexError(f"no live annex {name} in s3://{bucket} ('htsec annex status' lists them)")
    return lease


def _delete_object(aws: Clients, lease: Lease) -> None:
    with aws_call(f"deleting s3://{lease.bucket}/{config_key(lease.annex)}"):
        aws.s3.delete_object(Bucket=lease.bucket, Key=config_key(lease.annex))


def end(aws: Clients, lease: Lease) -> list[str]:
    """End annex ``lease.annex``: cancel its fleet, terminate its instances, delete its object,
    role, profile; the record stays, marked ended. Returns the terminated instance ids."""
    if lease.kind == "spot-fleet":
        fleet = lease.fleet_id or (find_fleet(aws, lease.client_token) or {}).get(
            "SpotFleetRequestId"
        )
        if fleet:
            with aws_call(f"cancelling spot fleet {fleet} of annex {lease.annex}"):
                aws.ec2.cancel_spot_fleet_requests(
                    SpotFleetRequestIds=[fleet], TerminateInstances=True
                )
    ids = [i["InstanceId"] for i in instances_of(aws, lease.annex, token=lease.client_token)]
    if ids:
        with aws_call(f"terminating {len(ids)} instance(s) of annex {lease.annex}"):
            aws.ec2.terminate_instances(InstanceIds=ids)
    _delete_object(aws, lease)
    roles.delete_role(aws, lease.annex)
    lease.state = record.ENDED
    lease.instances = ids
    record.save(aws, lease)
    return ids


def off(aws: Clients, bucket: str, name: str) -> list[str]:
    """``htsec annex off NAME``: end exactly that annex."""
    return end(aws, _require(aws, bucket, name))


def extend(
    aws: Clients, bucket: str, name: str, duration: int, *, now: float | None = None
) -> Lease:
    """Move the lease end of annex ``name`` to ``duration`` seconds from now."""
    if duration <= 0:
        raise AnnexError("--duration must be > 0")
    lease = _require(aws, bucket, name)
    lease.lease_end = int(time.time() if now is None else now) + duration
    ids = [i["InstanceId"] for i in instances_of(aws, name, token=lease.client_token)]
    if ids:
        with aws_call(f"tagging the instances of annex {name} with the new lease end"):
            aws.ec2.create_tags(
                Resources=ids, Tags=[{"Key": TAG_LEASE_END, "Value": str(lease.lease_end)}]
            )
    record.save(aws, lease)
    return lease


@dataclass
class CheckResult:
    ended: dict[str, list[str]] = field(default_factory=dict)
    objects_deleted: list[str] = field(default_factory=list)


def check(aws: Clients, bucket: str, *, now: float | None = None) -> CheckResult:
    """The periodic lease check over every annex recorded in ``bucket``."""
    clock = time.time() if now is None else now
    result = CheckResult()
    for lease in record.list_leases(aws, bucket):
        if lease.state == record.ENDED:
            continue
        if lease.lease_end <= clock:
            result.ended[lease.annex] = end(aws, lease)
            continue
        if (
            lease.state == record.LAUNCHED
            and lease.kind == "on-demand"
            and not lease.fetched_deleted
        ):
            insts = instances_of(aws, lease.annex, token=lease.client_token)
            fetched = [i for i in insts if TAG_CONFIGURED in {t["Key"] for t in i.get("Tags", [])}]
            if insts and len(fetched) == len(insts) >= len(lease.instances):
                _delete_object(aws, lease)
                lease.fetched_deleted = True
                record.save(aws, lease)
                result.objects_deleted.append(lease.annex)
    return result


@dataclass
class AnnexStatus:
    name: str
    lease: Lease | None
    states: dict[str, int]
    instances: list[InstanceTypeDef]
    in_pool: set[str] | None

    def lease_left(self, now: float) -> float | None:
        return None if self.lease is None else self.lease.lease_end - now


def status(
    aws: Clients,
    bucket: str,
    name: str | None = None,
    *,
    in_pool: Callable[[str], set[str] | None] = lambda _: None,
) -> tuple[list[AnnexStatus], list[InstanceTypeDef]]:
    """The annexes (or only ``name``) and the strays: instances carrying an annex tag or
    client token whose annex has no live lease."""
    leases = {lease.annex: lease for lease in record.list_leases(aws, bucket)}
    if name is not None:
        validate_name(name)
        leases = {k: v for k, v in leases.items() if k == name}
    live = {k for k, v in leases.items() if v.state != record.ENDED}
    annexes = []
    for annex, lease in sorted(leases.items()):
        insts = instances_of(aws, annex, token=lease.client_token)
        states: dict[str, int] = {}
        for inst in insts:
            st = inst.get("State", {}).get("Name", "unknown")
            states[st] = states.get(st, 0) + 1
        annexes.append(AnnexStatus(annex, lease, states, insts, in_pool(annex)))
    strays: list[InstanceTypeDef] = []
    filters: list[FilterTypeDef] = [
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        {"Name": "tag-key", "Values": [TAG_NAME]},
    ]
    with aws_call("listing annex-tagged instances"):
        for page in aws.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for res in page.get("Reservations", []):
                for inst in res.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    owner = tags.get(TAG_NAME) or annex_of_client_token(
                        inst.get("ClientToken") or ""
                    )
                    if owner not in live and (name is None or owner == name):
                        strays.append(inst)
    return annexes, strays


def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """AWS Lambda entry point for the periodic lease check (docs/annex.md): the event names the
    bucket (``{"bucket": "..."}``), the region is the Lambda's own."""
    bucket = event.get("bucket") if isinstance(event, dict) else None
    if not isinstance(bucket, str) or not bucket:
        raise AnnexError('the lease check event must name the annex bucket: {"bucket": "..."}')
    result = check(Clients(), bucket)
    return {"ended": result.ended, "objects_deleted": result.objects_deleted}
