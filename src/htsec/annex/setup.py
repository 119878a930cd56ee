"""``htsec annex setup``: the account-wide pieces every annex uses, created idempotently.

A bucket for the configuration objects and lease records (default encryption, every public
access blocked), the spot-fleet role, and the managed policy ``htsec-annex-admin``
that whoever runs ``htsec annex create``/``off``/``lease check`` needs. Each annex gets its own
instance role and profile at create time (so its instances read only its own object).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from htsec.annex import policies
from htsec.annex.aws import Clients, aws_call, error_code

if TYPE_CHECKING:  # boto3-stubs (development only)
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import (
        PublicAccessBlockConfigurationTypeDef,
        ServerSideEncryptionConfigurationTypeDef,
    )

__all__ = ["Step", "plan", "run"]


@dataclass
class Step:
    """One piece of the setup: ``done`` tells whether it is in place, ``make`` puts it there."""

    what: str
    done: Callable[[], bool]
    make: Callable[[], object]
    state: str = "unknown"


def _exists(call: Callable[[], object], missing: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        import botocore.exceptions

        try:
            call()
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in missing:
                return False
            raise
        return True

    return check


def plan(aws: Clients, bucket: str) -> list[Step]:
    """The steps of the setup for ``bucket`` (nothing is called yet)."""
    s3, iam = aws.s3, aws.iam
    account_policy = f"arn:aws:iam::{{account}}:policy/{policies.ADMIN_POLICY}"

    def create_bucket() -> None:
        if aws.region == "us-east-1":  # the one region that takes no location constraint
            s3.create_bucket(Bucket=bucket)
        else:  # any region name: AWS, not the stubs' list of today's regions, says if it exists
            region = cast("BucketLocationConstraintType", aws.region)
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )

    encryption: ServerSideEncryptionConfigurationTypeDef = {
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    }
    block: PublicAccessBlockConfigurationTypeDef = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }

    def encrypted() -> bool:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        return bool(rules.get("Rules"))

    def blocked() -> bool:
        got = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        return all(got.get(k) for k in block)

    def make_fleet_role() -> None:
        iam.create_role(
            RoleName=policies.SPOT_FLEET_ROLE,
            AssumeRolePolicyDocument=policies.trust("spotfleet.amazonaws.com"),
            Description="htsec annex: lets spot fleets launch and tag annex instances",
        )
        iam.put_role_policy(
            RoleName=policies.SPOT_FLEET_ROLE,
            PolicyName="htsec-annex-spot-fleet",
            PolicyDocument=policies.spot_fleet_policy(),
        )

    def admin_arn() -> str:
        account = aws.sts.get_caller_identity()["Account"]
        return account_policy.format(account=account)

    no_bucket = {"404", "NoSuchBucket", "NotFound"}
    return [
        Step(
            f"S3 bucket {bucket}",
            _exists(lambda: s3.head_bucket(Bucket=bucket), no_bucket),
            create_bucket,
        ),
        Step(
            f"default encryption (SSE-S3) on {bucket}",
            _guard(encrypted, {"ServerSideEncryptionConfigurationNotFoundError", *no_bucket}),
            lambda: s3.put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration=encryption
            ),
        ),
        Step(
            f"public access blocked on {bucket}",
            _guard(blocked, {"NoSuchPublicAccessBlockConfiguration", *no_bucket}),
            lambda: s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block),
        ),
        Step(
            f"IAM role {policies.SPOT_FLEET_ROLE} (spot fleets)",
            _exists(lambda: iam.get_role(RoleName=policies.SPOT_FLEET_ROLE), {"NoSuchEntity"}),
            make_fleet_role,
        ),
        Step(
            f"IAM policy {policies.ADMIN_POLICY} (for whoever runs htsec annex)",
            _exists(lambda: iam.get_policy(PolicyArn=admin_arn()), {"NoSuchEntity"}),
            lambda: iam.create_policy(
                PolicyName=policies.ADMIN_POLICY,
                PolicyDocument=policies.admin_policy(bucket),
                Description="htsec annex: create, end and check annexes",
            ),
        ),
    ]


def _guard(check: Callable[[], bool], missing: set[str]) -> Callable[[], bool]:
    def guarded() -> bool:
        import botocore.exceptions

        try:
            return check()
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in missing:
                return False
            raise

    return guarded


def run(steps: list[Step], *, dry_run: bool, report: Callable[[Step], None]) -> int:
    """Check each step and (unless ``dry_run``) make the missing ones; returns how many were
    (or would be) made. ``report`` is called once per step with its final state."""
    made = 0
    for step in steps:
        with aws_call(f"checking {step.what}"):
            done = step.done()
        if done:
            step.state = "exists"
        elif dry_run:
            step.state = "would create"
            made += 1
        else:
            with aws_call(f"creating {step.what}"):
                step.make()
            step.state = "created"
            made += 1
        report(step)
    return made


def admin_policy_json(bucket: str) -> str:
    """The admin policy, indented for people."""
    return json.dumps(json.loads(policies.admin_policy(bucket)), indent=2)
