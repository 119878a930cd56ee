"""``htsec annex bootstrap`` on simulated instances: a network namespace per instance with an
IMDSv2 fake on 169.254.169.254 and fd00:ec2::254, moto (IAM enforced) behind a forwarded port.
Root only (CI runs as root); the namespaces are removed by the fixture whatever happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from htsec.annex import setup
from htsec.annex.aws import Clients
from htsec.annex.create import CreateRequest, create
from htsec.annex.names import TAG_CONFIGURED, config_key
from htsec.annex.record import Lease
from tests.annex.imds_fake import ImdsFake
from tests.annex.moto_rig import REGION, MotoRig
from tests.annex.netns import AWS_PORT, Instance

pytestmark = pytest.mark.slow  # namespaces and a bootstrap process each: 3-10 s a test

BUCKET = "htsec-annex-ns"
HTSEC = str(Path(sys.executable).with_name("htsec"))
FLEET = {"LaunchSpecifications": [{"InstanceType": "m5.large"}]}
Simulated = Callable[[str], tuple[Instance, ImdsFake]]
PROBE = (
    "import sys, urllib.request as u\n"
    "o = u.build_opener(u.ProxyHandler({}))\n"
    "r = u.Request(sys.argv[1] + '/latest/api/token', method='PUT',"
    " headers={'X-aws-ec2-metadata-token-ttl-seconds': '60'})\n"
    "try:\n    print(o.open(r, timeout=3).status)\n"
    "except Exception as e:\n    print(type(e).__name__); sys.exit(3)\n"
)


def _annex(moto: MotoRig, name: str, count: int = 1, **kw: object) -> Lease:
    aws = Clients(REGION)
    setup.run(setup.plan(aws, BUCKET), dry_run=False, report=lambda s: None)
    req = CreateRequest(name=name, bucket=BUCKET, collector="cm.example.org", count=count,
                        ami=moto.ami(), **kw)  # type: ignore[arg-type]  # fmt: skip
    return create(aws, req, lambda end: f"eyJ0.token-of-{name}.sig")


def _bootstrap(inst: Instance, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    root.mkdir(exist_ok=True)
    return inst.run(
        HTSEC, "annex", "bootstrap", "--config-root", str(root),
        "--poweroff-command", f"touch {root}/POWEROFF", "--attempts", "2", *extra,
        env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{AWS_PORT}"},
    )  # fmt: skip


def test_bootstrap_installs_only_its_annex_and_firewalls_metadata(
    moto: MotoRig, simulated: Simulated, tmp_path: Path
) -> None:
    alpha = _annex(moto, "alpha")
    _annex(moto, "alpha2")  # a name alpha is a prefix of: nothing of it may be touched
    inst, fake = simulated(alpha.instances[0])
    root = tmp_path / "condor"
    done = _bootstrap(inst, root)
    assert done.returncode == 0, done.stderr
    assert "joined annex alpha" in done.stdout, done.stderr
    token = root / "tokens.d" / "htsec-annex-alpha"
    assert token.read_text() == "eyJ0.token-of-alpha.sig\n"
    assert token.stat().st_mode & 0o777 == 0o600 and token.stat().st_uid == 0
    assert not (root / "tokens.d" / "htsec-annex-alpha2").exists()
    assert not (root / "POWEROFF").exists()
    own = (root / "config.d" / "01htsec-instance.config").read_text()
    assert f'EC2InstanceID = "{alpha.instances[0]}"' in own
    tags = moto.client("ec2").describe_instances(InstanceIds=alpha.instances)["Reservations"][0][
        "Instances"
    ][0]["Tags"]
    assert {"Key": TAG_CONFIGURED, "Value": "1"} in tags

    # Root reaches the metadata service, an unprivileged user does not (IPv4 and IPv6).
    for url in ("http://169.254.169.254", "http://[fd00:ec2::254]"):
        as_root = inst.run("/usr/bin/python3", "-c", PROBE, url)
        assert as_root.stdout.strip() == "200", (url, as_root.stdout, as_root.stderr)
        as_nobody = inst.run("/usr/bin/python3", "-c", PROBE, url, user=65534)
        assert as_nobody.returncode == 3 and as_nobody.stdout.strip() == "URLError", url
    rules = inst.run("nft", "list", "table", "inet", "htsec_annex").stdout
    assert "hook forward" in rules and "fd00:ec2::254" in rules and "skuid != 0" in rules

    # The instance's own credentials (from its metadata) read its object and no other annex's:
    # moto decides, by the per-annex role's policy.
    creds = fake.credentials
    s3 = Clients(REGION, aws_access_key_id=creds["AccessKeyId"],
                 aws_secret_access_key=creds["SecretAccessKey"],
                 aws_session_token=creds["Token"]).s3  # fmt: skip
    s3.get_object(Bucket=BUCKET, Key=config_key("alpha"))
    with pytest.raises(Exception, match="AccessDenied"):
        s3.get_object(Bucket=BUCKET, Key=config_key("alpha2"))
    with pytest.raises(Exception, match="AccessDenied"):
        s3.get_object(Bucket=BUCKET, Key="leases/alpha.json")

    # Idle and lease shutdown: HTCondor reads the knobs; the master's shutdown script powers off.
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
    # The image's condor_config reads config.d, as HTCondor's packaged one does.
    (tmp_path / "condor_config").write_text(f"LOCAL_CONFIG_DIR = {root / 'config.d'}\n")
    env["CONDOR_CONFIG"] = str(tmp_path / "condor_config")
    knobs = ("STARTD_NOCLAIM_SHUTDOWN", "DEFAULT_MASTER_SHUTDOWN_SCRIPT", "EC2InstanceID")
    code = (
        "import htcondor2, json, sys\n"
        "print(json.dumps({k: str(htcondor2.param.get(k)) for k in sys.argv[1:]}))"
    )
    p = json.loads(subprocess.run([sys.executable, "-c", code, *knobs], env=env,
                                  capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert p["EC2InstanceID"] == f'"{alpha.instances[0]}"'
    assert p["STARTD_NOCLAIM_SHUTDOWN"] == "900"
    hook = Path(p["DEFAULT_MASTER_SHUTDOWN_SCRIPT"])
    assert hook == root / "htsec-annex-poweroff"
    subprocess.run([str(hook)], check=True, timeout=10)  # what condor_master runs when it exits
    assert (root / "POWEROFF").exists()


def test_bootstrap_spot_fleet_waits_for_the_fleet_tag(
    moto: MotoRig, simulated: Simulated, tmp_path: Path
) -> None:
    lease = _annex(moto, "spot", count=0, slots=1, spot_fleet_config=FLEET)
    assert lease.fleet_id
    ids = [
        i["InstanceId"]
        for r in moto.client("ec2").describe_instances()["Reservations"]
        for i in r["Instances"]
    ]
    inst, fake = simulated(ids[0])
    root = tmp_path / "condor"
    root.mkdir()
    proc = inst.popen(
        HTSEC, "annex", "bootstrap", "--config-root", str(root), "--poweroff-command",
        f"touch {root}/POWEROFF", "--spot-wait", "60",
        env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{AWS_PORT}"},
    )  # fmt: skip
    # AWS tags fleet instances a little after they start: tag once the instance has looked
    # (its first DescribeInstances, counted by moto under its own credentials) and found none.
    deadline = time.monotonic() + 60
    while moto.calls[fake.credentials["AccessKeyId"]] < 1 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    moto.tag_fleet(lease.fleet_id)
    out, errs = proc.communicate(timeout=90)
    assert proc.returncode == 0, errs
    assert "joined annex spot" in out and "waiting" in errs
    assert (root / "tokens.d" / "htsec-annex-spot").exists()


def test_bootstrap_powers_off_when_no_fleet_tag_comes(
    moto: MotoRig, simulated: Simulated, tmp_path: Path
) -> None:
    _annex(moto, "spot", count=0, slots=1, spot_fleet_config=FLEET)
    iid = moto.client("ec2").describe_instances()["Reservations"][0]["Instances"][0]["InstanceId"]
    inst, _ = simulated(iid)
    done = _bootstrap(inst, tmp_path / "condor", "--spot-wait", "3")
    assert done.returncode == 1 and "powering off" in done.stderr
    assert (tmp_path / "condor" / "POWEROFF").exists()
    assert not (tmp_path / "condor" / "tokens.d").exists()


def test_bootstrap_refuses_a_replaced_tarball_and_powers_off(
    moto: MotoRig, simulated: Simulated, tmp_path: Path
) -> None:
    alpha = _annex(moto, "alpha")
    beta = moto.client("s3")
    _annex(moto, "beta")
    other = beta.get_object(Bucket=BUCKET, Key=config_key("beta"))["Body"].read()
    beta.put_object(Bucket=BUCKET, Key=config_key("alpha"), Body=other)  # foreign bytes
    inst, _ = simulated(alpha.instances[0])
    done = _bootstrap(inst, tmp_path / "condor")
    assert done.returncode == 1 and "does not match the launch's checksum" in done.stderr
    assert (tmp_path / "condor" / "POWEROFF").exists()
    assert not (tmp_path / "condor" / "tokens.d").exists()


def test_bootstrap_fails_closed_when_metadata_is_down(
    moto: MotoRig, simulated: Simulated, tmp_path: Path
) -> None:
    alpha = _annex(moto, "alpha")
    inst, fake = simulated(alpha.instances[0])
    fake.down = True
    done = _bootstrap(inst, tmp_path / "condor")
    assert done.returncode == 1 and "metadata session token" in done.stderr
    assert (tmp_path / "condor" / "POWEROFF").exists()
    # The firewall went up first, before anything else.
    assert "skuid" in inst.run("nft", "list", "table", "inet", "htsec_annex").stdout
