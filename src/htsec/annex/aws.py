"""boto3 clients for the annex, and AWS errors turned into messages a person can act on.

The endpoint, region and credentials come from boto3's usual sources (``AWS_PROFILE``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``, instance roles ...); ``--region`` overrides the region.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from htsec.errors import CloudError

if TYPE_CHECKING:  # boto3-stubs, a development dependency: the clients' real types
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

__all__ = ["QUOTA_CODES", "Clients", "aws_call", "error_code"]

#: EC2 error codes that mean "a limit was reached": nothing more can be launched now.
QUOTA_CODES = frozenset(
    {
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "MaxSpotFleetRequestCountExceeded",
        "InsufficientInstanceCapacity",
        "SpotMaxPriceTooLow",
        "LimitExceeded",
    }
)
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


def error_code(exc: BaseException) -> str:
    """AWS's error code of a failed call ('' when it is not an AWS error)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Turn a failure of the AWS call ``what`` into a :class:`CloudError` that says what to do."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or code
        if code in _DENIED:
            hint = (
                "the AWS identity in use lacks this permission; attach the policy that "
                "'htsec annex setup --print-admin-policy' prints"
            )
        elif code in QUOTA_CODES:
            hint = "an EC2 limit was reached; ask for fewer instances or raise the quota"
        else:
            hint = "see the AWS message"
        raise CloudError(f"{what}: {code}: {message} ({hint})", aws_code=code) from None
    except botocore.exceptions.NoCredentialsError:
        raise CloudError(
            f"{what}: no AWS credentials (set AWS_PROFILE or the AWS_* variables, or run on "
            "an instance with a role)",
            aws_code="NoCredentials",
        ) from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise CloudError(f"{what}: {type(exc).__name__}: {exc}", aws_code="") from None


class Clients:
    """The EC2, S3, IAM and STS clients of one session (each created on first use)."""

    def __init__(self, region: str | None = None, **session_args: Any) -> None:
        self.session = boto3.session.Session(region_name=region, **session_args)
        self._config = botocore.config.Config(retries={"max_attempts": 4, "mode": "standard"})

    @property
    def region(self) -> str:
        region = self.session.region_name
        if not region:
            raise CloudError("no AWS region: pass --region or set AWS_REGION", aws_code="")
        return str(region)

    @functools.cached_property
    def ec2(self) -> EC2Client:
        return self.session.client("ec2", config=self._config)

    @functools.cached_property
    def s3(self) -> S3Client:
        return self.session.client("s3", config=self._config)

    @functools.cached_property
    def iam(self) -> IAMClient:
        return self.session.client("iam", config=self._config)

    @functools.cached_property
    def sts(self) -> STSClient:
        return self.session.client("sts", config=self._config)
