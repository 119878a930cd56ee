"""The per-annex instance role and profile: each annex's instances read only their own object."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import botocore.exceptions

from htsec.annex import policies
from htsec.annex.aws import Clients, aws_call, error_code
from htsec.annex.names import role_name

__all__ = ["INLINE", "delete_role", "ensure_role"]

INLINE = "htsec-annex-instance"


@contextlib.contextmanager
def _tolerate(*codes: str) -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in codes:
            raise


def ensure_role(aws: Clients, bucket: str, name: str) -> str:
    """Create (or complete) the role and instance profile of annex ``name``; its name."""
    rn = role_name(name)
    iam = aws.iam
    with aws_call(f"creating the instance role {rn}"):
        with _tolerate("EntityAlreadyExists"):
            iam.create_role(
                RoleName=rn,
                AssumeRolePolicyDocument=policies.trust("ec2.amazonaws.com"),
                Description=f"htsec annex {name}: its instances' role",
                Tags=[{"Key": "htcondor:AnnexName", "Value": name}],
            )
        iam.put_role_policy(
            RoleName=rn, PolicyName=INLINE, PolicyDocument=policies.instance_policy(bucket, name)
        )
    with aws_call(f"creating the instance profile {rn}"):
        with _tolerate("EntityAlreadyExists"):
            iam.create_instance_profile(InstanceProfileName=rn)
        roles = iam.get_instance_profile(InstanceProfileName=rn)["InstanceProfile"]["Roles"]
        if not any(r["RoleName"] == rn for r in roles):
            iam.add_role_to_instance_profile(InstanceProfileName=rn, RoleName=rn)
    return rn


def delete_role(aws: Clients, name: str) -> None:
    """Remove the role and profile of annex ``name`` (what is already gone is fine)."""
    rn = role_name(name)
    iam = aws.iam
    with aws_call(f"deleting the instance profile and role {rn}"):
        with _tolerate("NoSuchEntity"):
            iam.remove_role_from_instance_profile(InstanceProfileName=rn, RoleName=rn)
        with _tolerate("NoSuchEntity"):
            iam.delete_instance_profile(InstanceProfileName=rn)
        with _tolerate("NoSuchEntity"):
            iam.delete_role_policy(RoleName=rn, PolicyName=INLINE)
        with _tolerate("NoSuchEntity"):
            iam.delete_role(RoleName=rn)
