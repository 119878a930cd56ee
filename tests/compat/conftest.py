"""Compatibility rig: HTCondor's own IDTOKENS code as the reference for htsec.

The `htcondor` wheel (a dependency of htsec) ships HTCondor's C++ library,
``htcondor.libs/libcondor_utils_*.so``. This rig compiles two small programs against it with
Debian's ``g++`` (see shared/TESTING.md, "HTCondor's library as a reference"):

* ``condor_mint.cpp`` mints a token with ``Condor_Auth_Passwd::generate_token``, exactly as
  ``condor_token_create`` does;
* ``condor_handshake.cpp`` forks a client and a server on a 127.0.0.1 port and runs the real
  IDTOKENS exchange (``ReliSock`` + ``Condor_Auth_Passwd::authenticate`` /
  ``authenticate_continue``); the server reports the identity it authenticated.

and an ``LD_PRELOAD`` shim (``fake_clock_rand.cpp``) that pins the clock and ``RAND_bytes`` so
the minted tokens are reproducible (shared/FORMATS.md section 7 vectors).

Fixtures (all session-scoped except the pools):

* ``condor_tools``: the compiled programs (:class:`CondorTools`); skipped with a reason when
  ``g++`` or the wheel's library is missing, unless ``CI`` is set, in which case that fails.
* ``condor_mint(config, key_name, identity, lifetime, authz) -> str``
* ``condor_handshake(config, token) -> (ok, identity_or_error)``
* ``make_condor_pool(...)`` / ``condor_pool``: a fresh pool directory (config file, key files with
  random secrets that contain NUL bytes, token directory) per test (:class:`CondorPool`).
* ``htsec_cli``: the ``htsec`` command line (``token create`` / ``token verify --json``) run as a
  subprocess with ``CONDOR_CONFIG`` pointing at a pool (:class:`HtsecCli`).

``config`` arguments accept a :class:`CondorPool` or the path of a config file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

HERE = Path(__file__).resolve().parent

#: FORMATS.md section 7: a key file is the secret XOR-ed with this repeating mask.
KEY_FILE_MASK = bytes.fromhex("deadbeef")

#: Knobs that can place the POOL key: the token knob, or the pool password file it defaults to.
POOL_KEY_KNOBS = ("SEC_TOKEN_POOL_SIGNING_KEY_FILE", "SEC_PASSWORD_FILE")

#: Programs are killed after this long; a handshake normally takes milliseconds.
PROGRAM_TIMEOUT = 30

#: Override for the htsec command line (e.g. "/path/to/htsec" or "python -m htsec.cli"), read at
#: import time so that fixtures scrubbing HTSEC_* from the environment do not hide it.
_HTSEC_CLI_OVERRIDE = os.environ.get("HTSEC_TEST_CLI", "")

# Environment variables that would leak the developer's HTCondor or htsec set-up into a program.
_SCRUBBED_PREFIXES = ("_CONDOR_", "HTSEC_", "CONDOR_")


def scramble(data: bytes) -> bytes:
    """XOR with the repeating DE AD BE EF mask (its own inverse), as HTCondor's key files are."""
    return bytes(b ^ KEY_FILE_MASK[i % 4] for i, b in enumerate(data))


def random_secret(length: int = 64) -> bytes:
    """Random key material with NUL bytes both in the secret and in the scrambled file.

    ``secret[3] == 0`` puts a NUL in the secret; a byte equal to the mask at its position
    puts a NUL in the file on disk. HTCondor keeps both (only the legacy knob
    SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD truncates), so a reader that stops at the first NUL
    derives another key and fails these tests.
    """
    out = bytearray(secrets.token_bytes(length))
    out[3] = 0
    pos = length // 2
    out[pos] = KEY_FILE_MASK[pos % 4]
    out[-1] = 0
    return bytes(out)


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.pop("LD_PRELOAD", None)
    env.update(extra)
    return env


def _skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the compat rig must run)")
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# Pools


@dataclass
class CondorPool:
    """A throw-away HTCondor configuration with token signing keys and a token directory."""

    root: Path
    config: Path
    passwords_dir: Path
    tokens_dir: Path
    pool_key_file: Path
    trust_domain: str
    secrets: dict[str, bytes] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.config)

    def key_path(self, name: str) -> Path:
        """Where HTCondor reads key ``name``: POOL has its own knob, others are in passwords.d."""
        if name in ("", "POOL"):
            return self.pool_key_file
        return self.passwords_dir / name

    def write_key_file(self, name: str, file_bytes: bytes) -> Path:
        """Write a key file with exactly these on-disk bytes, 0600, owned by this user."""
        path = self.key_path(name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, file_bytes)
        finally:
            os.close(fd)
        self.secrets[name or "POOL"] = scramble(file_bytes)
        return path

    def write_key(self, name: str, secret: bytes | None = None) -> bytes:
        """Store ``secret`` (random with NULs by default) as key ``name``; return the secret."""
        if secret is None:
            secret = random_secret()
        self.write_key_file(name, scramble(secret))
        return secret

    def remove_key(self, name: str) -> None:
        self.key_path(name).unlink()
        self.secrets.pop(name or "POOL", None)

    def add_config(self, text: str) -> None:
        """Append configuration lines (e.g. SEC_TOKEN_REVOCATION_EXPR = ...)."""
        with self.config.open("a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for a program that should read this pool's configuration."""
        return _clean_env(
            {
                "CONDOR_CONFIG": str(self.config),
                "HTSEC_HOME": str(self.root / "htsec-home"),
                **extra,
            }
        )


def _write_pool(
    root: Path,
    *,
    trust_domain: str,
    keys: Sequence[str],
    pool_key_knob: str | None,
) -> CondorPool:
    root.mkdir(mode=0o700, parents=True)
    dirs = {
        name: root / name for name in ("local", "log", "spool", "execute", "lock", "run", "etc")
    }
    for d in dirs.values():
        d.mkdir(mode=0o700)
    passwords_dir = root / "passwords.d"
    tokens_dir = root / "tokens.d"
    passwords_dir.mkdir(mode=0o700)
    tokens_dir.mkdir(mode=0o700)
    if pool_key_knob is None:
        # HTCondor's default chain: SEC_TOKEN_POOL_SIGNING_KEY_FILE = $(SEC_PASSWORD_FILE),
        # SEC_PASSWORD_FILE = $(SEC_PASSWORD_DIRECTORY)/POOL.
        pool_key_file = passwords_dir / "POOL"
    elif pool_key_knob in POOL_KEY_KNOBS:
        # Deliberately outside passwords.d: a reader must follow the knob.
        pool_key_file = root / "keys" / pool_key_knob.lower()
    else:
        raise ValueError(f"pool_key_knob must be None or one of {POOL_KEY_KNOBS}")
    lines = [
        "# Written by tests/compat/conftest.py",
        f"LOCAL_DIR = {dirs['local']}",
        f"LOG = {dirs['log']}",
        f"SPOOL = {dirs['spool']}",
        f"EXECUTE = {dirs['execute']}",
        f"LOCK = {dirs['lock']}",
        f"RUN = {dirs['run']}",
        f"ETC = {dirs['etc']}",
        f"CONDOR_IDS = {os.getuid()}.{os.getgid()}",
        f"TRUST_DOMAIN = {trust_domain}",
        f"SEC_PASSWORD_DIRECTORY = {passwords_dir}",
        f"SEC_TOKEN_DIRECTORY = {tokens_dir}",
        f"SEC_TOKEN_SYSTEM_DIRECTORY = {tokens_dir}",
        "NETWORK_INTERFACE = 127.0.0.1",
        "BIND_ALL_INTERFACES = False",
    ]
    if pool_key_knob is not None:
        lines.append(f"{pool_key_knob} = {pool_key_file}")
    config = root / "condor_config"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pool = CondorPool(
        root=root,
        config=config,
        passwords_dir=passwords_dir,
        tokens_dir=tokens_dir,
        pool_key_file=pool_key_file,
        trust_domain=trust_domain,
    )
    for name in keys:
        pool.write_key(name)
    return pool


MakePool = Callable[..., CondorPool]


@pytest.fixture
def make_condor_pool(tmp_path: Path) -> MakePool:
    """Factory: ``make_condor_pool(trust_domain=..., keys=("POOL", "site1"), pool_key_knob=...)``.

    Each call makes a new pool directory under the test's tmp_path, with a fresh random secret
    (containing NUL bytes) for every key named in ``keys``. The POOL key file is placed outside
    passwords.d by ``SEC_TOKEN_POOL_SIGNING_KEY_FILE`` (default) or by ``SEC_PASSWORD_FILE``
    (which the former defaults to), or, with ``pool_key_knob=None``, left at HTCondor's default
    ``$(SEC_PASSWORD_DIRECTORY)/POOL``.
    """
    counter = iter(range(1000))

    def make(
        *,
        trust_domain: str = "compat.example.org",
        keys: Sequence[str] = ("POOL", "site1"),
        pool_key_knob: str | None = "SEC_TOKEN_POOL_SIGNING_KEY_FILE",
    ) -> CondorPool:
        return _write_pool(
            tmp_path / f"pool{next(counter)}",
            trust_domain=trust_domain,
            keys=keys,
            pool_key_knob=pool_key_knob,
        )

    return make


@pytest.fixture
def condor_pool(make_condor_pool: MakePool) -> CondorPool:
    """A fresh pool with random POOL and ``site1`` keys."""
    return make_condor_pool()


# --------------------------------------------------------------------------------------------
# The compiled programs


class CondorToolError(RuntimeError):
    """A rig program failed for a reason other than a rejected token."""


@dataclass(frozen=True)
class HandshakeResult:
    ok: bool
    identity: str | None
    error: str | None
    #: What the server put in the session's policy ad (LimitAuthorization, AuthTokenId, ...).
    policy: dict[str, str]
    server_log: str


@dataclass(frozen=True)
class CondorTools:
    mint_program: Path
    handshake_program: Path
    preload_shim: Path

    def mint(
        self,
        config: os.PathLike[str] | str,
        key_name: str,
        identity: str,
        lifetime: int | None = -1,
        authz: Sequence[str] = (),
        *,
        fake_time: int | None = None,
        fake_rand_start: int | None = None,
    ) -> str:
        """Mint a token with HTCondor's generate_token (lifetime None or -1: no exp claim)."""
        args = [str(self.mint_program), "-identity", identity, "-key", key_name]
        if lifetime is not None and lifetime >= 0:
            args += ["-lifetime", str(lifetime)]
        for item in authz:
            args += ["-authz", item]
        extra = {"CONDOR_CONFIG": os.fspath(config)}
        if fake_time is not None or fake_rand_start is not None:
            extra["LD_PRELOAD"] = str(self.preload_shim)
            if fake_time is not None:
                extra["COMPAT_FAKE_TIME"] = str(fake_time)
            if fake_rand_start is not None:
                extra["COMPAT_FAKE_RAND_START"] = str(fake_rand_start)
        proc = subprocess.run(
            args,
            env=_clean_env(extra),
            capture_output=True,
            timeout=PROGRAM_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise CondorToolError(
                f"condor_mint exited {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode().strip()

    def handshake(
        self,
        config: os.PathLike[str] | str,
        token: str,
        *,
        server_keys: Sequence[str] | None = None,
    ) -> HandshakeResult:
        """Run HTCondor's IDTOKENS exchange; the client's token directory holds only ``token``."""
        token_dir = Path(tempfile.mkdtemp(prefix="compat-client-tokens-"))
        try:
            token_file = token_dir / "token"
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, token.encode() + b"\n")
            finally:
                os.close(fd)
            args = [str(self.handshake_program), "-debug", "-timeout", "15"]
            if server_keys is not None:
                args += ["-server-keys", ",".join(server_keys)]
            env = _clean_env(
                {
                    "CONDOR_CONFIG": os.fspath(config),
                    "_CONDOR_SEC_TOKEN_DIRECTORY": str(token_dir),
                }
            )
            proc = subprocess.run(
                args, env=env, capture_output=True, timeout=PROGRAM_TIMEOUT, check=False
            )
        finally:
            shutil.rmtree(token_dir, ignore_errors=True)
        log = proc.stderr.decode(errors="replace")
        lines = proc.stdout.decode(errors="replace").strip().splitlines()
        try:
            report: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError) as exc:
            raise CondorToolError(
                f"condor_handshake exited {proc.returncode} without a report: {log[-2000:]}"
            ) from exc
        if proc.returncode not in (0, 1):
            raise CondorToolError(f"condor_handshake set-up failed: {report} {log[-2000:]}")
        ok = proc.returncode == 0 and bool(report.get("ok"))
        error = None
        if not ok:
            error = f"{report.get('error', 'handshake failed')}; {_why(log)}"
        return HandshakeResult(
            ok=ok,
            identity=report.get("identity") if ok else None,
            error=error,
            policy=dict(report.get("policy") or {}),
            server_log=log,
        )


_LOG_HINTS = ("token", "jwt", "key", "expired", "revoked", "failed", "error", "match", "jti")


def _why(log: str) -> str:
    """The lines of HTCondor's D_SECURITY log that explain a failure."""
    picked = []
    for line in log.splitlines():
        text = line.split(" ", 2)[-1] if line[:2].isdigit() else line
        if any(h in text.lower() for h in _LOG_HINTS):
            picked.append(text.strip())
    return " | ".join(picked[-8:]) or "no reason logged"


def _htcondor_libs_dir() -> Path | None:
    candidates = []
    spec = importlib.util.find_spec("htcondor")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location).parent / "htcondor.libs")
    candidates.append(Path(sysconfig.get_paths()["platlib"]) / "htcondor.libs")
    for candidate in candidates:
        if any(candidate.glob("libcondor_utils_*.so")):
            return candidate
    return None


def _compile(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="session")
def condor_tools(tmp_path_factory: pytest.TempPathFactory) -> CondorTools:
    """Compile the rig's programs once per session (about 2 s)."""
    gxx = shutil.which("g++")
    if gxx is None:
        _skip_or_fail("g++ is not installed (Debian package g++); cannot build the compat rig")
    libdir = _htcondor_libs_dir()
    if libdir is None:
        _skip_or_fail("the htcondor wheel's htcondor.libs/libcondor_utils_*.so was not found")
    utils = sorted(libdir.glob("libcondor_utils_*.so"))[-1]
    classad = sorted(libdir.glob("libclassad-*.so*"))[-1]
    out = tmp_path_factory.mktemp("condor-tools")
    link = [str(utils), str(classad), f"-Wl,-rpath,{libdir}"]
    flags = ["-std=c++17", "-O1", "-Wall", "-Wextra"]

    def build(output: str, source: str, *extra: str) -> list[str]:
        return [gxx, *flags, "-o", str(out / output), str(HERE / source), *extra]

    jobs = {
        "condor_mint": build("condor_mint", "condor_mint.cpp", *link),
        "condor_handshake": build("condor_handshake", "condor_handshake.cpp", *link),
        "fake_clock_rand.so": build(
            "fake_clock_rand.so", "fake_clock_rand.cpp", "-shared", "-fPIC", "-ldl"
        ),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = dict(zip(jobs, pool.map(_compile, jobs.values()), strict=True))
    for name, proc in results.items():
        if proc.returncode != 0:
            pytest.fail(f"building {name} failed:\n{proc.stderr}")
    return CondorTools(
        mint_program=out / "condor_mint",
        handshake_program=out / "condor_handshake",
        preload_shim=out / "fake_clock_rand.so",
    )


@pytest.fixture(scope="session")
def condor_mint(condor_tools: CondorTools) -> Callable[..., str]:
    """``condor_mint(config, key_name, identity, lifetime, authz) -> token`` (HTCondor's code)."""
    return condor_tools.mint


@pytest.fixture(scope="session")
def condor_handshake(condor_tools: CondorTools) -> Callable[..., tuple[bool, str]]:
    """``condor_handshake(config, token) -> (ok, identity or error)`` (HTCondor's server)."""

    def handshake(config: os.PathLike[str] | str, token: str) -> tuple[bool, str]:
        result = condor_tools.handshake(config, token)
        if result.ok:
            return True, result.identity or ""
        return False, result.error or "handshake failed"

    return handshake


# --------------------------------------------------------------------------------------------
# The htsec command line


@dataclass(frozen=True)
class VerifyResult:
    returncode: int
    report: dict[str, Any]

    @property
    def accepted(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class HtsecCli:
    command: tuple[str, ...]

    def _run(
        self, config: os.PathLike[str] | str, args: Sequence[str]
    ) -> subprocess.CompletedProcess[str]:
        env = _clean_env({"CONDOR_CONFIG": os.fspath(config)})
        if isinstance(config, CondorPool):
            env = config.env()
        return subprocess.run(
            [*self.command, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROGRAM_TIMEOUT,
            check=False,
        )

    def create(
        self,
        config: os.PathLike[str] | str,
        identity: str,
        key: str = "POOL",
        lifetime: int | None = None,
        authz: Sequence[str] = (),
    ) -> str:
        """``htsec token create --identity ID --key NAME [--lifetime S] [--authz P]...``."""
        args = ["token", "create", "--identity", identity, "--key", key]
        if lifetime is not None and lifetime >= 0:
            args += ["--lifetime", str(lifetime)]
        for item in authz:
            args += ["--authz", item]
        proc = self._run(config, args)
        if proc.returncode != 0:
            pytest.fail(
                f"htsec token create exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        token = proc.stdout.strip()
        assert token.count(".") == 2, f"htsec token create printed {proc.stdout!r}"
        return token

    def verify(self, config: os.PathLike[str] | str, token: str) -> VerifyResult:
        """``htsec token verify TOKEN --json``: exit 0 valid, 1 rejected; stdout is JSON."""
        proc = self._run(config, ["token", "verify", token, "--json"])
        if proc.returncode not in (0, 1):
            pytest.fail(
                f"htsec token verify exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            pytest.fail(f"htsec token verify printed no JSON: {proc.stdout!r} {proc.stderr!r}")
        assert isinstance(report, dict), report
        if proc.returncode == 1:
            assert report.get("error"), f"rejected without an error: {report}"
        return VerifyResult(proc.returncode, report)


def _htsec_command() -> tuple[str, ...]:
    if _HTSEC_CLI_OVERRIDE:
        return tuple(_HTSEC_CLI_OVERRIDE.split())
    beside_python = Path(sys.executable).with_name("htsec")
    if beside_python.exists():
        return (str(beside_python),)
    found = shutil.which("htsec")
    if found:
        return (found,)
    pytest.fail("the htsec command is not installed (run `uv sync`)")


@pytest.fixture(scope="session")
def htsec_cli() -> Iterator[HtsecCli]:
    yield HtsecCli(_htsec_command())
