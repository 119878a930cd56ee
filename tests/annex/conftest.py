"""Fixtures of the annex tests: the moto rig (one server, a clean account per test)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.annex.imds_fake import ImdsFake
from tests.annex.moto_rig import ACCOUNT, REGION, MotoRig
from tests.annex.netns import Instance


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoRig]:
    rig = MotoRig()
    yield rig
    rig.stop()


@pytest.fixture
def moto(moto_server: MotoRig, monkeypatch: pytest.MonkeyPatch) -> MotoRig:
    """A clean account; the admin's credentials and the endpoint in the environment."""
    moto_server.reset()
    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


@pytest.fixture
def simulated(moto: MotoRig) -> Iterator[Callable[[str], tuple[Instance, ImdsFake]]]:
    """Make a namespace with an IMDSv2 fake for a moto instance id; all removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and nftables need root (CI runs as root)")
    if shutil.which("nft") is None or shutil.which("setpriv") is None:
        pytest.skip("needs nft (Debian nftables) and setpriv (util-linux)")
    made: list[tuple[Instance, ImdsFake]] = []

    def make(instance_id: str) -> tuple[Instance, ImdsFake]:
        inst = Instance(moto.port)
        try:
            desc = moto.client("ec2").describe_instances(InstanceIds=[instance_id])
            i = desc["Reservations"][0]["Instances"][0]
            role, creds = moto.instance_credentials(instance_id)
            fake = ImdsFake(
                instance_id=instance_id,
                region=REGION,
                account=ACCOUNT,
                role=role,
                credentials=creds,
                profile_arn=i["IamInstanceProfile"]["Arn"],
                tags={t["Key"]: t["Value"] for t in i.get("Tags", [])},
            )
            for sock in inst.metadata_sockets():
                fake.serve(sock)
        except BaseException:
            inst.close()
            raise
        made.append((inst, fake))
        return inst, fake

    try:
        yield make
    finally:
        for inst, fake in made:
            fake.stop()
            inst.close()
