"""The lease record of an annex: one small JSON object in the annex bucket.

Why S3 and not htsec's database: the lease check runs wherever the admin schedules it (an
EventBridge-triggered Lambda, or cron on any host with the admin policy), with no access to
htsec's store; the bucket is already the annex's one piece of shared state, and the record must
exist *before* the launch so that an interrupted ``create`` resumes with the same client token.
The instances also carry ``htsec:lease-end`` as a tag, so a stray can be judged without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import botocore.exceptions

from htsec.annex.aws import Clients, aws_call, error_code
from htsec.annex.names import lease_key, validate_name
from htsec.errors import AnnexError, UsageError

__all__ = ["Lease", "delete", "list_leases", "load", "save"]

CREATING = "creating"
LAUNCHED = "launched"
ENDED = "ended"


@dataclass
class Lease:
    """One annex's lease."""

    annex: str
    client_token: str
    bucket: str
    kind: str  # "on-demand" | "spot-fleet"
    count: int
    lease_end: int
    idle: int
    created: int
    state: str = CREATING
    config_sha256: str = ""
    fleet_id: str | None = None
    instances: list[str] = field(default_factory=list)
    fetched_deleted: bool = False

    @classmethod
    def from_json(cls, data: bytes) -> Lease:
        try:
            raw: dict[str, Any] = json.loads(data)
            lease = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
            validate_name(lease.annex)
        except (ValueError, TypeError, KeyError, UsageError) as exc:
            raise AnnexError(f"lease record is unreadable: {exc}") from None
        return lease

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()


def load(aws: Clients, bucket: str, name: str) -> Lease | None:
    """The lease of annex ``name``, or None when it has none."""
    with aws_call(f"reading the lease of annex {name} (s3://{bucket}/{lease_key(name)})"):
        try:
            body = aws.s3.get_object(Bucket=bucket, Key=lease_key(name))["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                return None
            raise
    return Lease.from_json(body)


def save(aws: Clients, lease: Lease) -> None:
    with aws_call(f"writing the lease of annex {lease.annex}"):
        aws.s3.put_object(
            Bucket=lease.bucket,
            Key=lease_key(lease.annex),
            Body=lease.to_json(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )


def delete(aws: Clients, bucket: str, name: str) -> None:
    with aws_call(f"deleting the lease of annex {name}"):
        aws.s3.delete_object(Bucket=bucket, Key=lease_key(name))


def list_leases(aws: Clients, bucket: str) -> list[Lease]:
    """Every lease record in ``bucket``."""
    leases: list[Lease] = []
    with aws_call(f"listing the leases in s3://{bucket}/leases/"):
        pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="leases/")
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    for key in keys:
        name = key.removeprefix("leases/").removesuffix(".json")
        try:
            validate_name(name)
        except UsageError:
            continue
        lease = load(aws, bucket, name)
        if lease is not None:
            leases.append(lease)
    return leases
