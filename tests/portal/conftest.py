"""Fixtures of the portal tests: the real oidc-provider with the portal's return address
registered, and the whole ``htsec serve`` app in process at ``https://testserver`` configured
with it as provider ``rig`` (HTCondor's knobs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from htsec.config import Settings, load
from htsec.creds.links import Need, create_link, link_url
from htsec.creds.store import CredStore
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.oidc import Provider, provider_fixture
from tests.portal.rig import PORTAL, Browser, provider_env, rig_config

oidc = provider_fixture(rig_config())

RIG = Need("rig", None, frozenset({"openid", "profile"}))


@dataclass
class Portal:
    app: FastAPI
    settings: Settings
    issuer: str
    provider: Provider

    @property
    def creds(self) -> CredStore:
        cs: CredStore = self.app.state.credstore
        return cs

    def browser(self) -> Browser:
        return Browser(TestClient(self.app, base_url=PORTAL), self.issuer)

    def link(self, user: str = "alice", needs: tuple[Need, ...] = (RIG,), ttl: float = 900) -> str:
        return link_url(PORTAL, create_link(self.creds, user=user, needs=needs, ttl=ttl).id)

    def audit(self, action: str | None = None) -> list[dict[str, object]]:
        rows = [dict(r) for r in self.creds.audit_log(limit=1000)]
        return [r for r in rows if action is None or r["action"] == action]


@pytest.fixture
def portal_env(
    oidc: Provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Settings]:
    """Set the rig's knobs (and ``extra``) in the environment and load the settings."""

    def configure(**extra: str) -> Settings:
        for k, v in {**provider_env(oidc, tmp_path), "HTSEC_PORTAL_URL": PORTAL, **extra}.items():
            monkeypatch.setenv(k, v)
        return load()

    return configure


@pytest.fixture
def portal(oidc: Provider, portal_env: Callable[..., Settings]) -> Iterator[Portal]:
    settings = portal_env()
    authority = Authority(settings)
    app = create_app(settings, authority)
    yield Portal(app, settings, oidc.issuer, oidc)
    authority.store.close()
