"""A real SciTokens relying party for the tests: XRootD with its SciTokens plugin.

TESTING.md, "SciTokens relying party: XRootD". Debian packages: ``xrootd-server`` (the daemon
and XrdHttp), ``xrootd-scitokens-plugins`` (``libXrdAccSciTokens-5.so``) and ``scitokens-cpp``
(the ``scitokens-verify`` tool; ``libscitokens0`` comes with both). All three are in the
``test_pkgs`` of ``scripts/setup``.

What is here:

* :func:`make_test_ca` - a throw-away CA and a server certificate for ``localhost``,
  ``127.0.0.1`` and ``::1`` (:class:`LocalCA`).
* :func:`serve_issuer` - a tiny HTTPS server publishing an issuer's
  ``/.well-known/openid-configuration`` and JWKS (:class:`IssuerServer`), for tests that mint
  their own tokens.
* :func:`start_xrootd` - XRootD serving a data dir over HTTP on 127.0.0.1, every request
  authorised by ``libXrdAccSciTokens`` (:class:`XRootD`).
* :func:`scitokens_verify` - Debian's ``scitokens-verify``: signature, ``exp``/``nbf`` and
  profile checks with a real key fetch (no audience or scope check).
* :func:`require` - skip (not root) or fail (``CI`` set and packages missing).

Trusting a test issuer. scitokens-cpp accepts only ``https://`` issuers and fetches the
discovery document and JWKS with libcurl's compiled-in CA bundle
(``/etc/ssl/certs/ca-certificates.crt``); ``SSL_CERT_FILE``/``CURL_CA_BUNDLE`` are ignored. The
programs started here trust extra CA certificates (``trust=[ca.cert, ...]``) in one of two ways:

* ``namespace`` (preferred, used when ``unshare --mount`` works): the program runs in a private
  mount namespace where ``/etc/ssl/certs`` is bind-mounted over by a directory holding only
  ``ca-certificates.crt`` = the system bundle + the extra CAs. The machine's trust store is never
  touched; nothing to clean up. (The directory, not the file: ``update-ca-certificates`` replaces
  the file by a rename, and the kernel then drops a file bind mount in every other namespace,
  so a daemon would silently lose the test CA.)
* ``system``: the CA goes into ``/usr/local/share/ca-certificates/htsec-test-<random>.crt`` and
  ``update-ca-certificates`` runs; removal runs it again. Removal happens in ``stop()``/``close()``,
  in a ``finally``, in an ``atexit`` hook, and in a watchdog process that does it when the test
  process dies (even by SIGKILL), so the trust store is never left modified.

``auto`` (the default) picks ``namespace`` when it works, else ``system``; the environment
variable ``HTSEC_TEST_CA_TRUST`` (``auto``/``namespace``/``system``, read at import time because
the tests' autouse fixture scrubs ``HTSEC_*``) or a ``trust_mode=`` argument overrides it.

Key caches. scitokens-cpp keeps fetched keys in ``$XDG_CACHE_HOME/scitokens/scitokens_cpp.sqllite``
(table ``keycache(issuer, keys)``) for 10 minutes and does not refetch on an unknown ``kid``; each
XRootD gets its own cache dir (``XRootD.cache``, :meth:`XRootD.forget_keys` empties it) and each
:func:`scitokens_verify` call a fresh one. XrdAccSciTokens also caches the ACLs of every token
string it accepted (for at least 60 s, even past ``exp``), so a token once accepted stays
accepted in that daemon: test expiry with a token that was already expired when first shown.

Relying-party behaviour seen here (XRootD 5.5.3, scitokens-cpp 0.7.3; tests/rigs/
test_xrootd_rig.py pins it): no leeway at all (``nbf`` or ``iat`` 5 s ahead, or ``exp`` 1 s
past, is refused; the clocks must agree); ``nbf``, ``aud`` and ``sub`` are required, ``jti`` is
not; ``aud`` may be a list; ``ANY`` (SciTokens profile) and ``https://wlcg.cern.ch/jwt/v1/any``
(WLCG profile) match every audience; ``storage.read``/``storage.create`` work like
``read``/``write``; scope paths match as plain string prefixes (``read:/user/alice`` reads
``/user/alicex``).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import glob
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_FILES",
    "PACKAGES",
    "CATrust",
    "IssuerServer",
    "LocalCA",
    "XRootD",
    "XRootDError",
    "XRootDUnavailable",
    "ca_trust",
    "check_available",
    "make_test_ca",
    "require",
    "scitokens_verify",
    "serve_issuer",
    "start_xrootd",
    "trust_mode",
    "wait_for",
]

PACKAGES = ("xrootd-server", "xrootd-scitokens-plugins", "scitokens-cpp")
SETUP_HINT = f"run scripts/setup --test (it installs the Debian packages {', '.join(PACKAGES)})"
RUN_AS = "nobody"
START_TIMEOUT = 20  # seconds for XRootD to answer HTTP
CMD_TIMEOUT = 60  # seconds any one helper command may take
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # libcurl's compiled-in CA file
SYSTEM_CA_DIR = Path("/usr/local/share/ca-certificates")
SYSTEM_CA_PREFIX = "htsec-test-"
_SYSTEM_CA_LOCK = Path(tempfile.gettempdir()) / "htsec-test-ca-trust.lock"

#: Files in the exported tree unless ``files=``/``data_dir=`` say otherwise (URL path: content).
DEFAULT_FILES: Mapping[str, str] = {
    "/user/alice/hello.txt": "hello alice\n",
    "/user/alice/sub/deep.txt": "deep alice\n",
    "/user/alicex/hello.txt": "hello alicex\n",
    "/user/bob/hello.txt": "hello bob\n",
    "/public/readme.txt": "readme\n",
}

TrustMode = Literal["auto", "namespace", "system"]
_TRUST_MODE_ENV = os.environ.get("HTSEC_TEST_CA_TRUST", "auto")

# Undoes what a test process registered (one JSON object a line on stdin) once that process
# closes the pipe or dies, unless told "disarm" last. Runs in its own session, as root.
_WATCHDOG = r"""
import json, os, shutil, signal, subprocess, sys, time
actions = []
for line in sys.stdin:
    msg = json.loads(line)
    if msg == "disarm":
        actions = []
    else:
        actions.append(msg)

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False

for a in sorted(actions, key=lambda a: "kill" not in a):  # kill first, then clean up
    try:
        if "kill" in a:
            pid = a["kill"]
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[21] != str(a["start"]):
                    continue  # another process got that pid
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        elif "rmtree" in a:
            shutil.rmtree(a["rmtree"], ignore_errors=True)
        elif "remove_ca" in a:
            import fcntl
            with open(a["lock"], "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    os.unlink(a["remove_ca"])
                except FileNotFoundError:
                    pass
                subprocess.run(["update-ca-certificates"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=120)
    except Exception:
        pass
"""


class XRootDUnavailable(Exception):
    """The rig cannot run here. ``missing`` is true when packages are missing (a CI run then
    fails), false when it cannot run for another reason (always a skip)."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


class XRootDError(RuntimeError):
    """XRootD failed to start; the message holds the log's tail."""


# -- availability ----------------------------------------------------------------------------


def _find_lib(name: str) -> str | None:
    for d in ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib*"):
        hits = glob.glob(f"{d}/{name}")
        if hits:
            return hits[0]
    return None


def check_available(*, xrootd: bool = True, verify: bool = False) -> None:
    """Raise :class:`XRootDUnavailable` unless the programs and libraries are installed and we
    are root (to drop to ``nobody``, bind-mount a CA bundle or update the trust store)."""
    missing = []
    if xrootd:
        if not shutil.which("xrootd"):
            missing.append("xrootd (xrootd-server)")
        if not _find_lib("libXrdHttp-5.so"):
            missing.append("libXrdHttp-5.so (xrootd-server)")
        if not _find_lib("libXrdAccSciTokens-5.so"):
            missing.append("libXrdAccSciTokens-5.so (xrootd-scitokens-plugins)")
    if verify and not shutil.which("scitokens-verify"):
        missing.append("scitokens-verify (scitokens-cpp)")
    if missing:
        raise XRootDUnavailable(f"missing {', '.join(missing)}: {SETUP_HINT}", missing=True)
    if os.geteuid() != 0:
        raise XRootDUnavailable(
            "the XRootD rig needs root (it runs XRootD as 'nobody' and makes a test CA "
            "trusted by scitokens-cpp): run the tests as root, as CI does",
            missing=False,
        )
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        raise XRootDUnavailable(f"no '{RUN_AS}' user to run XRootD as", missing=False) from None


def require(*, xrootd: bool = True, verify: bool = False) -> None:
    """:func:`check_available`, as a pytest skip (or a failure when ``CI`` is set and packages
    are missing)."""
    unavailable: XRootDUnavailable | None = None
    try:
        check_available(xrootd=xrootd, verify=verify)
    except XRootDUnavailable as exc:
        unavailable = exc
    if unavailable is not None:
        _skip_or_fail(unavailable)


def _skip_or_fail(exc: XRootDUnavailable) -> NoReturn:
    if exc.missing and os.environ.get("CI"):
        pytest.fail(f"{exc} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(str(exc))


# -- a test CA and an HTTPS issuer -----------------------------------------------------------


@dataclass(frozen=True)
class LocalCA:
    """PEM files: a CA certificate and key, and a server certificate (with its key) it signed
    for ``hosts``."""

    cert: Path
    key: Path
    server_cert: Path
    server_key: Path
    hosts: tuple[str, ...]

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        return ctx


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_test_ca(
    tmp: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"), *, days: int = 2
) -> LocalCA:
    """A fresh EC P-256 CA in ``tmp`` (``ca.pem``, ``ca.key``) and a server certificate for
    ``hosts`` (DNS names or IP addresses; ``server.pem``, ``server.key``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"htsec test CA {secrets.token_hex(4)}")]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca = LocalCA(tmp / "ca.pem", tmp / "ca.key", tmp / "server.pem", tmp / "server.key", (*hosts,))
    ca.cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    ca.server_cert.write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    for path, key in ((ca.key, ca_key), (ca.server_key, srv_key)):
        path.touch(mode=0o600)
        path.write_bytes(_pem_key(key))
    return ca


class IssuerServer:
    """An HTTPS server (thread) publishing ``<issuer>/.well-known/openid-configuration`` and
    ``<issuer>/jwks``. ``jwks`` may be replaced at any time; ``requests`` lists the paths asked
    for (to see when a relying party fetched keys); ``fail`` (an HTTP status) makes every
    answer that status."""

    def __init__(self, ca: LocalCA, jwks: Mapping[str, Any], host: str, path: str) -> None:
        self.jwks: Mapping[str, Any] = jwks
        self.requests: list[str] = []
        self.fail: int | None = None
        self.extra_metadata: dict[str, Any] = {}
        rig = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rig.requests.append(self.path)
                meta = f"{path}/.well-known/openid-configuration"
                if rig.fail:
                    status, doc = rig.fail, {"error": "injected"}
                elif self.path == meta:
                    status = 200
                    doc = {"issuer": rig.issuer, "jwks_uri": f"{rig.issuer}/jwks"}
                    doc.update(rig.extra_metadata)
                elif self.path == f"{path}/jwks":
                    status, doc = 200, dict(rig.jwks)
                else:
                    status, doc = 404, {"error": "not found"}
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = ca.server_context().wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_address[1])
        self.issuer = f"https://{host}:{self.port}{path}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> IssuerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_issuer(
    ca: LocalCA, jwks: Mapping[str, Any], *, host: str = "localhost", path: str = ""
) -> IssuerServer:
    """Serve ``jwks`` for the issuer ``https://<host>:<port><path>`` (listening on 127.0.0.1;
    ``host`` must be one of the certificate's names)."""
    return IssuerServer(ca, jwks, host, path.rstrip("/"))


# -- CA trust for the programs started here --------------------------------------------------


@cache
def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not SYSTEM_BUNDLE.is_file():
        return False
    try:
        return (
            subprocess.run(
                [*_NS_PREFIX, str(SYSTEM_BUNDLE.parent), "true"],
                capture_output=True,
                timeout=CMD_TIMEOUT,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


_NS_PREFIX = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    f'mount --bind "$0" {SYSTEM_BUNDLE.parent} && exec "$@"',
]


def trust_mode(requested: TrustMode | None = None) -> Literal["namespace", "system"]:
    """The CA trust mode to use: ``requested``, else ``$HTSEC_TEST_CA_TRUST``, else ``auto``
    (``namespace`` when ``unshare --mount`` + ``mount --bind`` work here, else ``system``)."""
    mode = requested or _TRUST_MODE_ENV
    if mode == "namespace" or (mode == "auto" and _namespaces_work()):
        return "namespace"
    if mode in ("auto", "system"):
        return "system"
    raise ValueError(f"unknown CA trust mode {mode!r} (auto, namespace or system)")


def _start_watchdog() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCHDOG],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the terminal does not kill it early
    )


def _tell(watchdog: subprocess.Popen[bytes], msg: object) -> None:
    assert watchdog.stdin is not None
    watchdog.stdin.write(json.dumps(msg).encode() + b"\n")
    watchdog.stdin.flush()


def _end_watchdog(watchdog: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        _tell(watchdog, "disarm")
    if watchdog.stdin is not None:
        with contextlib.suppress(OSError):
            watchdog.stdin.close()
    try:
        watchdog.wait(timeout=15)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _update_ca_certificates() -> None:
    proc = subprocess.run(
        ["update-ca-certificates"], capture_output=True, text=True, timeout=CMD_TIMEOUT * 2
    )
    if proc.returncode:
        raise RuntimeError(f"update-ca-certificates failed: {proc.stdout}{proc.stderr}")


@contextlib.contextmanager
def _system_ca_lock() -> Iterator[None]:
    """Serialises changes to the system trust store between test processes."""
    with open(_SYSTEM_CA_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class _SystemInstall:
    """One ``htsec-test-*.crt`` in the system trust store, shared by all of this process's
    :class:`CATrust` objects for the same PEM (reference-counted). A watchdog process removes
    it if this process dies without doing so."""

    _live: ClassVar[dict[bytes, _SystemInstall]] = {}
    _mutex: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def acquire(cls, pem: bytes) -> _SystemInstall:
        with cls._mutex:
            inst = cls._live.get(pem)
            if inst is None:
                inst = cls._live[pem] = cls(pem)
            inst.users += 1
            return inst

    def __init__(self, pem: bytes) -> None:
        if os.geteuid() != 0:
            raise XRootDUnavailable("trusting a test CA system-wide needs root", missing=False)
        self.pem = pem
        self.users = 0
        self.path = SYSTEM_CA_DIR / f"{SYSTEM_CA_PREFIX}{secrets.token_hex(6)}.crt"
        self._removed = False
        # Armed before the file exists, so that no moment leaves it behind.
        self._watchdog = _start_watchdog()
        _tell(self._watchdog, {"remove_ca": str(self.path), "lock": str(_SYSTEM_CA_LOCK)})
        atexit.register(self.remove)
        try:
            with _system_ca_lock():
                SYSTEM_CA_DIR.mkdir(parents=True, exist_ok=True)
                self.path.write_bytes(pem)
                self.path.chmod(0o644)
                _update_ca_certificates()
        except BaseException:
            self.remove()
            raise

    def release(self) -> None:
        with self._mutex:
            self.users -= 1
            if self.users > 0:
                return
            self._live.pop(self.pem, None)
        self.remove()

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        atexit.unregister(self.remove)
        try:
            with _system_ca_lock():
                if self.path.exists():
                    self.path.unlink()
                    _update_ca_certificates()
        finally:
            _end_watchdog(self._watchdog)


class CATrust:
    """Makes programs trust ``cas`` (PEM files) in addition to the system CAs: :meth:`wrap` a
    command line. See the module docstring for the two modes. :meth:`close` (idempotent; also
    at exit, and by a watchdog if the process dies) undoes it."""

    def __init__(
        self, cas: Sequence[Path | str], workdir: Path, mode: TrustMode | None = None
    ) -> None:
        self.cas = [Path(c) for c in cas]
        self.mode = trust_mode(mode) if self.cas else "namespace"
        self.certs_dir: Path | None = None
        self._install: _SystemInstall | None = None
        self._closed = False
        if not self.cas:
            return
        pem = b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in self.cas)
        if self.mode == "namespace":
            self.certs_dir = workdir / "certs"
            self.certs_dir.mkdir()
            self.certs_dir.chmod(0o755)
            bundle = self.certs_dir / SYSTEM_BUNDLE.name
            bundle.write_bytes(SYSTEM_BUNDLE.read_bytes().rstrip(b"\n") + b"\n" + pem)
            bundle.chmod(0o644)
        else:
            self._install = _SystemInstall.acquire(pem)

    @property
    def installed(self) -> Path | None:
        """The CA file in the system trust store (system mode)."""
        return self._install.path if self._install else None

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """``cmd``, run so that it trusts the extra CAs."""
        if self.certs_dir is not None:
            return [*_NS_PREFIX, str(self.certs_dir), *cmd]
        return [*cmd]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._install is not None:
            self._install.release()

    def __enter__(self) -> CATrust:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ca_trust(cas: Sequence[Path | str], workdir: Path, mode: TrustMode | None = None) -> CATrust:
    """A :class:`CATrust` for ``cas``; ``workdir`` holds the namespace mode's ``certs/``."""
    return CATrust(cas, workdir, mode)


# -- scitokens-verify ------------------------------------------------------------------------


def scitokens_verify(
    token: str,
    *,
    trust: Sequence[Path | str] = (),
    trust_mode: TrustMode | None = None,
    cache_dir: Path | None = None,
    timeout: float = CMD_TIMEOUT,
) -> tuple[bool, str]:
    """Run ``scitokens-verify TOKEN`` (scitokens-cpp 0.7.3): true when it deserialises the token,
    i.e. the signature verifies with a key fetched from the issuer over HTTPS, ``exp``/``nbf``
    hold and the claims fit a known profile (``ver: scitoken:2.0`` needs ``aud``; ``wlcg.ver``).
    It checks neither the audience's value nor the scopes. The output is stdout + stderr.
    Keys are cached in ``cache_dir`` (a fresh temporary one by default)."""
    check_available(xrootd=False, verify=True)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="htsec-stv-")))
        trusting = stack.enter_context(CATrust(trust, work, trust_mode))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(work),
            "XDG_CACHE_HOME": str(cache_dir or work / "cache"),
        }
        proc = subprocess.run(
            trusting.wrap(["scitokens-verify", token]),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


# -- XRootD ----------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class XRootD:
    """A running XRootD (see :func:`start_xrootd`). ``url`` is ``http://127.0.0.1:PORT``;
    ``data`` is the exported directory (URL path ``/x`` is ``data/x``), owned by ``nobody``;
    ``log`` (in the caller's directory) is kept after :meth:`stop`."""

    url: str
    port: int
    root: Path
    data: Path
    cache: Path
    log: Path
    config: Path
    scitokens_config: Path
    issuer: str
    audience: str | Sequence[str]
    trust: CATrust
    proc: subprocess.Popen[bytes] | None = None
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_fh: Any = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def path(self, url_path: str) -> Path:
        """The local file behind ``url_path``."""
        return self.data / url_path.lstrip("/")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def forget_keys(self) -> None:
        """Empty scitokens-cpp's key cache, so that the next token makes XRootD fetch the
        issuer's keys again (tokens it already accepted stay accepted: see the module doc)."""
        db = self.cache / "scitokens" / "scitokens_cpp.sqllite"
        if db.exists():
            with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn, conn:
                conn.execute("DELETE FROM keycache")

    def stop(self) -> None:
        """Stop XRootD (SIGTERM, then SIGKILL after 10 s), remove its directory and undo the CA
        trust. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            try:
                if self._log_fh is not None:
                    self._log_fh.close()
                shutil.rmtree(self.root, ignore_errors=True)
                self.trust.close()
            finally:
                if self._watchdog is not None:
                    _end_watchdog(self._watchdog)

    def __enter__(self) -> XRootD:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _scitokens_cfg(
    issuer: str,
    audience: str | Sequence[str],
    base_path: str,
    default_user: str,
    extra: str,
) -> str:
    if isinstance(audience, str):
        aud = f"audience = {audience}"
    else:
        aud = f"audience_json = {json.dumps(list(audience))}"
    return (
        f"[Global]\n{aud}\n\n"
        f"[Issuer test]\nissuer = {issuer}\nbase_path = {base_path}\n"
        f"default_user = {default_user}\n{extra}"
    )


def _xrootd_cfg(
    root: Path, data: Path, scitokens_cfg: Path, http_port: int, xrd_port: int, extra: str
) -> str:
    return f"""\
all.export /
oss.localroot {data}
all.adminpath {root / "admin"}
all.pidpath {root / "run"}
xrd.port {xrd_port}
xrd.protocol XrdHttp:{http_port} libXrdHttp.so
xrd.allow host localhost
http.header2cgi Authorization authz
ofs.authorize 1
ofs.authlib libXrdAccSciTokens.so config={scitokens_cfg}
{extra}
"""


def start_xrootd(
    tmp_path: Path,
    issuer: str,
    audience: str | Sequence[str],
    base_path: str = "/",
    data_dir: Path | None = None,
    *,
    files: Mapping[str, str | bytes] | None = None,
    trust: Sequence[Path | str] = (),
    trust_mode: TrustMode | None = None,
    default_user: str = RUN_AS,
    scitokens_extra: str = "",
    xrootd_extra: str = "",
    timeout: float = START_TIMEOUT,
) -> XRootD:
    """Start XRootD as ``nobody``, with XrdHttp on a free port bound to all addresses but
    accepting connections from localhost only (``xrd.allow``), exporting a fresh directory,
    and every request authorised by the SciTokens plugin for ``issuer`` (an ``https://`` URL)
    and ``audience`` (a string, or a list of them), scopes relative to ``base_path``.

    The exported tree is a copy of ``data_dir`` if given, plus ``files`` (URL path: content;
    :data:`DEFAULT_FILES` when neither is given). ``trust`` lists CA certificates (PEM) that
    XRootD must trust to fetch the issuer's keys. ``scitokens_extra`` is appended to the
    ``[Issuer test]`` section (e.g. ``restricted_path = ...``), ``xrootd_extra`` to the XRootD
    config. The log is ``tmp_path/xrootd.log``. Raises :class:`XRootDUnavailable` or
    :class:`XRootDError`."""
    check_available()
    if not issuer.startswith("https://"):
        raise ValueError(f"scitokens-cpp accepts only https:// issuers, not {issuer!r}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    nobody = pwd.getpwnam(RUN_AS)
    # Not under tmp_path: pytest's base temp dir is 0700 root, which 'nobody' cannot enter.
    root = Path(tempfile.mkdtemp(prefix="htsec-xrootd-", dir="/tmp"))
    root.chmod(0o755)
    watchdog = _start_watchdog()
    _tell(watchdog, {"rmtree": str(root)})
    try:
        trusting = CATrust(trust, root, trust_mode)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        _end_watchdog(watchdog)
        raise
    data, cache = root / "data", root / "cache"
    if data_dir is not None:
        shutil.copytree(data_dir, data)
    data.mkdir(exist_ok=True)
    if files is None:
        files = {} if data_dir is not None else DEFAULT_FILES
    for url_path, content in files.items():
        target = data / url_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    for d in (cache, root / "admin", root / "run"):
        d.mkdir()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (".", *dirnames, *filenames):
            os.chown(Path(dirpath, name), nobody.pw_uid, nobody.pw_gid)
    scitokens_cfg = root / "scitokens.cfg"
    scitokens_cfg.write_text(
        _scitokens_cfg(issuer, audience, base_path, default_user, scitokens_extra)
    )
    log = tmp_path / "xrootd.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(root),
        "XDG_CACHE_HOME": str(cache),
    }
    rig: XRootD | None = None
    try:
        for _attempt in range(3):  # a free port may be taken between probing and binding
            port = _free_port()
            config = root / "xrootd.cfg"
            config.write_text(
                _xrootd_cfg(root, data, scitokens_cfg, port, _free_port(), xrootd_extra)
            )
            for name in ("xrootd.cfg", "scitokens.cfg"):  # for post-mortems
                shutil.copy(root / name, tmp_path / name)
            log_fh = open(log, "ab")  # noqa: SIM115
            proc = subprocess.Popen(
                trusting.wrap(["xrootd", "-R", RUN_AS, "-c", str(config)]),
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
            )
            with open(f"/proc/{proc.pid}/stat") as f:
                start_time = f.read().split()[21]
            _tell(watchdog, {"kill": proc.pid, "start": start_time})
            rig = XRootD(
                url=f"http://127.0.0.1:{port}",
                port=port,
                root=root,
                data=data,
                cache=cache,
                log=log,
                config=config,
                scitokens_config=scitokens_cfg,
                issuer=issuer,
                audience=audience,
                trust=trusting,
                proc=proc,
                _watchdog=watchdog,
                _log_fh=log_fh,
            )
            if _wait_ready(rig, timeout):
                atexit.register(rig.stop)
                return rig
            if "already in use" not in _tail(log):
                break
            # Stop this attempt only (keep the dir, the trust and the watchdog).
            proc.kill()
            proc.wait(10)
            log_fh.close()
            rig = None
        raise XRootDError(f"XRootD did not start within {timeout}s; {log}:\n{_tail(log)}")
    except BaseException:
        if rig is not None:
            rig.stop()
        else:
            shutil.rmtree(root, ignore_errors=True)
            trusting.close()
            _end_watchdog(watchdog)
        raise


def _wait_ready(rig: XRootD, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    assert rig.proc is not None
    while time.monotonic() < deadline:
        if rig.proc.poll() is not None:
            return False
        try:
            httpx.get(f"{rig.url}/", timeout=1)
            return True
        except httpx.HTTPError:
            time.sleep(0.1)
    return False


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()
