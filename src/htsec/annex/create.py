"""``htsec annex create``: upload the configuration, launch with the client token, record the lease.

The order makes every step safe to repeat: the lease record (with the client token) is written
before anything is launched, so a re-run after an interruption reuses the same token and finds
the instances already launched with it instead of launching more. A failure before any instance
exists rolls back what this run created (object, role and profile, record); once instances exist
they are recorded and ``htsec annex status`` / ``off`` account for them.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import botocore.exceptions

from htsec.annex import record, roles
from htsec.annex.aws import Clients, aws_call, error_code
from htsec.annex.names import (
    TAG_BUCKET,
    TAG_CONFIG_SHA256,
    TAG_LEASE_END,
    TAG_NAME,
    client_token,
    config_key,
    role_name,
    token_belongs_to,
    validate_name,
)
from htsec.annex.policies import SPOT_FLEET_ROLE
from htsec.annex.record import Lease
from htsec.annex.tarball import AnnexConfig, build, render_config, sha256
from htsec.errors import AnnexError, CloudError

if TYPE_CHECKING:  # boto3-stubs (development only)
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        InstanceTypeDef,
        SpotFleetRequestConfigDataTypeDef,
    )

__all__ = ["CreateRequest", "create", "instances_of", "tags_of"]

#: Mints the annex's ID token expiring at the given time (the CLI uses htsec.tokens).
Minter = Callable[[int], str]


@dataclass
class CreateRequest:
    """What ``htsec annex create`` was asked."""

    name: str
    bucket: str
    collector: str
    count: int = 0
    slots: int = 0
    duration: int = 3000
    idle: int = 900
    owners: tuple[str, ...] = ()
    instance_type: str = "m5.large"
    ami: str = ""
    key_name: str | None = None
    security_groups: tuple[str, ...] = ()
    subnet: str | None = None
    spot_fleet_config: dict[str, Any] | None = None
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "spot-fleet" if self.spot_fleet_config is not None else "on-demand"


def tags_of(lease: Lease) -> list[dict[str, str]]:
    return [
        {"Key": "Name", "Value": role_name(lease.annex)},
        {"Key": TAG_NAME, "Value": lease.annex},
        {"Key": TAG_BUCKET, "Value": lease.bucket},
        {"Key": TAG_CONFIG_SHA256, "Value": lease.config_sha256},
        {"Key": TAG_LEASE_END, "Value": str(lease.lease_end)},
    ]


def instances_of(aws: Clients, name: str, *, token: str | None = None) -> list[InstanceTypeDef]:
    """The instances of annex ``name`` that are not terminated: those launched with its client
    token ``token`` (on-demand) and those tagged with exactly its name (spot fleets)."""
    filters: list[FilterTypeDef] = [
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    ]
    found: dict[str, InstanceTypeDef] = {}
    queries: list[list[FilterTypeDef]] = [[*filters, {"Name": f"tag:{TAG_NAME}", "Values": [name]}]]
    if token:
        queries.append([*filters, {"Name": "client-token", "Values": [token]}])
    with aws_call(f"listing the instances of annex {name}"):
        for query in queries:
            for page in aws.ec2.get_paginator("describe_instances").paginate(Filters=query):
                for reservation in page.get("Reservations", []):
                    for inst in reservation.get("Instances", []):
                        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                        # Exact match: an annex 'test' never takes 'test2_...' for its own.
                        if tags.get(TAG_NAME) == name or token_belongs_to(
                            inst.get("ClientToken"), name
                        ):
                            found[inst["InstanceId"]] = inst
    return list(found.values())


def _upload(aws: Clients, lease: Lease, req: CreateRequest, mint: Minter) -> None:
    cfg = AnnexConfig(
        name=lease.annex,
        collector=req.collector,
        lease_end=lease.lease_end,
        idle=lease.idle,
        token=mint(lease.lease_end),
        owners=req.owners,
    )
    data = build(cfg)
    lease.config_sha256 = sha256(data)
    with aws_call(f"uploading s3://{lease.bucket}/{config_key(lease.annex)}"):
        aws.s3.put_object(
            Bucket=lease.bucket,
            Key=config_key(lease.annex),
            Body=data,
            ServerSideEncryption="AES256",
            Metadata={"sha256": lease.config_sha256, "annex": lease.annex},
        )


def _stored_digest(aws: Clients, lease: Lease) -> str | None:
    """The SHA-256 of the configuration object now in the bucket, or None when it is gone."""
    with aws_call(f"reading s3://{lease.bucket}/{config_key(lease.annex)}"):
        try:
            body = aws.s3.get_object(Bucket=lease.bucket, Key=config_key(lease.annex))["Body"]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                return None
            raise
        return sha256(body.read())


def _configure(
    aws: Clients, lease: Lease, req: CreateRequest, mint: Minter, say: Callable[[str], None]
) -> None:
    """Make the bucket hold the configuration every instance of the annex is tagged with.

    A resumed create keeps the object the interrupted run uploaded (its digest is in the lease
    record and on every instance that run launched): a new token and tarball would make those
    instances refuse it and power off. Only when it is gone is a new one built; on-demand
    instances already launched are then tagged with the new digest (EC2 launches no more under
    the same client token), while a live spot fleet cannot be: its launch specifications, which
    carry the old digest to every replacement, cannot be changed, so that resume is refused.
    """
    if lease.config_sha256 and _stored_digest(aws, lease) == lease.config_sha256:
        say(f"annex {lease.annex}: keeping the configuration already uploaded")
        return
    old = lease.config_sha256
    if old and lease.kind == "spot-fleet" and find_fleet(aws, lease.client_token):
        raise AnnexError(
            f"the configuration of annex {lease.annex} is gone from s3://{lease.bucket} and its "
            f"spot fleet launches instances that expect it; 'htsec annex off {lease.annex}' "
            "then create it again"
        )
    _upload(aws, lease, req, mint)
    ids = [i["InstanceId"] for i in instances_of(aws, lease.annex, token=lease.client_token)]
    if old and ids:
        with aws_call(f"tagging the instances of annex {lease.annex} with the new configuration"):
            aws.ec2.create_tags(
                Resources=ids, Tags=[{"Key": TAG_CONFIG_SHA256, "Value": lease.config_sha256}]
            )
        say(f"annex {lease.annex}: configuration re-uploaded; {len(ids)} instance(s) re-tagged")


def _run_on_demand(
    aws: Clients, lease: Lease, req: CreateRequest, sleep: Callable[[float], None]
) -> list[str]:
    existing = instances_of(aws, lease.annex, token=lease.client_token)
    if existing:
        return [i["InstanceId"] for i in existing]
    args: dict[str, Any] = {
        "ImageId": req.ami,
        "InstanceType": req.instance_type,
        "MinCount": 1,
        "MaxCount": lease.count,
        "ClientToken": lease.client_token,
        "IamInstanceProfile": {"Name": role_name(lease.annex)},
        "InstanceInitiatedShutdownBehavior": "terminate",
        # IMDSv2 only, one hop: a container on the instance cannot reach it through NAT.
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
            "HttpEndpoint": "enabled",
            "HttpProtocolIpv6": "enabled",
        },
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags_of(lease)}],
    }
    if req.key_name:
        args["KeyName"] = req.key_name
    if req.security_groups:
        args["SecurityGroupIds"] = list(req.security_groups)
    if req.subnet:
        args["SubnetId"] = req.subnet
    delay = 1.0
    for attempt in range(8):
        try:
            with aws_call(f"launching {lease.count} instance(s) of annex {lease.annex}"):
                reply = aws.ec2.run_instances(**args)
            return [i["InstanceId"] for i in reply.get("Instances", [])]
        except CloudError as exc:
            # A new instance profile takes a few seconds to reach EC2 (IAM is eventually
            # consistent); the same client token makes the retry safe.
            if exc.aws_code != "InvalidParameterValue" or "profile" not in str(exc).lower():
                raise
            if attempt == 7:
                raise
            sleep(delay)
            delay = min(delay * 2, 15.0)
    raise AssertionError("unreachable")


def _fleet_config(
    lease: Lease, req: CreateRequest, account: str
) -> SpotFleetRequestConfigDataTypeDef:
    assert req.spot_fleet_config is not None
    cfg = copy.deepcopy(req.spot_fleet_config)
    cfg["ClientToken"] = lease.client_token
    cfg["TargetCapacity"] = lease.count
    cfg.setdefault("IamFleetRole", f"arn:aws:iam::{account}:role/{SPOT_FLEET_ROLE}")
    cfg.setdefault("AllocationStrategy", "lowestPrice")
    cfg.setdefault("Type", "maintain")
    specs = cfg.get("LaunchSpecifications")
    if not isinstance(specs, list) or not specs:
        raise AnnexError("the spot fleet configuration has no LaunchSpecifications")
    for spec in specs:
        spec["IamInstanceProfile"] = {"Name": role_name(lease.annex)}
        spec["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tags_of(lease)}]
        spec.setdefault("ImageId", req.ami)
        if "UserData" in spec:
            spec["UserData"] = base64.b64encode(str(spec["UserData"]).encode()).decode()
    # The user's JSON with our fields set: EC2 checks the rest of its shape.
    return cast("SpotFleetRequestConfigDataTypeDef", cfg)


def find_fleet(aws: Clients, token: str) -> dict[str, Any] | None:
    """The live spot fleet request made with client token ``token``."""
    with aws_call("listing spot fleet requests"):
        pages = aws.ec2.get_paginator("describe_spot_fleet_requests").paginate()
        for page in pages:
            for sfr in page.get("SpotFleetRequestConfigs", []):
                state = sfr.get("SpotFleetRequestState", "")
                if sfr.get("SpotFleetRequestConfig", {}).get("ClientToken") == token and not (
                    state.startswith("cancelled")
                ):
                    return dict(sfr)
    return None


def _run_fleet(aws: Clients, lease: Lease, req: CreateRequest) -> str:
    existing = find_fleet(aws, lease.client_token)
    if existing:
        return str(existing["SpotFleetRequestId"])
    with aws_call("reading the account id"):
        account = aws.sts.get_caller_identity()["Account"]
    with aws_call(f"requesting a spot fleet of {lease.count} slot(s) for annex {lease.annex}"):
        reply = aws.ec2.request_spot_fleet(
            SpotFleetRequestConfig=_fleet_config(lease, req, account)
        )
    return str(reply["SpotFleetRequestId"])


def _rollback(aws: Clients, lease: Lease) -> None:
    """Remove what a create that launched nothing left behind."""
    with aws_call(f"rolling back annex {lease.annex}"):
        aws.s3.delete_object(Bucket=lease.bucket, Key=config_key(lease.annex))
    roles.delete_role(aws, lease.annex)
    record.delete(aws, lease.bucket, lease.annex)


def create(
    aws: Clients,
    req: CreateRequest,
    mint: Minter,
    *,
    now: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = lambda _: None,
) -> Lease:
    """Create (or resume creating) annex ``req.name``; the recorded lease."""
    validate_name(req.name)
    wanted = req.slots if req.kind == "spot-fleet" else req.count
    if wanted <= 0:
        raise AnnexError("ask for at least one instance (--count) or slot (--slots)")
    if req.duration <= 0 or req.idle <= 0:
        raise AnnexError("--duration and --idle must be > 0")
    if req.kind == "on-demand" and not req.ami:
        raise AnnexError("on-demand annexes need an image: --ami ami-...")
    # What HTCondor could not read (a quote in an owner, a blank in the collector) is refused
    # here, before anything exists in AWS, rather than by the upload after the lease record.
    render_config(AnnexConfig(req.name, req.collector, 1, req.idle, "", req.owners))
    clock = time.time() if now is None else now
    lease = record.load(aws, req.bucket, req.name)
    if lease is not None and lease.state == record.ENDED:
        lease = None  # an ended annex's name may be used again (a new client token)
    if lease is not None and lease.state != record.CREATING:
        raise AnnexError(
            f"annex {req.name} already exists ({lease.state}, lease ends "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(lease.lease_end))}); "
            f"'htsec annex extend {req.name}' or 'htsec annex off {req.name}'"
        )
    if lease is not None and lease.lease_end <= clock:
        raise AnnexError(
            f"the lease of annex {req.name} ended while it was being created; "
            f"'htsec annex off {req.name}' then create it again"
        )
    if lease is not None:
        say(f"resuming the create of annex {req.name} with client token {lease.client_token}")
    else:
        lease = Lease(
            annex=req.name,
            client_token=client_token(req.name),
            bucket=req.bucket,
            kind=req.kind,
            count=wanted,
            lease_end=int(clock) + req.duration,
            idle=req.idle,
            created=int(clock),
        )
        record.save(aws, lease)
    launched: list[str] = []
    try:
        _configure(aws, lease, req, mint, say)
        roles.ensure_role(aws, req.bucket, req.name)
        record.save(aws, lease)
        req.hooks.get("before_launch", lambda: None)()
        if lease.kind == "spot-fleet":
            lease.fleet_id = _run_fleet(aws, lease, req)
        else:
            launched = _run_on_demand(aws, lease, req, sleep)
            lease.instances = launched
        req.hooks.get("after_launch", lambda: None)()
    except AnnexError:
        # Nothing may run unaccounted for: only roll back when no instance carries the token.
        if lease.kind == "on-demand" and instances_of(aws, req.name, token=lease.client_token):
            raise
        if lease.kind == "spot-fleet" and find_fleet(aws, lease.client_token):
            raise
        _rollback(aws, lease)
        raise
    lease.state = record.LAUNCHED
    record.save(aws, lease)
    if lease.kind == "on-demand" and len(launched) < lease.count:
        say(
            f"annex {req.name}: EC2 launched {len(launched)} of {lease.count} instances "
            "(partial launch; the lease covers those)"
        )
    return lease


def wait_ready(
    aws: Clients,
    lease: Lease,
    *,
    timeout: float,
    on_progress: Callable[[dict[str, int]], None],
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 5.0,
) -> dict[str, int]:
    """Poll the annex's instances until all are running (or ``timeout``); counts by state."""
    deadline = time.monotonic() + timeout
    while True:
        states: dict[str, int] = {}
        for inst in instances_of(aws, lease.annex, token=lease.client_token):
            state = inst.get("State", {}).get("Name", "unknown")
            states[state] = states.get(state, 0) + 1
        on_progress(states)
        if states.get("running", 0) >= lease.count or time.monotonic() >= deadline:
            return states
        sleep(interval)
