"""A fake EC2 instance metadata service that behaves like IMDSv2, for one simulated instance.

``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) returns a
session token, sent with an IP TTL / hop limit of 1 as EC2 does; every other request needs a
live token (401 otherwise); any request carrying ``X-Forwarded-For`` is refused (403), as EC2
refuses proxied token requests. It serves the instance id, ``public-ipv4``, ``iam/info``, the
role's credentials (moto's, for this instance's profile), the identity document, the instance's
tags and user data. ``calls`` counts requests; ``down`` makes it refuse everything (503).
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ImdsFake:
    def __init__(
        self,
        *,
        instance_id: str,
        region: str,
        account: str,
        role: str,
        credentials: dict[str, Any],
        profile_arn: str,
        tags: dict[str, str],
        user_data: str = "",
        public_ip: str | None = "198.51.100.7",
    ) -> None:
        self.instance_id = instance_id
        self.region = region
        self.account = account
        self.role = role
        self.credentials = credentials
        self.profile_arn = profile_arn
        self.tags = tags
        self.user_data = user_data
        self.public_ip = public_ip
        self.tokens: dict[str, float] = {}
        self.calls = 0
        self.down = False
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []

    def routes(self) -> dict[str, str]:
        doc = {
            "accountId": self.account,
            "instanceId": self.instance_id,
            "region": self.region,
            "availabilityZone": self.region + "a",
            "instanceType": "m5.large",
            "imageId": "ami-00000000",
            "privateIp": "10.0.0.7",
        }
        r = {
            "meta-data/instance-id": self.instance_id,
            "meta-data/iam/info": json.dumps(
                {
                    "Code": "Success",
                    "InstanceProfileArn": self.profile_arn,
                    "InstanceProfileId": "AIPA0",
                }
            ),
            "meta-data/iam/security-credentials/": self.role,
            f"meta-data/iam/security-credentials/{self.role}": json.dumps(self.credentials),
            "dynamic/instance-identity/document": json.dumps(doc),
            "meta-data/tags/instance": "\n".join(self.tags),
            "user-data": self.user_data,
        }
        if self.public_ip:
            r["meta-data/public-ipv4"] = self.public_ip
        for k, v in self.tags.items():
            r[f"meta-data/tags/instance/{k}"] = v
        return r

    def serve(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (already bound and listening, maybe in another namespace)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _gate(self) -> bool:
                with fake._lock:
                    fake.calls += 1
                if fake.down:
                    self._reply(503)
                    return False
                if self.headers.get("X-Forwarded-For"):
                    self._reply(403, "Forbidden")
                    return False
                return True

            def do_PUT(self) -> None:
                if not self._gate():
                    return
                if self.path != "/latest/api/token":
                    self._reply(404)
                    return
                try:
                    ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
                except ValueError:
                    ttl = 0
                if not 1 <= ttl <= 21600:
                    self._reply(400, "Bad Request")
                    return
                token = secrets.token_urlsafe(32)
                with fake._lock:
                    fake.tokens[token] = time.monotonic() + ttl
                # EC2 sends the token response with a hop limit of 1: it cannot cross a router.
                level, opt = (
                    (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
                    if self.connection.family == socket.AF_INET6
                    else (socket.IPPROTO_IP, socket.IP_TTL)
                )
                self.connection.setsockopt(level, opt, 1)
                self._reply(200, token)

            def do_GET(self) -> None:
                if not self._gate():
                    return
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                with fake._lock:
                    expiry = fake.tokens.get(token, 0.0)
                if expiry < time.monotonic():
                    self._reply(401, "Unauthorized")
                    return
                path = self.path.removeprefix("/latest/")
                body = fake.routes().get(path)
                if body is None:
                    self._reply(404, "Not Found")
                else:
                    self._reply(200, body)

        family = sock.family

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        self._servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
