"""htsec.flock.isolation on real namespaces: a flocked job reaches the outside only by NAT through
the submit host, and nothing of the LAN, the execute host or the metadata service; it sees only
its sandbox and dies with its slot. Root only (CI runs as root)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from htsec.flock.isolation import (
    GatewaySpec,
    SlotSpec,
    apply_gateway,
    apply_slot,
    bwrap_argv,
    netns_name,
    remove_gateway,
    remove_slot,
)
from tests.flock.netns_rig import Net, Who, in_netns

# slow: building the four namespaces and their servers takes ~5 s on a 2-core machine.
pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root to create network namespaces (CI runs as root)"
    ),
    pytest.mark.slow,
]

PROBE = r"""
import json, os, urllib.request
out = {}
for url in __import__("sys").argv[1:]:
    try:
        out[url] = urllib.request.urlopen(url, timeout=1.5).read().decode()
    except Exception as exc:
        out[url] = "blocked: " + type(exc).__name__
st = open("/proc/self/status").read()
out["uid"] = os.getuid()
out["capeff"] = st.split("CapEff:")[1].split()[0]
out["root"] = sorted(os.listdir("/"))
out["etc"] = os.path.exists("/etc/passwd")
out["secret"] = any(os.path.exists(p) for p in ("/run", "/root", "/home", "/tmp", "/var"))
open("/sandbox/written", "w").write("ok")
libc = __import__("ctypes").CDLL(None, use_errno=True)
out["userns"] = libc.unshare(0x10000000)  # CLONE_NEWUSER: 0 = a nested user namespace made
print(json.dumps(out))
"""


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A sandbox the job user (nobody) can reach: /run/<unique> 0711, the sandbox its own."""
    base = Path("/run") / f"htsec-test-sbx-{secrets.token_hex(4)}"
    base.mkdir(mode=0o711)
    sb = base / "sandbox"
    sb.mkdir()
    os.chown(sb, 65534, 65534)
    try:
        yield sb
    finally:
        shutil.rmtree(base)


@pytest.fixture(scope="module")
def net() -> Iterator[tuple[Net, str]]:
    n = Net()
    slot = f"t{secrets.token_hex(3)}"
    try:
        apply_gateway(GatewaySpec("flk", "wan", "10.27.2.0/24", ("10.10.0.0/16",)), netns=n.ns["s"])
        spec = SlotSpec(
            slot, "vlan0", "10.27.2.5/24", "10.27.2.1", ("10.10.0.0/16",), ("10.10.0.3/32",),
            host_netns=n.ns["e"],
        )  # fmt: skip
        assert apply_slot(spec) is True
        assert apply_slot(spec) is False  # idempotent
        yield n, slot
    finally:
        remove_slot(slot)
        n.close()


def test_isolation_job_reaches_outside_only_through_nat(
    net: tuple[Net, str], sandbox: Path
) -> None:
    _, slot = net
    secret = Path("/run") / f"htsec-test-secret-{secrets.token_hex(4)}"
    secret.write_text("host secret")
    urls = [
        "http://198.51.100.2:8080/",  # outside
        "http://10.10.0.2:8080/",  # LAN host
        "http://10.10.0.3:8080/",  # the execute host's own service
        "http://10.10.0.1:8080/",  # the submit host's LAN service
        "http://10.27.2.1:8080/",  # the submit host's service on the VLAN
        "http://169.254.169.254/",  # metadata
    ]
    try:
        p = subprocess.run(
            bwrap_argv(slot, sandbox, ["python3", "-c", PROBE, *urls]),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        secret.unlink()
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r[urls[0]] == "198.51.100.2 saw 198.51.100.1"  # NATed by the submit host
    for u in urls[1:]:
        assert r[u].startswith("blocked"), (u, r[u])
    assert r["uid"] == 65534 and r["capeff"] == "0000000000000000"
    # no nested user namespace: it would give the job CAP_NET_ADMIN over a network namespace
    # of its own, and with it the kernel's nf_tables code (a classic way to local root)
    assert r["userns"] == -1
    assert set(r["root"]) <= {"bin", "dev", "lib", "lib64", "proc", "sandbox", "sbin", "usr"}
    assert r["etc"] is False and r["secret"] is False
    assert (sandbox / "written").read_text() == "ok"


class _Who6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def test_isolation_job_has_no_ipv6_way_around_the_nat(net: tuple[Net, str], sandbox: Path) -> None:
    """A router advertising IPv6 on the flocking VLAN gives the slot a global address and a
    default route (set by hand here, as SLAAC would; the submit host plays that router, with
    static neighbours since its input chain refuses neighbour discovery from the VLAN). IPv6 is
    not NATed: an IPv4 slot must not send it at all, and the gateway must not forward it."""
    n, slot = net
    s, o, ns = n.ns["s"], n.ns["o"], netns_name(slot)
    mac = {
        (x, dev): json.loads(_out("ip", "-j", "-n", x, "link", "show", dev))[0]["address"]
        for x, dev in ((s, "flk"), (ns, "eth0"))
    }
    for argv in (
        ["ip", "-n", s, "addr", "add", "2001:db8:27::1/64", "dev", "flk", "nodad"],
        ["ip", "-n", s, "addr", "add", "2001:db8:51::1/64", "dev", "wan", "nodad"],
        ["ip", "netns", "exec", s, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
        ["ip", "-n", o, "addr", "add", "2001:db8:51::2/64", "dev", "eth0", "nodad"],
        ["ip", "-n", o, "-6", "route", "add", "2001:db8:27::/64", "via", "2001:db8:51::1"],
        ["ip", "-n", ns, "addr", "add", "2001:db8:27::5/64", "dev", "eth0", "nodad"],
        ["ip", "-n", ns, "-6", "route", "add", "default", "via", "2001:db8:27::1"],
        ["ip", "-n", ns, "-6", "neigh", "replace", "2001:db8:27::1", "lladdr", mac[(s, "flk")],
         "dev", "eth0", "nud", "permanent"],
        ["ip", "-n", s, "-6", "neigh", "replace", "2001:db8:27::5", "lladdr", mac[(ns, "eth0")],
         "dev", "flk", "nud", "permanent"],
    ):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    srv = in_netns(o, lambda: _Who6(("2001:db8:51::2", 8080, 0, 0), Who))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://[2001:db8:51::2]:8080/"
    try:
        p = subprocess.run(
            bwrap_argv(slot, sandbox, ["python3", "-c", PROBE, url]),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        srv.shutdown()
        srv.server_close()
        for x, dev in ((ns, "eth0"), (s, "flk")):
            subprocess.run(["ip", "-n", x, "-6", "neigh", "flush", "dev", dev, "nud", "permanent"],
                           capture_output=True, timeout=30)  # fmt: skip
        subprocess.run(["ip", "-n", ns, "addr", "flush", "dev", "eth0", "scope", "global"],
                       capture_output=True, timeout=30)  # fmt: skip
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.27.2.5/24", "dev", "eth0"],
                       capture_output=True, timeout=30)  # fmt: skip
        subprocess.run(["ip", "-n", ns, "route", "replace", "default", "via", "10.27.2.1"],
                       capture_output=True, timeout=30)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[url].startswith("blocked"), json.loads(p.stdout)[url]


def _out(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def _pids(slot: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "pids", netns_name(slot)], capture_output=True, text=True)
    return out.stdout.split()


def test_isolation_job_dies_with_its_slot(net: tuple[Net, str], sandbox: Path) -> None:
    _, slot = net
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         *bwrap_argv(slot, sandbox, ["sleep", "60"])],
    )  # fmt: skip
    deadline = time.monotonic() + 5
    while not _pids(slot) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids(slot), "the job did not start"
    starter.kill()  # the slot goes away
    starter.wait()
    deadline = time.monotonic() + 5
    while _pids(slot) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids(slot) == []


def test_isolation_remove_kills_what_is_left_and_is_idempotent(
    net: tuple[Net, str], sandbox: Path
) -> None:
    n, _ = net
    slot = f"r{secrets.token_hex(3)}"
    try:
        spec = SlotSpec(slot, "vlan0", "10.27.2.6/24", "10.27.2.1", host_netns=n.ns["e"])
        apply_slot(spec)
        job = subprocess.Popen(bwrap_argv(slot, sandbox, ["sleep", "60"]))
        deadline = time.monotonic() + 5
        while not _pids(slot) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert remove_slot(slot) is True
        assert job.wait(timeout=5) != 0
        assert remove_slot(slot) is False
        assert not Path("/run/netns", netns_name(slot)).exists()
    finally:
        remove_slot(slot)


def test_isolation_gateway_remove_is_idempotent() -> None:
    n = Net.bare()
    try:
        spec = GatewaySpec("lo", "lo", "10.27.2.0/24")
        apply_gateway(spec, netns=n)
        apply_gateway(spec, netns=n)  # again: same table, same rules
        assert remove_gateway(netns=n) is True
        assert remove_gateway(netns=n) is False
    finally:
        subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)
