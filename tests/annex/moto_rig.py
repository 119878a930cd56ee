"""moto in server mode (in this process, on 127.0.0.1) with IAM enforcement on, and the thin
adapter for what moto lacks (TESTING.md, "AWS").

The adapter, and only it, changes moto:

1. ``DescribeInstances`` filter ``client-token``: moto keeps the token but cannot filter on it;
   one entry in moto's filter table maps it to the attribute moto already stores.
2. Spot fleets: moto drops ``SpotFleetRequestConfig.ClientToken`` (the adapter keeps it and
   echoes it in ``DescribeSpotFleetRequests``) and gives the fleet's instances no instance
   profile (the adapter associates the launch specification's).
3. ``RunInstances`` launches as many as EC2 would (up to ``MaxCount``; moto launches
   ``MinCount``), each with the instance profile (moto gives it to the first only).
4. The ``aws:ec2spot:fleet-request-id`` tag: AWS adds it to a fleet's instances a little after
   they start; moto never does. :meth:`MotoRig.tag_fleet` adds it when a test says so.
5. A quota: ``QUOTA["instances"]`` makes RunInstances launch at most that many running
   instances and answer ``InstanceLimitExceeded`` below ``MinCount``, as EC2 does.

IAM enforcement (``INITIAL_NO_AUTH_ACTION_COUNT = 0`` after the admin user exists) makes moto
judge every call by the caller's policies, so "an instance of annex A cannot read annex B's
object" is decided by moto evaluating the per-annex role's policy, not by the test.
Instance credentials come from moto's STS backend directly (moto's AssumeRole over HTTP fails
under enforcement), exactly as EC2 hands a role's credentials to the metadata service.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
from moto import settings as moto_settings
from moto.core.responses import ActionAuthenticatorMixin
from moto.ec2 import utils as ec2_utils
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.spot_requests import SpotFleetRequest
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.responses.spot_fleets import SpotFleets
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

ACCOUNT = "123456789012"
REGION = "us-east-1"
_pending = threading.local()
#: Adapter 5: an instance quota (EC2 has one per account; moto none). None: unlimited.
QUOTA: dict[str, int | None] = {"instances": None}


class InstanceLimitExceeded(EC2ClientError):
    code = "InstanceLimitExceeded"


_installed = False


def install_adapter() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    ec2_utils.filter_dict_attribute_mapping["client-token"] = "client_token"

    original_run = InstanceResponse.run_instances

    def run_instances(self: InstanceResponse) -> Any:
        most = self._get_param("MaxCount")
        if QUOTA["instances"] is not None and most:
            running = sum(
                1
                for r in self.ec2_backend.reservations.values()
                for i in r.instances
                if i.state in ("pending", "running")
            )
            room = QUOTA["instances"] - running
            if room < int(self._get_param("MinCount") or 1):
                raise InstanceLimitExceeded(
                    f"You have requested more instances ({most}) than your current instance "
                    f"limit of {QUOTA['instances']} allows"
                )
            most = min(int(most), room)
        if most:
            if self.automated_parameter_parsing:
                self.params["MinCount"] = most
            else:
                self.querystring["MinCount"] = [str(most)]
        result = original_run(self)
        profile = self._get_param("IamInstanceProfile.Name")
        for inst in result.result.instances[1:]:  # moto gives only the first its profile
            if profile:
                self.ec2_backend.associate_iam_instance_profile(
                    instance_id=inst.id, iam_instance_profile_name=profile
                )
        return result

    InstanceResponse.run_instances = run_instances  # type: ignore[method-assign]
    original_request = SpotFleets.request_spot_fleet

    def request_spot_fleet(self: SpotFleets) -> Any:
        cfg = self._get_param("SpotFleetRequestConfig", {})
        _pending.token = cfg.get("ClientToken")
        try:
            result = original_request(self)
        finally:
            _pending.token = None
        # moto keeps the launch specification's instance profile but associates it with none
        # of the fleet's instances; EC2 gives it to each.
        specs = cfg.get("LaunchSpecifications") or [{}]
        profile = (specs[0].get("IamInstanceProfile") or {}).get("Name")
        sfr = self.ec2_backend.spot_fleet_requests[result.result["SpotFleetRequestId"]]
        for req in sfr.spot_requests:
            if profile and getattr(req, "instance", None):
                self.ec2_backend.associate_iam_instance_profile(
                    instance_id=req.instance.id, iam_instance_profile_name=profile
                )
        return result

    SpotFleets.request_spot_fleet = request_spot_fleet  # type: ignore[method-assign]
    original_init = SpotFleetRequest.__init__

    def init(self: SpotFleetRequest, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.htsec_client_token = getattr(_pending, "token", None)  # type: ignore[attr-defined]

    SpotFleetRequest.__init__ = init  # type: ignore[method-assign]
    original_config = SpotFleetRequest.spot_fleet_request_config.fget
    assert original_config is not None

    def config(self: SpotFleetRequest) -> dict[str, Any]:
        cfg = dict(original_config(self))
        token = getattr(self, "htsec_client_token", None)
        if token:
            cfg["ClientToken"] = token
        return cfg

    SpotFleetRequest.spot_fleet_request_config = property(config)  # type: ignore[method-assign,assignment]


class MotoRig:
    """One moto server for the session; :meth:`reset` gives each test a clean account."""

    def __init__(self) -> None:
        install_adapter()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.port = int(port)
        self.url = f"http://{host}:{port}"
        self.calls: Counter[str] = Counter()  # AWS calls by access key id
        self.key_owner: dict[str, str] = {}  # access key id -> instance id
        app = self.server._server.app  # type: ignore[union-attr]

        def counting(environ: dict[str, Any], start: Callable[..., Any]) -> Any:
            auth = environ.get("HTTP_AUTHORIZATION", "")
            if "Credential=" in auth:
                self.calls[auth.split("Credential=", 1)[1].split("/", 1)[0]] += 1
            return app(environ, start)

        self.server._server.app = counting  # type: ignore[union-attr]
        self.admin: dict[str, str] = {}
        self._ami = ""
        self.reset()

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        """A fresh account with an admin user (every permission) and enforcement on."""
        import urllib.request

        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10
        ).read()
        iam = self.client("iam", key="bootstrap", secret="bootstrap")
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        k = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = {"key": k["AccessKeyId"], "secret": k["SecretAccessKey"]}
        self.calls.clear()
        self.key_owner.clear()
        QUOTA["instances"] = None
        ActionAuthenticatorMixin.request_count = 0
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0

    def user(self, name: str, actions: list[str]) -> dict[str, str]:
        """An IAM user allowed only ``actions`` (for AccessDenied tests)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name,
            PolicyName="only",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                }
            ),
        )
        k = iam.create_access_key(UserName=name)["AccessKey"]
        return {"key": k["AccessKeyId"], "secret": k["SecretAccessKey"]}

    def env(self, creds: dict[str, str] | None = None) -> dict[str, str]:
        c = creds or self.admin
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": c["key"],
            "AWS_SECRET_ACCESS_KEY": c["secret"],
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str, *, key: str | None = None, secret: str | None = None) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key or self.admin["key"],
            aws_secret_access_key=secret or self.admin["secret"],
        )

    def ami(self) -> str:
        """An image id moto knows (its list is fixed; read once: DescribeImages is slow)."""
        if not self._ami:
            images = self.client("ec2").describe_images(Owners=["amazon"])["Images"]
            self._ami = str(images[0]["ImageId"])
        return self._ami

    def instance_credentials(self, instance_id: str) -> tuple[str, dict[str, Any]]:
        """The role name and temporary credentials EC2 would give ``instance_id``."""
        inst = self.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0][
            "Instances"
        ][0]
        profile = inst["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
        role = self.client("iam").get_instance_profile(InstanceProfileName=profile)[
            "InstanceProfile"
        ]["Roles"][0]
        assumed = sts_backends[ACCOUNT]["aws"].assume_role(
            region_name=REGION,
            role_session_name=instance_id,
            role_arn=role["Arn"],
            policy=None,
            duration=3600,
            external_id=None,
        )
        self.key_owner[assumed.access_key_id] = instance_id
        return role["RoleName"], {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": assumed.access_key_id,
            "SecretAccessKey": assumed.secret_access_key,
            "Token": assumed.session_token,
            "Expiration": "2099-01-01T00:00:00Z",
        }

    def tag_fleet(self, fleet_id: str) -> list[str]:
        """Adapter 3: tag the fleet's instances as AWS does a little after they start."""
        backend = ec2_backends[ACCOUNT][REGION]
        sfr = backend.spot_fleet_requests[fleet_id]
        ids = [req.instance.id for req in sfr.spot_requests if getattr(req, "instance", None)]
        if ids:
            self.client("ec2").create_tags(
                Resources=ids, Tags=[{"Key": "aws:ec2spot:fleet-request-id", "Value": fleet_id}]
            )
        return ids
