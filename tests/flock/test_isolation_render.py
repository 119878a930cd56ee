"""htsec flock isolation render: the rules it prints, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from htsec.errors import UsageError
from htsec.flock.isolation import GatewaySpec, SlotSpec, bwrap_argv, render_gateway, render_slot
from tests.conftest import run


def test_isolation_slot_rules_reject_lan_host_and_metadata() -> None:
    cmds, script = render_slot(
        SlotSpec("s1", "em1.2512", "10.27.2.5/24", "10.27.2.1", ("10.0.0.0/8",), ("192.0.2.7",))
    )
    assert ["ip", "netns", "add", "htsec-flock-s1"] in cmds
    assert any("macvlan" in c and "private" in c for c in cmds)
    for rule in ("meta nfproto ipv6 reject", "ip daddr 169.254.0.0/16 reject",
                 "ip6 daddr fd00:ec2::254 reject",
                 "ip daddr { 10.0.0.0/8 } reject", "ip daddr { 192.0.2.7/32 } reject"):  # fmt: skip
        assert rule in script


def test_isolation_gateway_masquerades_only_the_vlan_to_the_wan() -> None:
    s = render_gateway(GatewaySpec("vl", "wan0", "10.27.2.0/24", ("10.0.0.0/8",)))
    assert 'ip saddr 10.27.2.0/24 oifname "wan0" masquerade' in s
    assert 'iifname "vl" oifname != "wan0" drop' in s and 'iifname "vl" drop' in s
    assert 'iifname "vl" meta nfproto ipv6 drop' in s  # IPv6 would leave without NAT


def test_isolation_gateway_forwards_only_the_vlans_own_source_addresses() -> None:
    """A sender on the VLAN with a source outside the flocking subnet (spoofed: root on an
    execute host, or any other machine on the VLAN) would be forwarded to the WAN un-NATed."""
    s = render_gateway(GatewaySpec("vl", "wan0", "10.27.2.0/24"))
    fwd = s[s.index("chain forward") : s.index("chain input")]
    spoof = 'iifname "vl" ip saddr != 10.27.2.0/24 drop'
    assert spoof in fwd and fwd.index(spoof) < fwd.index('oifname != "wan0" drop')


def test_isolation_job_runs_unprivileged_without_capabilities() -> None:
    argv = bwrap_argv("s1", Path("/var/lib/condor/execute/dir_1"), ["./job"])
    assert argv[:4] == ["ip", "netns", "exec", "htsec-flock-s1"]
    assert "--reuid=65534" in argv and "--no-new-privs" in argv
    for flag in ("--die-with-parent", "--unshare-pid", "--unshare-user", "--disable-userns",
                 "--new-session", "--clearenv"):  # fmt: skip
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[-2:] == ["--", "./job"] or argv[-1] == "./job"


@pytest.mark.parametrize(
    "kw",
    [
        {"slot": "a b"},
        {"uplink": "eth0;rm"},
        {"address": "10.0.0.5/24", "gateway": "10.9.9.1"},
        {"lan": ("nonsense",)},
    ],
)
def test_isolation_bad_input_is_refused(kw: dict[str, object]) -> None:
    base: dict[str, object] = {"slot": "s1", "uplink": "em1", "address": "10.27.2.5/24",
                               "gateway": "10.27.2.1"}  # fmt: skip
    with pytest.raises(UsageError):
        SlotSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_isolation_render_cli_prints_both_sides_and_one_line_errors() -> None:
    r = run("flock", "isolation", "render", "--slot", "s1", "--uplink", "em1.2512",
            "--address", "10.27.2.5/24", "--via", "10.27.2.1", "--lan", "10.0.0.0/8")  # fmt: skip
    assert r.code == 0 and "table inet htsec_flock_slot" in r.out
    g = run("flock", "isolation", "render", "--side", "gateway", "--vlan", "vl", "--wan", "w",
            "--subnet", "10.27.2.0/24")  # fmt: skip
    assert g.code == 0 and "masquerade" in g.out
    bad = run("flock", "isolation", "render", "--slot", "s1")
    assert bad.code == 2 and "missing --uplink, --address, --via" in bad.err
    assert "Traceback" not in bad.err
