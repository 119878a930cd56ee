"""Per-site keys for glidein factories (seed 002, FORMATS.md section 7): rotating one site's key
revokes that site's tokens and no other's; tokens travel to the factory encrypted (age)."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run


@pytest.fixture
def factory(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "factory.key"
    r = run("glidein", "keygen", "--output", str(key))
    assert r.code == 0, r.err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    return key, r.out.strip()


def pilot(site: str, recipient: str, out: Path, *extra: str) -> Path:
    r = run(
        "glidein", "token", "--site", site, "--recipient", recipient, "--output", str(out), *extra
    )
    assert r.code == 0, r.err
    return out


def unwrap(key: Path, envelope: Path) -> str:
    r = run("glidein", "unwrap", "-i", str(key), str(envelope))
    assert r.code == 0, r.err
    return r.out.strip()


def test_rotation_kills_one_site_only(
    home: Path, tmp_path: Path, factory: tuple[Path, str]
) -> None:
    key, public = factory
    a = unwrap(key, pilot("SiteA", public, tmp_path / "a.age"))
    b = unwrap(key, pilot("SiteB", public, tmp_path / "b.age"))
    va = json.loads(run("token", "verify", a, "--json").out)
    assert va["key"] == "site-SiteA"
    assert va["authorizations"] == ["READ", "ADVERTISE_STARTD", "ADVERTISE_MASTER"]
    assert va["identity"].startswith("SiteA@")
    assert va["expires"] - va["issued"] == 86400
    assert run("token", "verify", b).code == 0
    r = run("key", "rotate", "site-SiteA", "--yes")
    assert r.code == 0 and "1 issued token(s)" in r.out
    dead = json.loads(run("token", "verify", a, "--json").out)
    assert dead["valid"] is False and dead["reason"] == "bad_signature"
    assert run("token", "verify", b).code == 0  # the other site is untouched
    fresh = unwrap(key, pilot("SiteA", public, tmp_path / "a2.age"))
    assert run("token", "verify", fresh).code == 0


def test_envelope_is_armored_age_and_not_plaintext(
    tmp_path: Path, factory: tuple[Path, str]
) -> None:
    key, public = factory
    env = pilot("SiteC", public, tmp_path / "c.age", "--lifetime", "600")
    data = env.read_bytes()
    assert data.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert b"eyJ" not in data  # no JWT in the clear
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    token = unwrap(key, env)
    v = json.loads(run("token", "verify", token, "--json").out)
    assert v["expires"] - v["issued"] == 600


@pytest.mark.skipif(
    shutil.which("age") is None,
    reason="Debian 'age' not installed (scripts/setup --test installs it)",
)
def test_reference_age_tool_decrypts(tmp_path: Path, factory: tuple[Path, str]) -> None:
    """The envelope is standard age: the reference 'age' tool opens it with the factory key."""
    key, public = factory
    env = pilot("SiteD", public, tmp_path / "d.age")
    out = subprocess.run(["age", "-d", "-i", str(key), str(env)], capture_output=True, check=True)
    assert run("token", "verify", out.stdout.decode().strip()).code == 0


def test_wrong_factory_key(tmp_path: Path, factory: tuple[Path, str]) -> None:
    _, public = factory
    other = tmp_path / "other.key"
    run("glidein", "keygen", "-o", str(other))
    env = pilot("SiteE", public, tmp_path / "e.age")
    r = run("glidein", "unwrap", "-i", str(other), str(env))
    assert r.code == 2 and "not made for this factory" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--site", "../etc", "--recipient", "age1x"], "not an age"),
        (["--site", "ok", "--recipient", "ssh-rsa AAAA"], "not an age"),
    ],
)
def test_bad_input(args: list[str], needle: str) -> None:
    r = run("glidein", "token", *args)
    assert r.code == 2 and needle in r.err


def test_bad_site_name(factory: tuple[Path, str]) -> None:
    _, public = factory
    r = run("glidein", "token", "--site", "../etc", "--recipient", public)
    assert r.code == 2 and "site name" in r.err


def test_glideinwms_key_naming(tmp_path: Path, factory: tuple[Path, str], home: Path) -> None:
    """With HTSEC_GLIDEIN_KEY_NAME = {site}, the key is passwords.d/<GLIDEIN_Site> (GlideinWMS)."""
    _, public = factory
    env = {"_CONDOR_HTSEC_GLIDEIN_KEY_NAME": "{site}"}
    r = run(
        "glidein",
        "token",
        "--site",
        "CMS_T2",
        "--recipient",
        public,
        "-o",
        str(tmp_path / "x"),
        env=env,
    )
    assert r.code == 0, r.err
    assert (home / "passwords.d" / "CMS_T2").is_file()


def test_pilot_identity_is_never_a_users(tmp_path: Path, factory: tuple[Path, str]) -> None:
    """A pilot is SITE@glidein.<host>, never user@$(UID_DOMAIN): even when UID_DOMAIN is this
    host (HTCondor's default), and even when asked for with --identity."""
    key, public = factory
    host = socket.getfqdn()
    env = {"_CONDOR_UID_DOMAIN": host}
    r = run("glidein", "token", "--site", "alice", "--recipient", public, "-o", str(tmp_path / "a"))
    assert r.code == 0, r.err
    info = json.loads(run("token", "verify", unwrap(key, tmp_path / "a"), "--json").out)
    assert info["identity"] == f"alice@glidein.{host}"
    r = run(
        "glidein",
        "token",
        "--site",
        "alice",
        "--recipient",
        public,
        "--identity",
        f"alice@{host.upper()}",
        env=env,
    )
    assert r.code == 2 and "user alice's identity" in r.err and "BEGIN AGE" not in r.out
