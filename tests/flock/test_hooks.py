"""htsec.flock.hooks against small local HTTP servers standing in for Icinga2's REST API and a
webhook receiver (the real services cannot run on this machine)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from htsec.flock.config import IcingaConfig, WebhookConfig
from htsec.flock.hooks import AUTHOR, IcingaHook, WebhookHook
from htsec.flock.policy import Action, Host, Kind, Mode


class Recorder(ThreadingHTTPServer):
    requests: list[tuple[str, dict[str, str], Any]]
    status: int


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, dict(self.headers), body))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"results": []}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[Recorder]:
    srv = Recorder(("127.0.0.1", 0), Handler)
    srv.requests, srv.status = [], 200
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def secret(tmp_path: Path, name: str, value: str) -> Path:
    p = tmp_path / name
    p.write_text(value + "\n")
    p.chmod(0o600)
    return p


def test_icinga_downtime_scheduled_on_lend_and_removed_on_reclaim(
    fake: Recorder, tmp_path: Path
) -> None:
    cfg = IcingaConfig(
        f"http://127.0.0.1:{fake.server_port}", "shepherd", secret(tmp_path, "pw", "s3cret")
    )
    hook = IcingaHook(cfg)
    hook.notify(Action(Kind.LEND, "p7", "idle queue 3 < 600"), Host("p7", Mode.REGULAR, False))
    hook.notify(Action(Kind.RECLAIM, "p7", "q"), Host("p7", Mode.FLOCKING, False))
    hook.notify(Action(Kind.DRAIN, "p7", "q"), Host("p7", Mode.FLOCKING, True))  # nothing
    assert [r[0] for r in fake.requests] == [
        "/v1/actions/schedule-downtime",
        "/v1/actions/remove-downtime",
    ]
    _, headers, body = fake.requests[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"shepherd:s3cret").decode()
    assert body["type"] == "Service" and body["author"] == AUTHOR and body["fixed"] is True
    assert body["filter"] == 'host.name=="p7" && service.name=="condor_startd"'
    assert body["end_time"] > body["start_time"]
    assert fake.requests[1][2]["author"] == AUTHOR


def test_icinga_error_status_raises(fake: Recorder, tmp_path: Path) -> None:
    fake.status = 500
    cfg = IcingaConfig(f"http://127.0.0.1:{fake.server_port}", "u", secret(tmp_path, "pw", "x"))
    with pytest.raises(RuntimeError, match="HTTP 500"):
        IcingaHook(cfg).notify(Action(Kind.LEND, "h", "r"), Host("h", Mode.REGULAR, False))


def test_webhook_posts_one_object_per_action_with_bearer(fake: Recorder, tmp_path: Path) -> None:
    cfg = WebhookConfig(f"http://127.0.0.1:{fake.server_port}/hook", secret(tmp_path, "t", "tok"))
    WebhookHook(cfg).notify(Action(Kind.STOP, "f3", "override"), Host("f3", Mode.FLOCKING, True))
    path, headers, body = fake.requests[0]
    assert path == "/hook" and headers["Authorization"] == "Bearer tok"
    assert (body["host"], body["action"], body["from"], body["reason"]) == (
        "f3",
        "stop",
        "flocking",
        "override",
    )


def test_hooks_refuse_a_world_readable_secret_file(fake: Recorder, tmp_path: Path) -> None:
    p = tmp_path / "pw"
    p.write_text("x")
    p.chmod(0o644)
    cfg = IcingaConfig(f"http://127.0.0.1:{fake.server_port}", "u", p)
    with pytest.raises(Exception, match="pw"):
        IcingaHook(cfg).notify(Action(Kind.LEND, "h", "r"), Host("h", Mode.REGULAR, False))
    assert fake.requests == []
