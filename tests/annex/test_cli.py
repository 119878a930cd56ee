"""``htsec annex`` on the command line: clear one-line errors, setup's plan, create end to end."""

from __future__ import annotations

import json

import pytest

from tests.annex.moto_rig import MotoRig
from tests.conftest import run


def test_bad_name_is_a_usage_error_without_traceback() -> None:
    r = run("annex", "create", "my_annex", "--count", "1", "--bucket", "b", "--collector", "cm")
    assert r.code == 2 and "contains '_'" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_setup_then_create_status_off_from_the_cli(moto: MotoRig) -> None:
    dry = run("annex", "setup", "--bucket", "htsec-annex-cli", "--dry-run")
    assert dry.code == 0 and "would create" in dry.out, dry.err
    assert run("annex", "setup", "--bucket", "htsec-annex-cli").code == 0
    assert run("key", "create", "POOL").code == 0
    c = run(
        "annex", "create", "cli", "--count", "1", "--bucket", "htsec-annex-cli",
        "--collector", "cm.example.org", "--ami", moto.ami(), "--wait", "5",
    )  # fmt: skip
    assert c.code == 0, c.err
    assert "client token cli_" in c.out and "running" in c.err
    s = run("annex", "status", "--bucket", "htsec-annex-cli", "--json")
    assert json.loads(s.out)["annexes"][0]["instances"] == {"running": 1}
    o = run("annex", "off", "cli", "--bucket", "htsec-annex-cli")
    assert o.code == 0 and "terminated 1" in o.out
