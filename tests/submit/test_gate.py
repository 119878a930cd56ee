"""htsec.submit.gate: the decision from the credd's real answer (the app in process): ready,
login (missing or needing a new login), mismatch before login, and what the link asks for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.creds.writes import CREDENTIALS
from htsec.errors import RemoteError
from htsec.server import create_app
from htsec.submit.gate import Decision, decide, fix_commands
from htsec.tokens.authority import Authority


def no_config(_name: str) -> str | None:
    return None


@pytest.fixture
def gate(settings: Settings, authority: Authority) -> Iterator[Any]:
    """``decide`` for alice against the real credd app; alice stored box (scopes r)."""
    with TestClient(create_app(settings, authority)) as client:
        h = {"Authorization": f"Bearer {authority.mint(identity='alice@pool.example.org')}"}
        put = client.put("/v1/creds/box", headers=h, json={"refresh_token": "x", "scopes": ["r"]})
        assert put.status_code == 200

        def run(text: str) -> Decision:
            def check(needs: list[dict[str, object]]) -> Any:
                r = client.post("/v1/creds/check", headers=h, json={"needs": needs})
                assert r.status_code == 200, r.text
                return r.json()

            return decide(text, check=check, param=no_config)

        yield run


def test_gate_ready(gate: Any) -> None:
    d = gate("use_oauth_services = box\nbox_oauth_permissions = r\nqueue\n")
    assert d.state == "ready" and d.user == "alice" and d.to_authorize == []


def test_gate_missing_is_login_for_the_missing_only(gate: Any) -> None:
    d = gate("use_oauth_services = box, gdrive\nbox_oauth_permissions = r\nqueue\n")
    assert d.state == "login"
    assert [n.wire for n in d.to_authorize] == ["gdrive"]


def test_gate_needs_reauth_is_login(gate: Any, authority: Authority) -> None:
    with authority.store.session() as s:
        s.execute(update(CREDENTIALS).values(state="needs_reauth"))
    d = gate("use_oauth_services = box\nbox_oauth_permissions = r\nqueue\n")
    assert d.state == "login" and [n.wire for n in d.to_authorize] == ["box"]


def test_gate_mismatch_wins_over_login(gate: Any) -> None:
    d = gate("use_oauth_services = box, gdrive\nbox_oauth_permissions = w\nqueue\n")
    assert d.state == "mismatch"
    assert fix_commands(d.in_state("mismatch")) == ["htsec cred delete --service box"]
    assert fix_commands([{"service": "gdrive", "handle": "work"}]) == [
        "htsec cred delete --service gdrive --handle work"
    ]


def test_gate_refuses_an_answer_of_the_wrong_shape() -> None:
    # A stub: no real credd answers like this (a proxy or another server might).
    with pytest.raises(RemoteError, match="not what it should be"):
        decide(
            "use_oauth_services = box\nqueue\n",
            check=lambda needs: {"user": "alice", "needs": []},
            param=no_config,
        )
