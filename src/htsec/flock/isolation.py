"""Isolation of flocking slots without Docker: network namespaces, nftables and bubblewrap.

Seed 001 ran the flocking startd in a container on a separate VLAN (macvlan) whose gateway, the
submit host, NATs it to the internet and firewalls it from the private network, sharing only
/dev/shm. Here, on the execute host, each flocking slot gets:

* a network namespace ``htsec-flock-<slot>`` holding only ``lo`` and a macvlan (mode private) of
  the flocking VLAN interface (``uplink``); the execute host itself has no address on that VLAN,
  and a private macvlan reaches neither its parent nor its sibling slots; the default route is
  the submit host's address on the VLAN;
* nftables inside the namespace (table ``inet htsec_flock_slot``, defence in depth): the other
  IP family than the slot's (an IPv4 slot sends no IPv6: a router advertising on the VLAN would
  give it a way out without NAT), the cluster LAN, the execute host's own addresses and the
  cloud metadata addresses (169.254.0.0/16, fd00:ec2::254) are rejected;
* the job under bubblewrap (0.8 or later), in that namespace: new user/pid/ipc/uts/cgroup
  namespaces, no nested user namespace (``--disable-userns``: one would give the job
  CAP_NET_ADMIN over a network namespace of its own, and the kernel's nf_tables with it), an
  unprivileged uid, no capabilities, no new privileges, a root file system of ``/usr`` (read
  only), its sandbox at ``/sandbox``, a private ``/dev/shm``, ``/proc`` and a minimal ``/dev``;
  it dies with its parent (the slot), and :func:`remove_slot` kills what is left in the
  namespace before deleting it.

On the submit host (table ``inet htsec_flock_gw``): traffic from the flocking VLAN is forwarded
only to the WAN interface, only in the VLAN's own IP family and from its own subnet (no spoofed
sources), never to the LAN prefixes or metadata addresses, and masqueraded; the
submit host's own services do not answer the VLAN; the WAN may answer only established flows.

``render_*`` return the exact commands and nft scripts; ``apply_*``/``remove_*`` run them and
are idempotent (a table is created, flushed and refilled in one nft transaction).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from htsec.errors import ConfigError, UsageError

__all__ = [
    "GatewaySpec",
    "SlotSpec",
    "apply_gateway",
    "apply_slot",
    "bwrap_argv",
    "netns_name",
    "remove_gateway",
    "remove_slot",
    "render_gateway",
    "render_slot",
]

METADATA4 = "169.254.0.0/16"
METADATA6 = "fd00:ec2::254"
SLOT_TABLE = "htsec_flock_slot"
GW_TABLE = "htsec_flock_gw"
_NAME = re.compile(r"^[A-Za-z0-9_]{1,10}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _net(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise UsageError(f"{what} {text!r} is not an IP network") from None


def _ifname(text: str, what: str) -> str:
    if not _IFNAME.match(text):
        raise UsageError(f"{what} {text!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")
    return text


def netns_name(slot: str) -> str:
    if not _NAME.match(slot):
        raise UsageError(f"slot name {slot!r}: 1-10 of A-Z a-z 0-9 _")
    return f"htsec-flock-{slot}"


@dataclass(frozen=True, slots=True)
class SlotSpec:
    slot: str
    uplink: str  # the flocking VLAN interface on the execute host (e.g. em1.2512)
    address: str  # the slot's address on the VLAN, with prefix (10.27.2.5/24)
    gateway: str  # the submit host's address on the VLAN
    lan: Sequence[str] = ()  # the cluster's private networks
    host_addresses: Sequence[str] = ()  # the execute host's own addresses
    host_netns: str | None = None  # run the host-side commands in this namespace (tests)

    def __post_init__(self) -> None:
        netns_name(self.slot)
        _ifname(self.uplink, "uplink")
        try:
            iface = ipaddress.ip_interface(self.address)
            gw = ipaddress.ip_address(self.gateway)
        except ValueError as exc:
            raise UsageError(f"slot address/gateway: {exc}") from None
        if gw not in iface.network:
            raise UsageError(f"gateway {gw} is not in the slot's network {iface.network}")
        for n in (*self.lan, *self.host_addresses):
            _net(n, "network")  # may contain the VLAN's own network: only daddr is matched


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    vlan: str  # the submit host's interface on the flocking VLAN
    wan: str  # its interface towards the internet
    subnet: str  # the flocking VLAN's network
    lan: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _ifname(self.vlan, "vlan interface")
        _ifname(self.wan, "wan interface")
        _net(self.subnet, "flocking subnet")
        for n in self.lan:
            _net(n, "lan network")


def _set(nets: Sequence[str], family: int) -> str | None:
    mine = [_net(n, "network") for n in nets]
    mine = [n for n in mine if ipaddress.ip_network(n).version == family]
    return "{ " + ", ".join(mine) + " }" if mine else None


def _other_family(version: int) -> str:
    """The nftables protocol a slot or VLAN of this IP version must not carry: only its own
    family is NATed by the submit host (an IPv6 router on the VLAN would route around it)."""
    return "ipv6" if version == 4 else "ipv4"


def _slot_nft(spec: SlotSpec) -> str:
    other = _other_family(ipaddress.ip_interface(spec.address).version)
    rules = [
        f"meta nfproto {other} reject",
        f"ip daddr {METADATA4} reject",
        f"ip6 daddr {METADATA6} reject",
    ]
    for fam, kw in ((4, "ip"), (6, "ip6")):
        if s := _set(spec.lan, fam):
            rules.append(f"{kw} daddr {s} reject")
        if s := _set(spec.host_addresses, fam):
            rules.append(f"{kw} daddr {s} reject")
    body = "\n".join(f"\t\t{r}" for r in rules)
    return (
        f"table inet {SLOT_TABLE}\nflush table inet {SLOT_TABLE}\n"
        f"table inet {SLOT_TABLE} {{\n\tchain output {{\n"
        "\t\ttype filter hook output priority 0; policy accept;\n"
        '\t\toifname "lo" accept\n'
        f"{body}\n\t}}\n}}\n"
    )


def _ip(spec: SlotSpec, *args: str) -> list[str]:
    return ["ip", *(("-n", spec.host_netns) if spec.host_netns else ()), *args]


def render_slot(spec: SlotSpec) -> tuple[list[list[str]], str]:
    """The commands that build the slot's namespace, and its nft script."""
    ns = netns_name(spec.slot)
    link = f"hf{spec.slot}"[:15]
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        _ip(
            spec,
            "link",
            "add",
            "link",
            spec.uplink,
            "name",
            link,
            "type",
            "macvlan",
            "mode",
            "private",
        ),
        _ip(spec, "link", "set", link, "netns", ns),
        ["ip", "-n", ns, "link", "set", link, "name", "eth0"],
        ["ip", "-n", ns, "addr", "add", spec.address, "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ["ip", "-n", ns, "route", "add", "default", "via", spec.gateway],
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
    ]
    return cmds, _slot_nft(spec)


def render_gateway(spec: GatewaySpec) -> str:
    """The submit host's nft script (``net.ipv4.ip_forward=1`` is the admin's, see the docs)."""
    drops = [f"ip daddr {METADATA4} drop", f"ip6 daddr {METADATA6} drop"]
    for fam, kw in ((4, "ip"), (6, "ip6")):
        if s := _set(spec.lan, fam):
            drops.append(f"{kw} daddr {s} drop")
    v, w, sub = spec.vlan, spec.wan, _net(spec.subnet, "subnet")
    version = ipaddress.ip_network(sub).version
    kw = "ip" if version == 4 else "ip6"
    drops[:0] = [f"meta nfproto {_other_family(version)} drop", f"{kw} saddr != {sub} drop"]
    fwd = "\n".join(f'\t\tiifname "{v}" {d}' for d in drops)
    return (
        f"table inet {GW_TABLE}\nflush table inet {GW_TABLE}\n"
        f"table inet {GW_TABLE} {{\n"
        "\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n"
        f"{fwd}\n"
        f'\t\tiifname "{v}" oifname != "{w}" drop\n'
        f'\t\tiifname "{w}" oifname "{v}" ct state established,related accept\n'
        f'\t\toifname "{v}" drop\n'
        "\t}\n"
        "\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n"
        f'\t\tiifname "{v}" ct state established,related accept\n'
        f'\t\tiifname "{v}" drop\n'
        "\t}\n"
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        f'\t\t{kw} saddr {sub} oifname "{w}" masquerade\n'
        "\t}\n}\n"
    )


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ConfigError(f"{argv[0]} is not installed (Debian: iproute2, nftables)") from None


def _check(p: subprocess.CompletedProcess[str], argv: list[str]) -> None:
    if p.returncode != 0:
        raise ConfigError(f"{shlex.join(argv)} failed: {p.stderr.strip() or p.returncode}")


def _exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def apply_slot(spec: SlotSpec) -> bool:
    """Build the slot's namespace (False: it was there; its nft rules are refreshed)."""
    cmds, script = render_slot(spec)
    ns = netns_name(spec.slot)
    fresh = not _exists(ns)
    if fresh:
        try:
            for argv in cmds[:-1]:
                _check(_run(argv), argv)
        except BaseException:
            remove_slot(spec.slot, host_netns=spec.host_netns)
            raise
    _check(_run(cmds[-1], script), cmds[-1])
    return fresh


def remove_slot(slot: str, *, host_netns: str | None = None) -> bool:
    """Kill every process left in the slot's namespace and delete it (False: absent)."""
    ns = netns_name(slot)
    if not _exists(ns):
        return False
    pids = _run(["ip", "netns", "pids", ns]).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    argv = ["ip", "netns", "del", ns]
    _check(_run(argv), argv)
    return True


def apply_gateway(spec: GatewaySpec, *, netns: str | None = None) -> None:
    argv = [*(("ip", "netns", "exec", netns) if netns else ()), "nft", "-f", "-"]
    _check(_run(argv, render_gateway(spec)), argv)


def remove_gateway(*, netns: str | None = None) -> bool:
    pre = ["ip", "netns", "exec", netns] if netns else []
    if _run([*pre, "nft", "list", "table", "inet", GW_TABLE]).returncode != 0:
        return False
    argv = [*pre, "nft", "delete", "table", "inet", GW_TABLE]
    _check(_run(argv), argv)
    return True


def bwrap_argv(
    slot: str, sandbox: Path, argv: Sequence[str], *, uid: int = 65534, gid: int = 65534
) -> list[str]:
    """The command line that runs ``argv`` as a flocked job in the slot (started by root on the
    host). bwrap itself runs as ``uid`` (setpriv, no new privileges), so the job is that user
    outside its user namespace too -- never root -- and ``sandbox`` must be reachable by it."""
    return [
        "ip", "netns", "exec", netns_name(slot),
        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
        "bwrap",
        "--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm",  # noqa: S108 -- a private tmpfs
        "--bind", str(sandbox), "/sandbox", "--chdir", "/sandbox",
        "--clearenv", "--setenv", "HOME", "/sandbox", "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "_CONDOR_SCRATCH_DIR", "/sandbox",
        "--",
        *argv,
    ]  # fmt: skip
