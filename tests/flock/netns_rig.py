"""A small network for the isolation tests (root only; TESTING.md, "Network namespaces").

Namespaces, each named ``htsec-fl<hex>-<role>``:

* ``s`` the submit host: ``flk`` 10.27.2.1/24 on the flocking VLAN, ``wan`` 198.51.100.1/24 to
  the outside, bridge ``br0`` 10.10.0.1/24 on the cluster LAN; forwards IPv4;
* ``o`` an outside host 198.51.100.2/24 (no route back to the VLAN: only NAT can answer);
* ``l`` a LAN host 10.10.0.2/24;
* ``e`` the execute host: ``vlan0`` (no address, the VLAN), ``lan0`` 10.10.0.3/24 on the LAN,
  169.254.169.254/32 on its loopback (a cloud host's metadata service).

Every server answers with the address it saw the client at. Listening sockets are made inside
the namespaces by a thread that entered it (``tests.annex.netns.in_netns``, setns) and served by
this process's threads.
:meth:`Net.close` removes every namespace (the fixture always calls it).
"""

from __future__ import annotations

import secrets
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.annex.netns import in_netns

__all__ = ["Net", "Who", "in_netns", "sh"]


def sh(*argv: str) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip()}")


class Who(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.server.server_address[0]} saw {self.client_address[0]}".encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Net:
    def __init__(self) -> None:
        self.tag = f"htsec-fl{secrets.token_hex(3)}"
        self.ns = {r: f"{self.tag}-{r}" for r in "sole"}
        self.servers: list[ThreadingHTTPServer] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        s, o, lan, e = (self.ns[r] for r in "sole")
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "-n", s, "link", "add", "flk", "type", "veth", "peer", "name", "vlan0", "netns", e)
        sh("ip", "-n", s, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", o)
        sh("ip", "-n", s, "link", "add", "br0", "type", "bridge")
        sh(
            "ip",
            "-n",
            s,
            "link",
            "add",
            "lanl",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            lan,
        )
        sh("ip", "-n", s, "link", "add", "lane", "type", "veth", "peer", "name", "lan0", "netns", e)
        for port in ("lanl", "lane"):
            sh("ip", "-n", s, "link", "set", port, "master", "br0")
        for ns, dev, addr in (
            (s, "flk", "10.27.2.1/24"), (s, "wan", "198.51.100.1/24"), (s, "br0", "10.10.0.1/24"),
            (o, "eth0", "198.51.100.2/24"), (lan, "eth0", "10.10.0.2/24"),
            (e, "lan0", "10.10.0.3/24"), (e, "lo", "169.254.169.254/32"),
        ):  # fmt: skip
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        for ns, dev in ((s, "flk"), (s, "wan"), (s, "br0"), (s, "lanl"), (s, "lane"),
                        (o, "eth0"), (lan, "eth0"), (e, "vlan0"), (e, "lan0")):  # fmt: skip
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for ns in (lan, e):
            sh("ip", "-n", ns, "route", "add", "default", "via", "10.10.0.1")
        sh("ip", "netns", "exec", s, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for role, addr, port in (
            ("o", "198.51.100.2", 8080), ("l", "10.10.0.2", 8080), ("e", "10.10.0.3", 8080),
            ("e", "169.254.169.254", 80), ("s", "10.27.2.1", 8080), ("s", "10.10.0.1", 8080),
        ):  # fmt: skip
            self.serve(role, addr, port)

    @staticmethod
    def bare() -> str:
        """One empty namespace (the caller deletes it)."""
        name = f"htsec-fl{secrets.token_hex(3)}-x"
        sh("ip", "netns", "add", name)
        return name

    def serve(self, role: str, addr: str, port: int) -> None:
        srv = in_netns(self.ns[role], lambda: ThreadingHTTPServer((addr, port), Who))
        self.servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()
        for n in self.ns.values():
            subprocess.run(["ip", "netns", "pids", n], capture_output=True, timeout=10)
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)
