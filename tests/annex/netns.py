"""Network namespaces for simulated annex instances (root only; TESTING.md, "Network namespaces").

Each :class:`Instance` is a namespace with 169.254.169.254/32 and fd00:ec2::254/128 on its
loopback, an IMDSv2 fake listening on both, and a port on its own 127.0.0.1 forwarded to the
moto server in the root namespace (the instance's route to "AWS"). The listening sockets are
created inside the namespace by a short-lived thread that entered it (setns), then served by
threads of this process: the namespace's firewall applies to its clients exactly as on an
instance. Namespaces are removed by :meth:`Instance.close` (the fixtures always call it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import select
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
AWS_PORT = 4566
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that entered namespace ``name`` (sockets it makes stay there)."""
    box: dict[str, object] = {}

    def run() -> None:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def listener(family: int, host: str, port: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    return s


def _pump(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 30)
            if not ready:
                return
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


def forward(sock: socket.socket, target: tuple[str, int]) -> None:
    """Accept on ``sock`` (inside a namespace) and relay each connection to ``target``."""

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(target, timeout=10)
            except OSError:
                conn.close()
                continue
            threading.Thread(target=_pump, args=(conn, up), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


class Instance:
    """One simulated instance: a namespace, its metadata addresses and its route to moto."""

    def __init__(self, moto_port: int) -> None:
        self.name = f"htsec-annex-{secrets.token_hex(4)}"
        self.sockets: list[socket.socket] = []
        ip("netns", "add", self.name)
        try:
            ip("-n", self.name, "link", "set", "lo", "up")
            ip("-n", self.name, "addr", "add", "169.254.169.254/32", "dev", "lo")
            ip("-n", self.name, "-6", "addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad")
            aws = in_netns(self.name, lambda: listener(socket.AF_INET, "127.0.0.1", AWS_PORT))
            self.sockets.append(aws)
            forward(aws, ("127.0.0.1", moto_port))
        except BaseException:
            self.close()
            raise

    def metadata_sockets(self) -> list[socket.socket]:
        socks = [
            in_netns(self.name, lambda: listener(socket.AF_INET, "169.254.169.254", 80)),
            in_netns(self.name, lambda: listener(socket.AF_INET6, "fd00:ec2::254", 80)),
        ]
        self.sockets += socks
        return socks

    def run(self, *argv: str, user: int | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        prefix = ["ip", "netns", "exec", self.name]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        return subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    def popen(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip

    def close(self) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
            s.close()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
