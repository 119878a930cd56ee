"""Fixtures of the annex tests: the moto rig (one server, a clean account per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.annex.moto_rig import MotoRig


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoRig]:
    rig = MotoRig()
    yield rig
    rig.stop()


@pytest.fixture
def moto(moto_server: MotoRig, monkeypatch: pytest.MonkeyPatch) -> MotoRig:
    """A clean account; the admin's credentials and the endpoint in the environment."""
    moto_server.reset()
    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server
