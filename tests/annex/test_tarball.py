"""htsec.annex.tarball: the configuration HTCondor reads, and the safe install at boot."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from htsec.annex.tarball import AnnexConfig, build, install
from htsec.errors import AnnexError

KNOBS = [
    "AnnexName",
    "IsAnnex",
    "COLLECTOR_HOST",
    "SEC_DEFAULT_AUTHENTICATION_METHODS",
    "SEC_CLIENT_AUTHENTICATION_METHODS",
    "SEC_DEFAULT_AUTHENTICATION",
    "SEC_DEFAULT_ENCRYPTION",
    "SEC_DEFAULT_INTEGRITY",
    "SEC_PASSWORD_FILE",
    "STARTD_ATTRS",
    "MASTER_ATTRS",
    "STARTD_NOCLAIM_SHUTDOWN",
    "MASTER.DAEMON_SHUTDOWN",
    "MASTER.DAEMON_SHUTDOWN_FAST",
    "START",
]


def _cfg(**kw: object) -> AnnexConfig:
    base: dict[str, object] = {
        "name": "burst",
        "collector": "cm.pool.example.org:9618",
        "lease_end": int(time.time()) + 3000,
        "idle": 900,
        "token": "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.e30.sig",
        "owners": ("alice", "bob"),
    }
    base.update(kw)
    return AnnexConfig(**base)  # type: ignore[arg-type]


def _htcondor_params(config_file: Path) -> dict[str, str | None]:
    code = (
        "import htcondor2, json, sys\n"
        "print(json.dumps({k: htcondor2.param.get(k) for k in sys.argv[1:]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
    env["CONDOR_CONFIG"] = str(config_file)
    done = subprocess.run(
        [sys.executable, "-c", code, *KNOBS], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_htcondor_reads_the_annex_configuration(tmp_path: Path) -> None:
    install(build(_cfg()), tmp_path, annex="burst")
    p = _htcondor_params(tmp_path / "config.d" / "00htsec-annex.config")
    assert p["AnnexName"] == '"burst"' and p["IsAnnex"] == "True"
    assert p["COLLECTOR_HOST"] == "cm.pool.example.org:9618"
    assert p["SEC_DEFAULT_AUTHENTICATION_METHODS"] == "IDTOKENS"
    assert p["SEC_CLIENT_AUTHENTICATION_METHODS"] == "IDTOKENS"
    assert p["SEC_DEFAULT_AUTHENTICATION"] == "REQUIRED"
    assert p["SEC_DEFAULT_ENCRYPTION"] == p["SEC_DEFAULT_INTEGRITY"] == "REQUIRED"
    assert not p["SEC_PASSWORD_FILE"]
    for attrs in (p["STARTD_ATTRS"], p["MASTER_ATTRS"]):
        assert attrs is not None
        assert {"AnnexName", "IsAnnex", "EC2InstanceID"} <= set(attrs.split())
    assert str(p["STARTD_NOCLAIM_SHUTDOWN"]) == "900"
    assert p["MASTER.DAEMON_SHUTDOWN"] is not None and "time() >=" in p["MASTER.DAEMON_SHUTDOWN"]
    assert p["START"] is not None and '"alice,bob"' in p["START"]


def test_lease_shutdown_expression_fires_only_after_the_lease(tmp_path: Path) -> None:
    import classad2

    for lease_end, fires in ((int(time.time()) - 5, True), (int(time.time()) + 3000, False)):
        root = tmp_path / str(lease_end)
        root.mkdir()
        install(build(_cfg(lease_end=lease_end)), root, annex="burst")
        p = _htcondor_params(root / "config.d" / "00htsec-annex.config")
        expr = str(p["MASTER.DAEMON_SHUTDOWN"]).replace("$(AnnexLeaseEnd)", str(lease_end))
        assert classad2.ExprTree(expr).eval() is fires


def test_install_writes_token_0600_and_config_0644(tmp_path: Path) -> None:
    files = install(build(_cfg()), tmp_path, annex="burst")
    token = tmp_path / "tokens.d" / "htsec-annex-burst"
    assert token in files and token.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tokens.d").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "config.d" / "00htsec-annex.config").stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "htsec-annex.json").exists()


def test_foreign_archive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AnnexError, match="for annex 'other', not 'burst'"):
        install(build(_cfg(name="other")), tmp_path, annex="burst")
    assert not (tmp_path / "tokens.d").exists()


def test_corrupted_archive_is_refused(tmp_path: Path) -> None:
    data = bytearray(build(_cfg()))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(AnnexError, match=r"corrupted|no readable"):
        install(bytes(data), tmp_path, annex="burst")


def _evil(member: tarfile.TarInfo, body: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        manifest = json.dumps({"annex": "burst"}).encode()
        info = tarfile.TarInfo("htsec-annex.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        member.size = len(body) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(body) if member.isfile() else None)
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("/etc/passwd"),
        tarfile.TarInfo("config.d/../../escape"),
        tarfile.TarInfo("passwords.d/POOL"),
        tarfile.TarInfo("config.d/sub/deep"),
        tarfile.TarInfo("config.d"),
        tarfile.TarInfo("tokens.d/."),
        _link("config.d/link", "/etc/shadow", tarfile.SYMTYPE),
        _link("config.d/hard", "/etc/shadow", tarfile.LNKTYPE),
        _link("config.d/dev", "", tarfile.CHRTYPE),
    ],
    ids=[
        "absolute",
        "dotdot",
        "passwords",
        "nested",
        "file-as-config-dir",
        "file-as-tokens-dir",
        "symlink",
        "hardlink",
        "device",
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, member: tarfile.TarInfo) -> None:
    with pytest.raises(AnnexError, match=r"leaves the tree|link or device|not a file directly"):
        install(_evil(member), tmp_path / "root", annex="burst")
    assert not (tmp_path / "escape").exists()


def test_install_refuses_a_symlinked_config_dir(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "config.d").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AnnexError, match="is not a directory"):
        install(build(_cfg()), tmp_path / "root", annex="burst")
    assert not list((tmp_path / "elsewhere").iterdir())
