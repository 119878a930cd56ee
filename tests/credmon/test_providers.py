"""htsec.credmon.providers: which names are OAuth2 providers, each provider's knobs (defaults,
overrides), HTSEC_CREDMON_RATE, and a bad value as a ConfigError naming the knob. OpenID
discovery against a real provider is in test_refresh_oidc.py::test_oidc_discovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from htsec.config import load
from htsec.credmon.providers import load_providers
from htsec.errors import ConfigError, FileSecurityError


def _knobs(monkeypatch: pytest.MonkeyPatch, **knobs: str) -> None:
    for name, value in knobs.items():
        monkeypatch.setenv(f"_CONDOR_{name}", value)
    load()


def _secret_file(path: Path, secret: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, f"{secret}\n".encode())
    os.close(fd)
    return path


def test_defaults_only_the_local_issuer() -> None:
    load()
    ps = load_providers()
    assert sorted(ps.providers) == ["scitokens"] and ps.is_local("SciTokens")
    local = ps.get("scitokens")
    assert local is not None and local.local and local.token_url is None
    assert ps.default_rate == 50.0


def test_provider_from_its_client_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _knobs(
        monkeypatch,
        BOX_CLIENT_ID="box-client",
        BOX_CLIENT_SECRET_FILE=str(_secret_file(tmp_path / "box.secret", "s3cret")),
        BOX_TOKEN_URL="https://box.example/token",
        BOX_AUTHORIZATION_URL="https://box.example/authorize",
        BOX_USER_URL="https://box.example/user",
    )
    ps = load_providers()
    box = ps.get("BOX")
    assert box is not None and not ps.is_local("box")
    assert (box.client_id, box.client_secret, box.token_url) == (
        "box-client",
        "s3cret",
        "https://box.example/token",
    )
    assert box.authorization_url == "https://box.example/authorize"
    assert box.user_url == "https://box.example/user"
    assert box.auth_method == "client_secret_basic" and box.rate == 50.0 and box.issuer is None
    assert "s3cret" not in repr(box) and "secure" in repr(box)


def test_provider_names_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """OAUTH2_CREDMON_PROVIDER_NAMES names providers without a client id (a made-up name:
    HTCondor's defaults give some real ones endpoints, DROPBOX_TOKEN_URL for one);
    LOCAL_CREDMON_PROVIDER_NAMES replaces scitokens; NAME_TOKEN_AUTH and HTSEC_CREDMON_RATE
    override their defaults; NAME_ISSUER is kept when discovery is not asked for."""
    _knobs(
        monkeypatch,
        OAUTH2_CREDMON_PROVIDER_NAMES="gdrive, Acme",
        LOCAL_CREDMON_PROVIDER_NAMES="mytokens",
        GDRIVE_TOKEN_AUTH="client_secret_post",
        ACME_ISSUER="https://id.example",
        HTSEC_CREDMON_RATE="2.5",
    )
    ps = load_providers(discover_endpoints=False)
    assert sorted(ps.providers) == ["acme", "gdrive", "mytokens"]
    assert ps.is_local("mytokens") and not ps.is_local("scitokens")
    gdrive, acme = ps.get("gdrive"), ps.get("acme")
    assert gdrive is not None and gdrive.auth_method == "client_secret_post"
    assert gdrive.client_id is None and gdrive.client_secret is None
    assert acme is not None and acme.issuer == "https://id.example"
    assert acme.token_url is None
    assert gdrive.rate == acme.rate == ps.default_rate == 2.5


def test_rate_zero_means_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    _knobs(monkeypatch, HTSEC_CREDMON_RATE="0")
    assert load_providers().default_rate == 0.0


@pytest.mark.parametrize("raw", ["fast", "-1", "nan", "inf"])
def test_bad_rate_names_the_knob(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    _knobs(monkeypatch, HTSEC_CREDMON_RATE=raw)
    with pytest.raises(ConfigError, match=r"HTSEC_CREDMON_RATE .* is not a number of refreshes"):
        load_providers()


def test_bad_token_auth_names_the_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    _knobs(monkeypatch, BOX_CLIENT_ID="c", BOX_TOKEN_AUTH="private_key_jwt")
    with pytest.raises(ConfigError, match="BOX_TOKEN_AUTH = 'private_key_jwt': use"):
        load_providers()


def test_missing_secret_file_names_the_knob(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _knobs(monkeypatch, BOX_CLIENT_ID="c", BOX_CLIENT_SECRET_FILE=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"BOX_CLIENT_SECRET_FILE = .*nope does not exist"):
        load_providers()


def test_world_readable_secret_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _secret_file(tmp_path / "box.secret", "s3cret", mode=0o644)
    os.chmod(path, 0o644)  # the umask may have taken bits away
    _knobs(monkeypatch, BOX_CLIENT_ID="c", BOX_CLIENT_SECRET_FILE=str(path))
    with pytest.raises(FileSecurityError) as info:
        load_providers()
    assert "s3cret" not in str(info.value)
