"""htsec.config: the built-in configuration, every knob's default and override, a bad value is a
ConfigError naming the knob and the form it needs, and loading never edits the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from htsec.config import DEFAULT_PORT, Settings, load
from htsec.errors import ConfigError
from tests.conftest import REPO


def test_builtin_configuration_defaults(home: Path) -> None:
    s = load()
    assert s.builtin and s.config_source == str(home / "condor_config")
    assert (home / "condor_config").stat().st_mode & 0o777 == 0o600
    assert s.home == home and s.trust_domain == "pool.example.org"
    assert s.password_dir == home / "passwords.d" and s.pool_key_file == home / "passwords.d/POOL"
    assert s.database_url == f"sqlite:///{home / 'htsec.db'}"
    assert s.server_url == f"https://127.0.0.1:{DEFAULT_PORT}"
    assert s.ca_file == home / "tls" / "ca.pem" and s.store_key_file == home / "store.key"
    assert (s.request_lifetime, s.auto_approve_max_lifetime, s.glidein_lifetime) == (
        3600,
        3600,
        86400,
    )
    assert s.max_age is None and s.issued_token_expiration is None and s.cred_dir is None
    assert s.revocation_expr is None and s.glidein_key_name == "site-{site}"
    assert s.serve_credmon is True and s.serve_api_docs is False
    assert s.serve_max_connections is None and s.token_request_max_per_peer is None
    assert s.token_request_limits is None and s.token_issuer_key == "POOL"


OVERRIDES: list[tuple[str, str, str, object]] = [
    ("SEC_TOKEN_MAX_AGE", "600", "max_age", 600),
    ("SEC_TOKEN_REQUEST_LIFETIME", "120", "request_lifetime", 120),
    ("SEC_ISSUED_TOKEN_EXPIRATION", "900", "issued_token_expiration", 900),
    ("TOKEN_REQUEST_AUTO_APPROVE_MAX_LIFETIME", "60", "auto_approve_max_lifetime", 60),
    ("SEC_TOKEN_REVOCATION_EXPR", " jti == 1 ", "revocation_expr", "jti == 1"),
    ("SEC_TOKEN_BLACKLIST_EXPR", "jti == 2", "revocation_expr", "jti == 2"),
    ("HTSEC_DATABASE_URL", "postgresql://db/htsec", "database_url", "postgresql://db/htsec"),
    ("HTSEC_SERVER_URL", "https://h.example:1/", "server_url", "https://h.example:1"),
    ("HTSEC_GLIDEIN_KEY_NAME", "{site}", "glidein_key_name", "{site}"),
    ("HTSEC_GLIDEIN_LIFETIME", "600", "glidein_lifetime", 600),
    ("HTSEC_SERVE_CREDMON", "No", "serve_credmon", False),
    ("HTSEC_SERVE_API_DOCS", "on", "serve_api_docs", True),
    ("HTSEC_SERVE_MAX_CONNECTIONS", "8", "serve_max_connections", 8),
    ("HTSEC_TOKEN_REQUEST_MAX_PER_PEER", "3", "token_request_max_per_peer", 3),
    ("SEC_TOKEN_REQUEST_LIMITS", "read, advertise_startd", "token_request_limits",
     ("READ", "ADVERTISE_STARTD")),
    ("SEC_TOKEN_ISSUER_KEY", " site-a ", "token_issuer_key", "site-a"),
    ("SEC_CREDENTIAL_DIRECTORY_OAUTH", "/var/lib/condor/oauth", "cred_dir",
     Path("/var/lib/condor/oauth")),
    ("UID_DOMAIN", "users.example.org", "uid_domain", "users.example.org"),
]  # fmt: skip


@pytest.mark.parametrize(("knob", "raw", "field", "value"), OVERRIDES, ids=lambda x: str(x))
def test_knob_overrides_its_default(
    monkeypatch: pytest.MonkeyPatch, knob: str, raw: str, field: str, value: object
) -> None:
    monkeypatch.setenv(f"_CONDOR_{knob}", raw)
    assert getattr(load(), field) == value


def test_htsec_knob_from_environment_and_config_file(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    """HTSEC_<KNOB> in the environment; any knob in the built-in configuration's config.d."""
    load()
    (home / "config.d" / "50-site").write_text("HTSEC_GLIDEIN_LIFETIME = 7200\n")
    assert load().glidein_lifetime == 7200
    monkeypatch.setenv("HTSEC_GLIDEIN_LIFETIME", "60")
    assert load().glidein_lifetime == 60


BAD: list[tuple[str, str, str]] = [
    ("HTSEC_SERVE_CREDMON", "maybe", "is not true or false"),
    ("HTSEC_SERVE_API_DOCS", "2", "is not true or false"),
    ("HTSEC_SERVE_MAX_CONNECTIONS", "0", "is not a positive whole number"),
    ("HTSEC_SERVE_MAX_CONNECTIONS", "many", "is not a positive whole number"),
    ("HTSEC_TOKEN_REQUEST_MAX_PER_PEER", "-1", "is not a positive whole number"),
    ("SEC_TOKEN_MAX_AGE", "an hour", "is not a whole number of seconds"),
    ("HTSEC_GLIDEIN_LIFETIME", "1d", "is not a whole number of seconds"),
    ("HTSEC_GLIDEIN_KEY_NAME", "site", "must contain '{site}' once"),
    ("UID_DOMAIN", "a b", "must be a domain name"),
    ("TRUST_DOMAIN", "a,b", "without spaces or commas"),
]


@pytest.mark.parametrize(("knob", "raw", "needle"), BAD, ids=lambda x: str(x))
def test_bad_value_names_the_knob_and_the_form(
    monkeypatch: pytest.MonkeyPatch, knob: str, raw: str, needle: str
) -> None:
    monkeypatch.setenv(f"_CONDOR_{knob}", raw)
    with pytest.raises(ConfigError) as info:
        load()
    assert knob in str(info.value) and needle in str(info.value)


def test_unreadable_condor_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONDOR_CONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"CONDOR_CONFIG=.*missing cannot be read"):
        load()


def test_pool_configuration_is_used_and_environment_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "condor_config"
    cfg.write_text("TRUST_DOMAIN = cm.example.org\nHTSEC_SERVE_CREDMON = false\n")
    monkeypatch.delenv("_CONDOR_TRUST_DOMAIN")
    monkeypatch.setenv("CONDOR_CONFIG", str(cfg))
    before = dict(os.environ)
    s: Settings = load()
    assert (s.trust_domain, s.serve_credmon, s.builtin) == ("cm.example.org", False, False)
    assert dict(os.environ) == before


def test_load_does_not_edit_the_environment(tmp_path: Path) -> None:
    """A fresh interpreter, so htcondor2 is imported by load() itself: neither htsec (which
    once set CONDOR_CONFIG to its built-in file) nor htcondor2's import (which sets
    CONDOR_CONFIG=/dev/null when it finds no configuration) leaves anything in os.environ,
    which every child process would inherit."""
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "from htsec.config import load\n"
        "s = load()\n"
        "assert s.builtin and s.trust_domain == 'pool.example.org', s\n"
        "changed = {k for k in before.keys() | os.environ.keys()"
        " if before.get(k) != os.environ.get(k)}\n"
        "sys.exit(f'changed: {sorted(changed)}' if changed else 0)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize(
    "suffix",
    ["\nSEC_TOKEN_REVOCATION_EXPR = false", "/$(FULL_HOSTNAME)", "\rx", "/a\x1bb"],
    ids=["line break", "macro", "carriage return", "control character"],
)
def test_htsec_home_that_the_builtin_configuration_cannot_hold_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """HTSEC_HOME is written into the built-in condor_config as ``HTSEC_HOME = <value>``: a line
    break there would add knobs of the caller's choosing, and ``$(...)`` would be expanded to
    another directory than the one htsec creates. Refused, naming the knob; nothing written."""
    monkeypatch.setenv("HTSEC_HOME", str(tmp_path / "h") + suffix)
    with pytest.raises(ConfigError, match="HTSEC_HOME"):
        load()
    assert not (tmp_path / "h").exists()
