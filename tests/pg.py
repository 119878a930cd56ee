"""A throw-away PostgreSQL cluster for the tests (TESTING.md, "PostgreSQL").

One cluster per test session: ``initdb`` into a temp dir as the ``postgres`` OS user, ``pg_ctl
start`` on a free 127.0.0.1 port with its socket in that dir and fsync off, trust auth for
127.0.0.1 only, and a password-less role that owns a database and may create more (one fresh
database per test: :func:`create_database`, :func:`drop_database`).

Teardown is ``pg_ctl stop -m immediate`` and removing the dir. An ``atexit`` hook covers an
interrupted run, and a watchdog process covers a killed one: it holds a pipe from this process
and, when the pipe closes, shuts down any postmaster still running and removes the dir.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "ROLE",
    "Cluster",
    "PgError",
    "PgUnavailable",
    "create_database",
    "drop_database",
    "find_bindir",
]

ROLE = "htsec_test"
DATABASE = "htsec_test"
START_TIMEOUT = 30  # seconds pg_ctl waits for start and stop (-t)
CMD_TIMEOUT = 90  # seconds any one command may take
SETUP_HINT = "run scripts/setup --test (it installs the Debian package 'postgresql')"

_WATCHDOG = r"""
import os, shutil, signal, sys, time
root = sys.argv[1]
sys.stdin.buffer.read()  # returns when the test process closes the pipe or dies
pid = None
try:
    with open(os.path.join(root, "data", "postmaster.pid")) as f:
        pid = int(f.readline())
    with open(f"/proc/{pid}/comm") as f:
        if f.read().strip() not in ("postgres", "postmaster"):
            pid = None
except (OSError, ValueError):
    pid = None

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False

if pid:
    try:
        os.kill(pid, signal.SIGQUIT)  # what pg_ctl stop -m immediate sends
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
shutil.rmtree(root, ignore_errors=True)
"""


class PgUnavailable(Exception):
    """PostgreSQL cannot run here. ``missing`` is true when it is not installed (a CI run then
    fails), false when this user may not run it (always a skip)."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


class PgError(RuntimeError):
    """The cluster failed to initialise, start or stop; the message holds the log's tail."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``pg_ctl``, else the
    directory of a ``pg_ctl`` on PATH that has ``initdb`` beside it."""
    found: list[tuple[int, Path]] = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        bindir = Path(d)
        version = bindir.parent.name
        if version.isdigit() and all((bindir / x).is_file() for x in ("initdb", "pg_ctl")):
            found.append((int(version), bindir))
    if found:
        return max(found)[1]
    on_path = shutil.which("pg_ctl")
    if on_path:
        bindir = Path(on_path).resolve().parent
        if (bindir / "initdb").is_file():
            return bindir
    raise PgUnavailable(
        "PostgreSQL server programs (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
        f"nor on PATH: {SETUP_HINT}",
        missing=True,
    )


def _drop_privileges() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs a program as ``postgres``, and that user (None: we are it)."""
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise PgUnavailable(
                f"no 'postgres' OS user to run the test cluster as: {SETUP_HINT}", missing=True
            ) from None
        if shutil.which("runuser"):
            return ["runuser", "-u", "postgres", "--"], pw
        if shutil.which("setpriv"):
            return [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--init-groups",
                "--",
            ], pw
        raise PgUnavailable(
            "running as root, but neither runuser nor setpriv is here to drop to 'postgres'",
            missing=True,
        )
    if pwd.getpwuid(os.geteuid()).pw_name == "postgres":
        return [], None
    raise PgUnavailable(
        "the PostgreSQL test cluster runs as the 'postgres' OS user: run the tests as root "
        "(as CI does) or as 'postgres'",
        missing=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Cluster:
    """A running throw-away cluster; :meth:`start` makes one, :meth:`stop` (idempotent) ends it."""

    def __init__(self, bindir: Path, prefix: list[str], owner: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self._prefix = prefix
        self._owner = owner
        base = tempfile.gettempdir()
        # The socket path must stay short, and 'postgres' must be able to reach the dir.
        if len(base) > 60 or (owner is not None and not os.stat(base).st_mode & 0o001):
            base = "/tmp"
        self.root = Path(tempfile.mkdtemp(prefix="htsec-pg-", dir=base))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self._stopped = False
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._env["LC_ALL"] = "C"
        # Started first, so that even a run killed during initdb leaves nothing behind.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG, str(self.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the terminal does not kill it early
        )
        atexit.register(self.stop)

    @classmethod
    def start(cls) -> Cluster:
        """initdb, start and provision a cluster; raises PgUnavailable or PgError."""
        bindir = find_bindir()
        prefix, owner = _drop_privileges()
        cluster = cls(bindir, prefix, owner)
        try:
            cluster._initdb()
            cluster._start()
            cluster._provision()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the role's own database."""
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, what: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*self._prefix, str(self.bindir / args[0]), *args[1:]]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.root,
                env=self._env,
                capture_output=True,
                text=True,
                timeout=CMD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise PgError(f"{what}: {args[0]} took over {CMD_TIMEOUT}s") from None
        return proc

    def _initdb(self) -> None:
        proc = self._run(
            "initdb",
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        if proc.returncode:
            raise PgError(f"initdb failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        # Nothing but TCP from 127.0.0.1 and the private socket; no passwords.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )

    def _start(self) -> None:
        for _attempt in range(3):  # the free port may be taken between probing and binding
            self.port = _free_port()
            opts = [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={shlex.quote(str(self.root))}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
            proc = self._run(
                "pg_ctl start",
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                str(START_TIMEOUT),
                "-o",
                " ".join(opts),
                "start",
            )
            if proc.returncode == 0:
                return
            log = _tail(self.log)
            if "could not bind" not in log and "already in use" not in log:
                break
        raise PgError(
            f"pg_ctl start failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n"
            f"{self.log}:\n{log}"
        )

    def _provision(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB")
            # DROP DATABASE ... WITH (FORCE) ends every connection to the test's database,
            # an autovacuum worker's too; without this the drop fails now and then with
            # "must be a member of the role whose process is being terminated".
            conn.execute(f"GRANT pg_signal_backend TO {ROLE}")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` (SIGKILL if that fails), remove the dir, end the
        watchdog. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    proc = self._run(
                        "pg_ctl stop",
                        "pg_ctl",
                        "-D",
                        str(self.data),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        str(START_TIMEOUT),
                        "stop",
                    )
                    failed = proc.returncode != 0
                except PgError:
                    failed = True
                if failed:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 9)
        except (OSError, ValueError):
            pass


def _connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection as the role of ``url`` to the cluster's 'postgres' database."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host,
        port=u.port,
        user=u.username,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    )


def create_database(url: str) -> str:
    """Create ``test_<random>`` on the cluster of ``url`` (as its role) and return its URL."""
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"test_{secrets.token_hex(6)}"
    with _connect(url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database of ``url``, ending any connection a test left open."""
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name, url
    with _connect(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
