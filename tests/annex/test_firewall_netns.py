"""htsec.annex.firewall on a routed topology: host (the metadata service) <- instance <- container.

On EC2 the metadata service is off the instance, so a container's packets to it are forwarded
by the instance. Three namespaces rebuild that: "host" holds 169.254.169.254 and fd00:ec2::254
and an IMDSv2 fake; "instance" routes to it and forwards for "container". The probe first
proves the container reaches the service (the topology works), then that the firewall stops it
(forward chain) while the instance's root still gets through and its other users do not."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from htsec.annex.firewall import ruleset
from tests.annex.imds_fake import ImdsFake
from tests.annex.netns import in_netns, ip, listener

pytestmark = pytest.mark.slow

# PUT asks for a session token; GET (without one) is answered 401 by a reachable service.
PROBE = (
    "import sys, urllib.request as u, urllib.error as e\n"
    "o = u.build_opener(u.ProxyHandler({}))\n"
    "put = sys.argv[2] == 'put'\n"
    "r = u.Request(sys.argv[1] + ('/latest/api/token' if put else '/latest/meta-data/'),"
    " method='PUT' if put else 'GET', headers={'X-aws-ec2-metadata-token-ttl-seconds': '60'})\n"
    "try:\n    print(o.open(r, timeout=2).status)\n"
    "except e.HTTPError as x:\n    print(x.code)\n"
    "except Exception as x:\n    print(type(x).__name__); sys.exit(3)\n"
)
URLS = ("http://169.254.169.254", "http://[fd00:ec2::254]")


@pytest.fixture
def topology() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("network namespaces and nftables need root (CI runs as root)")
    tag = secrets.token_hex(3)
    ns = {k: f"htsec-fw-{k[0]}{tag}" for k in ("host", "instance", "container")}
    fake: ImdsFake | None = None
    socks: list[socket.socket] = []
    for name in ns.values():
        ip("netns", "add", name)
    try:
        h, i, c = ns["host"], ns["instance"], ns["container"]
        ip("link", "add", f"hi{tag}", "netns", h, "type", "veth", "peer", f"ih{tag}", "netns", i)
        ip("link", "add", f"ic{tag}", "netns", i, "type", "veth", "peer", f"ci{tag}", "netns", c)
        for name, dev, v4, v6 in (
            (h, f"hi{tag}", "10.9.0.1/30", "fd09::1/64"),
            (i, f"ih{tag}", "10.9.0.2/30", "fd09::2/64"),
            (i, f"ic{tag}", "10.9.1.1/30", "fd19::1/64"),
            (c, f"ci{tag}", "10.9.1.2/30", "fd19::2/64"),
        ):
            ip("-n", name, "addr", "add", v4, "dev", dev)
            ip("-n", name, "-6", "addr", "add", v6, "dev", dev, "nodad")
            ip("-n", name, "link", "set", dev, "up")
        for name in ns.values():
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", h, "addr", "add", "169.254.169.254/32", "dev", "lo")
        ip("-n", h, "-6", "addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad")
        ip("-n", h, "route", "add", "10.9.1.0/30", "via", "10.9.0.2")
        ip("-n", h, "-6", "route", "add", "fd19::/64", "via", "fd09::2")
        ip("-n", i, "route", "add", "default", "via", "10.9.0.1")
        ip("-n", i, "-6", "route", "add", "default", "via", "fd09::1")
        ip("-n", c, "route", "add", "default", "via", "10.9.1.1")
        ip("-n", c, "-6", "route", "add", "default", "via", "fd19::1")
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            subprocess.run(["ip", "netns", "exec", i, "sysctl", "-qw", key], check=True)
        fake = ImdsFake(instance_id="i-0", region="us-east-1", account="0", role="r",
                        credentials={}, profile_arn="arn", tags={})  # fmt: skip
        socks = [
            in_netns(h, lambda: listener(socket.AF_INET, "169.254.169.254", 80)),
            in_netns(h, lambda: listener(socket.AF_INET6, "fd00:ec2::254", 80)),
        ]
        for s in socks:
            fake.serve(s)
        yield ns
    finally:
        if fake is not None:
            fake.stop()
        for s in socks:
            s.close()
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _probe(ns: str, url: str, user: int | None = None, method: str = "get") -> str:
    prefix = ["ip", "netns", "exec", ns]
    if user is not None:
        prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    done = subprocess.run([*prefix, "/usr/bin/python3", "-c", PROBE, url, method],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    return done.stdout.strip()


def test_firewall_stops_forwarded_and_unprivileged_metadata_traffic(
    topology: dict[str, str],
) -> None:
    inst, ctr = topology["instance"], topology["container"]
    for url in URLS:  # the topology works: everyone reaches the service before the firewall
        assert _probe(ctr, url) == "401", url
        assert _probe(inst, url, user=65534) == "401", url
        # ... but a token answer carries a hop limit of 1: it dies at the instance's forwarding
        assert _probe(ctr, url, method="put") in {"TimeoutError", "URLError"}, url
        assert _probe(inst, url, method="put") == "200", url
    subprocess.run(["ip", "netns", "exec", inst, "nft", "-f", "-"],
                   input=ruleset(), text=True, check=True)  # fmt: skip
    for url in URLS:
        assert _probe(inst, url, method="put") == "200", url  # root on the instance
        assert _probe(inst, url, user=65534) == "URLError", url
        assert _probe(ctr, url) == "URLError", url  # forwarded: refused
