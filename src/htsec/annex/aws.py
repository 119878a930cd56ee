"""boto3 clients for the annex, and AWS errors turned into messages a person can act on.

The endpoint, region and credentials come from boto3's usual sources (``AWS_PROFILE``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``, instance roles ...); ``--region`` overrides the region.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from htsec.errors import CloudError

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
    """The EC2, S3 and IAM clients of one session (created on first use)."""

    def __init__(self, region: str | None = None, **session_args: Any) -> None:
        self.session = boto3.session.Session(region_name=region, **session_args)
        self._config = botocore.config.Config(retries={"max_attempts": 4, "mode": "standard"})
        self._clients: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=self._config)  # type: ignore[call-overload]
        return self._clients[service]

    @property
    def region(self) -> str:
        region = self.session.region_name
        if not region:
            raise CloudError("no AWS region: pass --region or set AWS_REGION", aws_code="")
        return str(region)

    @property
    def ec2(self) -> Any:
        return self._client("ec2")

    @property
    def s3(self) -> Any:
        return self._client("s3")

    @property
    def iam(self) -> Any:
        return self._client("iam")

    @property
    def sts(self) -> Any:
        return self._client("sts")


Waiter = Callable[[float], None]
