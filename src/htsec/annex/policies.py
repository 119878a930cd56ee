"""The IAM policy documents of the annex (least privilege, one place)."""

from __future__ import annotations

import json
from typing import Any

from htsec.annex.names import TAG_CONFIGURED, TAG_NAME, config_key

__all__ = [
    "ADMIN_POLICY",
    "SPOT_FLEET_ROLE",
    "admin_policy",
    "instance_policy",
    "trust",
]

ADMIN_POLICY = "htsec-annex-admin"
SPOT_FLEET_ROLE = "htsec-annex-spot-fleet"


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def trust(service: str) -> str:
    """A role trust policy letting ``service`` (``ec2.amazonaws.com`` ...) assume the role."""
    return _doc({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def instance_policy(bucket: str, name: str) -> str:
    """What an instance of annex ``name`` may do: read its own configuration object (and
    nothing else in S3), find its launch, and mark itself configured."""
    return _doc(
        {
            "Sid": "OwnConfigurationOnly",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/{config_key(name)}",
        },
        {
            # These two EC2 actions support no resource-level permissions.
            "Sid": "FindMyLaunch",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeSpotFleetRequests"],
            "Resource": "*",
        },
        {
            "Sid": "MarkConfigured",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            # The conditions confine it: only instances of this annex, only this one tag key.
            "Resource": "*",
            "Condition": {
                "StringEquals": {f"ec2:ResourceTag/{TAG_NAME}": name},
                "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_CONFIGURED]},
            },
        },
    )


def admin_policy(bucket: str) -> str:
    """What ``htsec annex create/off/extend/status/lease check`` need, and no more."""
    return _doc(
        {
            "Sid": "Bucket",
            "Effect": "Allow",
            "Action": [
                "s3:CreateBucket",
                "s3:ListBucket",
                "s3:GetEncryptionConfiguration",
                "s3:PutEncryptionConfiguration",
                "s3:GetBucketPublicAccessBlock",
                "s3:PutBucketPublicAccessBlock",
                "s3:GetBucketPolicy",
                "s3:PutBucketPolicy",
            ],
            "Resource": f"arn:aws:s3:::{bucket}",
        },
        {
            "Sid": "Objects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{bucket}/*",
        },
        {
            "Sid": "Instances",
            "Effect": "Allow",
            "Action": [
                "ec2:RunInstances",
                "ec2:DescribeInstances",
                "ec2:DescribeImages",
                "ec2:TerminateInstances",
                "ec2:CreateTags",
                "ec2:RequestSpotFleet",
                "ec2:DescribeSpotFleetRequests",
                "ec2:CancelSpotFleetRequests",
            ],
            "Resource": "*",
        },
        {
            "Sid": "AnnexRoles",
            "Effect": "Allow",
            "Action": [
                "iam:CreateRole",
                "iam:GetRole",
                "iam:DeleteRole",
                "iam:PutRolePolicy",
                "iam:DeleteRolePolicy",
                "iam:AttachRolePolicy",
                "iam:CreateInstanceProfile",
                "iam:GetInstanceProfile",
                "iam:DeleteInstanceProfile",
                "iam:AddRoleToInstanceProfile",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:PassRole",
                "iam:CreatePolicy",
                "iam:GetPolicy",
            ],
            "Resource": [
                "arn:aws:iam::*:role/htsec-annex-*",
                "arn:aws:iam::*:instance-profile/htsec-annex-*",
                "arn:aws:iam::*:policy/htsec-annex-*",
            ],
        },
    )


def spot_fleet_policy() -> str:
    """What the spot-fleet service may do for annexes: launch, tag and end instances, and pass
    only the annexes' instance roles (narrower than AWS's AmazonEC2SpotFleetTaggingRole)."""
    return _doc(
        {
            "Effect": "Allow",
            "Action": [
                "ec2:RunInstances",
                "ec2:CreateTags",
                "ec2:TerminateInstances",
                "ec2:DescribeImages",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeSubnets",
                "ec2:RequestSpotInstances",
                "ec2:DescribeSpotInstanceRequests",
                "ec2:CancelSpotInstanceRequests",
            ],
            "Resource": "*",
        },
        {
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": "arn:aws:iam::*:role/htsec-annex-*",
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        },
    )
