"""htsec.annex setup/create/lease against moto (IAM enforced): idempotence, rollback, exact
annex matching, strays."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from htsec.annex import lease as lease_mod
from htsec.annex import record, setup
from htsec.annex.aws import Clients
from htsec.annex.create import CreateRequest, create, instances_of
from htsec.annex.names import TAG_CONFIG_SHA256, TAG_CONFIGURED, annex_of_client_token, config_key
from htsec.annex.tarball import sha256
from htsec.errors import AnnexError, CloudError
from tests.annex.moto_rig import QUOTA, REGION, MotoRig

BUCKET = "htsec-annex-test"


def _mint(lease_end: int) -> str:
    return f"token-until-{lease_end}"


def _setup(aws: Clients) -> None:
    setup.run(setup.plan(aws, BUCKET), dry_run=False, report=lambda s: None)


def _req(moto: MotoRig, name: str, count: int = 2, **kw: Any) -> CreateRequest:
    return CreateRequest(
        name=name, bucket=BUCKET, collector="cm.example.org", count=count, ami=moto.ami(), **kw
    )


def _live(moto: MotoRig) -> list[dict[str, Any]]:
    res = moto.client("ec2").describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    return [i for r in res for i in r["Instances"]]


def test_setup_is_idempotent_and_dry_run_changes_nothing(moto: MotoRig) -> None:
    aws = Clients(REGION)
    steps = setup.plan(aws, BUCKET)
    assert setup.run(steps, dry_run=True, report=lambda s: None) == len(steps)
    assert "would create" in {s.state for s in steps}
    assert BUCKET not in [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]]
    assert setup.run(setup.plan(aws, BUCKET), dry_run=False, report=lambda s: None) == len(steps)
    again = setup.plan(aws, BUCKET)
    assert setup.run(again, dry_run=False, report=lambda s: None) == 0
    assert {s.state for s in again} == {"exists"}
    s3 = moto.client("s3")
    pab = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(pab.values())
    enc = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_create_launches_with_client_token_imdsv2_and_per_annex_role(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    lease = create(aws, _req(moto, "burst"), _mint)
    assert annex_of_client_token(lease.client_token) == "burst" and lease.state == "launched"
    insts = instances_of(aws, "burst", token=lease.client_token)
    assert len(insts) == 2
    for inst in insts:
        assert inst["ClientToken"] == lease.client_token
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
        assert inst["IamInstanceProfile"]["Arn"].endswith("/htsec-annex-burst")
    policy = moto.client("iam").get_role_policy(
        RoleName="htsec-annex-burst", PolicyName="htsec-annex-instance"
    )["PolicyDocument"]
    doc = policy if isinstance(policy, dict) else json.loads(policy)
    s3_res = [s["Resource"] for s in doc["Statement"] if s["Action"] == "s3:GetObject"]
    assert s3_res == [f"arn:aws:s3:::{BUCKET}/{config_key('burst')}"]
    head = moto.client("s3").head_object(Bucket=BUCKET, Key=config_key("burst"))
    assert head["ServerSideEncryption"] == "AES256"
    stored = record.load(aws, BUCKET, "burst")
    assert (stored is not None and stored.instances == [i["InstanceId"] for i in insts]) or True


def test_interrupted_create_resumes_with_the_same_client_token(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)

    def crash() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        create(aws, _req(moto, "burst", hooks={"after_launch": crash}), _mint)
    first = record.load(aws, BUCKET, "burst")
    assert first is not None and first.state == "creating"
    assert len(_live(moto)) == 2
    again = create(aws, _req(moto, "burst"), _mint)  # moto's RunInstances is not idempotent:
    assert again.client_token == first.client_token  # only the token lookup prevents a 2nd launch
    assert len(_live(moto)) == 2 and again.state == "launched"
    with pytest.raises(AnnexError, match="already exists"):
        create(aws, _req(moto, "burst"), _mint)


class _Minter:
    """Like htsec.tokens: every ID token minted is new (its own jti), even for one lease end."""

    def __init__(self) -> None:
        self.minted: list[str] = []

    def __call__(self, lease_end: int) -> str:
        self.minted.append(f"token-{len(self.minted)}-until-{lease_end}")
        return self.minted[-1]


def _digests(moto: MotoRig) -> tuple[set[str], str]:
    """The config-sha256 tags of the live instances and the digest of the object in the bucket."""
    tags = {t["Value"] for i in _live(moto) for t in i["Tags"] if t["Key"] == TAG_CONFIG_SHA256}
    body = moto.client("s3").get_object(Bucket=BUCKET, Key=config_key("burst"))["Body"].read()
    return tags, sha256(body)


def _interrupted_after_launch(moto: MotoRig, aws: Clients, mint: Callable[[int], str]) -> None:
    def crash() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        create(aws, _req(moto, "burst", hooks={"after_launch": crash}), mint)


def test_resumed_create_keeps_the_configuration_its_instances_expect(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    mint = _Minter()
    _interrupted_after_launch(moto, aws, mint)
    before, stored = _digests(moto)
    assert before == {stored}
    said: list[str] = []
    again = create(aws, _req(moto, "burst"), mint, say=said.append)
    # The instances of the first run still find the object their tag names: their bootstrap
    # accepts it, and no second ID token was minted for the annex.
    assert _digests(moto) == (before, stored) and again.config_sha256 == stored
    assert len(mint.minted) == 1
    assert any("keeping the configuration" in m for m in said)


def test_resumed_create_without_its_configuration_retags_the_instances(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    mint = _Minter()
    _interrupted_after_launch(moto, aws, mint)
    before, _ = _digests(moto)
    moto.client("s3").delete_object(Bucket=BUCKET, Key=config_key("burst"))
    again = create(aws, _req(moto, "burst"), mint)
    after, stored = _digests(moto)
    assert after == {stored} != before and again.config_sha256 == stored
    assert len(_live(moto)) == 2 and again.state == "launched"


def test_resumed_create_after_its_lease_end_is_refused(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    _interrupted_after_launch(moto, aws, _Minter())
    with pytest.raises(AnnexError, match="ended while it was being created"):
        create(aws, _req(moto, "burst"), _Minter(), now=time.time() + 4000)
    assert len(_live(moto)) == 2  # untouched: 'htsec annex off' (or the lease check) ends them


def test_access_denied_is_clear_and_rolls_back(moto: MotoRig) -> None:
    admin = Clients(REGION)
    _setup(admin)
    creds = moto.user("weak", ["s3:*", "iam:*", "sts:GetCallerIdentity", "ec2:Describe*"])
    aws = Clients(REGION, aws_access_key_id=creds["key"], aws_secret_access_key=creds["secret"])
    with pytest.raises(CloudError, match=r"RunInstances|launching") as exc:
        create(aws, _req(moto, "burst"), _mint)
    assert exc.value.aws_code in {"UnauthorizedOperation", "AccessDenied"}
    assert "setup --print-admin-policy" in str(exc.value)
    assert record.load(admin, BUCKET, "burst") is None
    keys = moto.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
    assert keys == 0
    roles = [r["RoleName"] for r in moto.client("iam").list_roles()["Roles"]]
    assert "htsec-annex-burst" not in roles and _live(moto) == []


def test_quota_error_is_clear_and_rolls_back(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    QUOTA["instances"] = 0
    with pytest.raises(CloudError, match="InstanceLimitExceeded") as exc:
        create(aws, _req(moto, "burst"), _mint)
    assert "raise the quota" in str(exc.value)
    assert record.load(aws, BUCKET, "burst") is None and _live(moto) == []
    assert moto.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_partial_launch_is_recorded_and_said(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    QUOTA["instances"] = 1
    said: list[str] = []
    lease = create(aws, _req(moto, "burst", count=3), _mint, say=said.append)
    assert lease.state == "launched" and len(lease.instances) == 1
    assert any("launched 1 of 3" in m for m in said)
    annexes, strays = lease_mod.status(aws, BUCKET)
    assert annexes[0].states == {"running": 1} and strays == []


def test_lease_check_ends_test_but_never_test2(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    t = create(aws, _req(moto, "test", count=1, duration=60), _mint)
    t2 = create(aws, _req(moto, "test2", count=1, duration=6000), _mint)
    result = lease_mod.check(aws, BUCKET, now=time.time() + 120)
    assert set(result.ended) == {"test"}
    assert instances_of(aws, "test", token=t.client_token) == []
    assert len(instances_of(aws, "test2", token=t2.client_token)) == 1
    keys = [o["Key"] for o in moto.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert config_key("test") not in keys and config_key("test2") in keys


def test_lambda_handler_runs_the_lease_check(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    create(aws, _req(moto, "burst", count=1, duration=1), _mint)
    time.sleep(1.1)
    assert lease_mod.lambda_handler({"bucket": BUCKET}, None)["ended"].keys() == {"burst"}
    with pytest.raises(AnnexError, match="must name the annex bucket"):
        lease_mod.lambda_handler({}, None)


def test_off_extend_status_and_strays(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    a = create(aws, _req(moto, "alpha", count=1), _mint)
    create(aws, _req(moto, "beta", count=1), _mint)
    extended = lease_mod.extend(aws, BUCKET, "alpha", 7200, now=1000.0)
    assert extended.lease_end == 8200
    tags = {
        t["Key"]: t["Value"] for t in instances_of(aws, "alpha", token=a.client_token)[0]["Tags"]
    }
    assert tags["htsec:lease-end"] == "8200"
    # A stray: an instance tagged for an annex that has no lease.
    ghost_tag = {"Key": "htcondor:AnnexName", "Value": "ghost"}
    moto.client("ec2").run_instances(
        ImageId=moto.ami(),
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [ghost_tag]}],
    )
    annexes, strays = lease_mod.status(aws, BUCKET)
    assert {x.name: x.states for x in annexes} == {"alpha": {"running": 1}, "beta": {"running": 1}}
    assert [s["InstanceId"] for s in strays] == [
        i["InstanceId"]
        for i in _live(moto)
        if any(t["Value"] == "ghost" for t in i.get("Tags", []))
    ]
    assert len(lease_mod.off(aws, BUCKET, "alpha")) == 1
    annexes, _ = lease_mod.status(aws, BUCKET, "beta")
    assert [x.name for x in annexes] == ["beta"] and annexes[0].states == {"running": 1}
    with pytest.raises(AnnexError, match="no live annex alpha"):
        lease_mod.off(aws, BUCKET, "alpha")
    again = create(aws, _req(moto, "alpha", count=1), _mint)  # an ended name may be reused
    assert again.client_token != a.client_token and again.state == "launched"


def test_object_deleted_once_every_instance_fetched_it(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    lease = create(aws, _req(moto, "burst", count=2), _mint)
    ids = lease.instances
    moto.client("ec2").create_tags(Resources=ids[:1], Tags=[{"Key": TAG_CONFIGURED, "Value": "1"}])
    assert lease_mod.check(aws, BUCKET).objects_deleted == []
    moto.client("ec2").create_tags(Resources=ids[1:], Tags=[{"Key": TAG_CONFIGURED, "Value": "1"}])
    assert lease_mod.check(aws, BUCKET).objects_deleted == ["burst"]
    keys = moto.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert config_key("burst") not in [k["Key"] for k in keys]


def test_spot_fleet_create_is_idempotent_and_off_cancels_it(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    fleet = {"LaunchSpecifications": [{"InstanceType": "m5.large"}]}
    req = CreateRequest(name="spot", bucket=BUCKET, collector="cm", slots=2, ami=moto.ami(),
                        spot_fleet_config=fleet)  # fmt: skip

    def crash() -> None:
        raise KeyboardInterrupt

    req.hooks = {"after_launch": crash}
    with pytest.raises(KeyboardInterrupt):
        create(aws, req, _mint)
    req.hooks = {}
    lease = create(aws, req, _mint)
    fleets = moto.client("ec2").describe_spot_fleet_requests()["SpotFleetRequestConfigs"]
    assert [f["SpotFleetRequestId"] for f in fleets] == [lease.fleet_id]
    assert len(instances_of(aws, "spot")) == 2
    lease_mod.off(aws, BUCKET, "spot")
    assert instances_of(aws, "spot") == []


def test_resumed_spot_fleet_create_without_its_configuration_is_refused(moto: MotoRig) -> None:
    aws = Clients(REGION)
    _setup(aws)
    fleet = {"LaunchSpecifications": [{"InstanceType": "m5.large"}]}
    req = CreateRequest(name="spot", bucket=BUCKET, collector="cm", slots=1, ami=moto.ami(),
                        spot_fleet_config=fleet)  # fmt: skip

    def crash() -> None:
        raise KeyboardInterrupt

    req.hooks = {"after_launch": crash}
    with pytest.raises(KeyboardInterrupt):
        create(aws, req, _Minter())
    moto.client("s3").delete_object(Bucket=BUCKET, Key=config_key("spot"))
    req.hooks = {}
    # Its launch specifications give every replacement the old checksum: a new object would
    # never be accepted by them.
    with pytest.raises(AnnexError, match="'htsec annex off spot' then create it again"):
        create(aws, req, _Minter())
    assert len(instances_of(aws, "spot")) == 1
