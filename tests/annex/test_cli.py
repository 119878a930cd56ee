"""``htsec annex`` on the command line: clear one-line errors, setup's plan, create end to end."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from htsec.annex import record, setup
from htsec.annex.aws import Clients
from htsec.annex.names import config_key
from tests.annex.moto_rig import REGION, MotoRig
from tests.conftest import run


def test_bad_name_is_a_usage_error_without_traceback() -> None:
    r = run("annex", "create", "my_annex", "--count", "1", "--bucket", "b", "--collector", "cm")
    assert r.code == 2 and "contains '_'" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_setup_plan_then_create_from_the_cli(moto: MotoRig, authority: object) -> None:
    dry = run("annex", "setup", "--bucket", "htsec-annex-cli", "--dry-run")
    assert dry.code == 0 and "would create" in dry.out, dry.err
    aws = Clients(REGION)
    setup.run(setup.plan(aws, "htsec-annex-cli"), dry_run=False, report=lambda s: None)
    c = run(
        "annex", "create", "cli", "--count", "1", "--bucket", "htsec-annex-cli",
        "--collector", "cm.example.org", "--ami", moto.ami(), "--wait", "5",
    )  # fmt: skip
    assert c.code == 0, c.err
    assert "client token cli_" in c.out and "running" in c.err  # the progress display
    lease = record.load(aws, "htsec-annex-cli", "cli")
    assert lease is not None and lease.state == "launched"
    # The token in the uploaded configuration: the annex's identity, three authorizations,
    # expiring at the lease end.
    data = moto.client("s3").get_object(Bucket="htsec-annex-cli", Key=config_key("cli"))
    with tarfile.open(fileobj=io.BytesIO(data["Body"].read())) as tar:
        member = tar.extractfile("tokens.d/htsec-annex-cli")
        assert member is not None
        token = member.read().decode().strip()
    verified = authority.verify(token)  # type: ignore[attr-defined]
    assert verified.subject == "annex-cli@pool.example.org"
    assert verified.authorizations == ("READ", "ADVERTISE_STARTD", "ADVERTISE_MASTER")
    assert verified.exp == lease.lease_end
    st = run("annex", "status", "--bucket", "htsec-annex-cli", "--json")
    shown = json.loads(st.out)
    assert shown["annexes"][0]["instances"] == {"running": 1} and shown["strays"] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="htsec annex bootstrap runs as root only")
def test_bootstrap_failure_names_the_ipv6_metadata_endpoint_as_it_is(tmp_path: Path) -> None:
    # No metadata service here: bootstrap fails closed. The endpoint is printed as given,
    # not eaten as console markup ("[fd00:ec2::254]" once vanished, leaving "http://:9").
    r = run(
        "annex", "bootstrap", "--metadata", "http://[fd00:ec2::254]:9", "--attempts", "1",
        "--config-root", str(tmp_path), "--poweroff-command", "true",
    )  # fmt: skip
    assert r.code == 1 and "Traceback" not in r.err
    assert "metadata service http://[fd00:ec2::254]:9 unreachable" in r.err, r.err
    assert "powering off (fail closed)" in r.err


def test_a_collector_or_owner_htcondor_cannot_read_is_refused_before_any_aws_call() -> None:
    # No AWS at this endpoint: the bad value must be named, not an unreachable endpoint.
    r = run(
        "annex", "create", "burst", "--count", "1", "--bucket", "b", "--ami", "ami-1",
        "--region", "us-east-1", "--collector", "cm.example.org", "--owner", 'a"b',
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
             "AWS_SECRET_ACCESS_KEY": "x"},
    )  # fmt: skip
    assert r.code == 1 and "Traceback" not in r.err
    assert "'a\"b' is not a host name or user name" in r.err, r.err
    assert "127.0.0.1:9" not in r.err
