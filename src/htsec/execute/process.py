"""Starting a job's process as the job user, in its own session and cgroup, with limits; and
killing it with every descendant.

A cgroup v2 sub-group (``<hierarchy><htsec's own group>/htsec-jobs/<id>``) holds each job where
the machine allows it: ``cgroup.kill`` then ends every process in it, also one that forked and
detached into a session of its own, and ``memory.max`` caps its memory when the memory
controller is enabled there. Where no cgroup can be made, the job is ended by its session and,
for processes that left it, by the ``HTSEC_JOB_ID`` marker in their initial environment; the
log says why. Resource limits (``RLIMIT_AS`` from ``request_memory``, ``RLIMIT_FSIZE`` from
``request_disk``, ``RLIMIT_CPU`` from ``allowed_execute_duration`` x ``request_cpus``) apply in
any case.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Job", "Limits", "cgroup_root", "job_env", "kill_all", "spawn"]

log = logging.getLogger("htsec.execute")

_NOT_WHY: list[str] = []


@dataclass(frozen=True)
class Limits:
    """Byte and second limits of one job (None: none)."""

    memory: int | None = None
    file_size: int | None = None
    cpu_seconds: int | None = None


def _mountpoint() -> Path | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return Path(left.split()[4])
    except OSError:
        return None
    return None


def _own_group() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    except OSError:
        return None
    return None


def cgroup_root() -> tuple[Path | None, str]:
    """Where jobs' cgroups go (``None``: no cgroups) and why not, or what memory limits."""
    mount, group = _mountpoint(), _own_group()
    if mount is None or group is None:
        return None, "no cgroup v2 hierarchy is mounted (jobs are ended by session instead)"
    parent = mount / group.lstrip("/")
    root = parent / "htsec-jobs"
    try:
        root.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        return None, f"cannot make {root} ({exc.strerror}): jobs are ended by session instead"
    if not (root / "cgroup.kill").exists():
        return None, f"{root} has no cgroup.kill (kernel < 5.14): jobs are ended by session"
    controllers = (root / "cgroup.controllers").read_text().split()
    if "memory" not in controllers:
        return root, (
            f"cgroup v2 at {root}; its memory controller is not available (cgroup v1 holds it "
            "here): memory is limited by RLIMIT_AS only"
        )
    with contextlib.suppress(OSError):
        (root / "cgroup.subtree_control").write_text("+memory")  # fs-ok: a cgroup knob
    return root, f"cgroup v2 at {root} with memory.max"


def make_group(root: Path | None, name: str, limits: Limits) -> Path | None:
    """A fresh sub-group for one job (None when cgroups are not available)."""
    if root is None:
        return None
    group = root / name
    try:
        group.mkdir(mode=0o755)
    except FileExistsError:
        kill_group(group)
        group.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        log.warning("no cgroup for %s: %s", name, exc.strerror)
        return None
    if limits.memory is not None and (group / "memory.max").exists():
        with contextlib.suppress(OSError):
            (group / "memory.max").write_text(str(limits.memory))  # fs-ok: cgroup knob
            (group / "memory.swap.max").write_text("0")  # fs-ok: cgroup knob
    return group


def kill_group(group: Path) -> None:
    """End every process in ``group`` and remove it (waits up to 5 s for them to go)."""
    if not group.is_dir():
        return
    with contextlib.suppress(OSError):
        (group / "cgroup.kill").write_text("1")  # fs-ok: a cgroup knob
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if not (group / "cgroup.procs").read_text().strip():
                break
        except OSError:
            break
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        group.rmdir()


def _marked(marker: str) -> list[int]:
    """Processes whose initial environment carries ``HTSEC_JOB_ID=<marker>``."""
    needle = f"HTSEC_JOB_ID={marker}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            env = Path(entry.path, "environ").read_bytes()
            if needle in env.split(b"\0"):
                found.append(int(entry.name))
    return found


def kill_all(group: Path | None, pid: int | None, marker: str) -> None:
    """End a job: its cgroup, else its session and every process with its marker."""
    if group is not None and group.is_dir():
        kill_group(group)
        return
    if pid is not None:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    for _ in range(3):
        left = [p for p in _marked(marker) if p != os.getpid()]
        if not left:
            return
        for p in left:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.05)


def pid_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


#: The launcher: ``posix_spawn`` (vfork: as fast for a large server as a small one) of a
#: shell that joins the job's cgroup (as root, before anything of the job runs), enters the
#: sandbox, sets umask 077 and execs ``setpriv`` (job user, no supplementary groups) and
#: ``prlimit`` (the limits), which exec the job. Arguments are positional, never parsed.
_LAUNCH = (
    'umask 077; [ -z "$1" ] || echo $$ > "$1" || exit 126; cd "$2" || exit 126; shift 2; exec "$@"'
)
_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")
_PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin")


#: What the dynamic loader and libc read from the environment (glibc's list of variables it
#: drops for setuid programs, and every ``LD_*``/``GLIBC_*``): the launcher runs as root until
#: ``setpriv`` drops to the job user, so a job's ``environment = "LD_PRELOAD=..."`` would run
#: code as root. They are never passed to a job.
_LOADER = frozenset(
    {
        "GCONV_PATH",
        "GETCONF_DIR",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "MALLOC_TRACE",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TZDIR",
        "MALLOC_CHECK_",
        "MALLOC_PERTURB_",
        "ENV",
        "BASH_ENV",
        "CDPATH",
        "IFS",
    }
)


def job_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what the loader, libc or the launcher's shell would act on as root."""
    return {
        k: v for k, v in env.items() if k not in _LOADER and not k.startswith(("LD_", "GLIBC_"))
    }


class Job:
    """A started job: its pid (a child of this process, session leader) and its end."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status (negative: the signal that ended it); ``subprocess.TimeoutExpired``
        when it runs past ``timeout`` seconds."""
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = os.pidfd_open(self.pid)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if poller.poll(None if left is None else int(left * 1000) + 1):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        finally:
            os.close(fd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _launch_argv(
    argv: Sequence[str], cwd: str, uid: int, gid: int, limits: Limits, group: Path | None
) -> list[str]:
    chain: list[str] = []
    if os.geteuid() == 0 and uid != 0:
        assert _SETPRIV is not None
        chain += [_SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    assert _PRLIMIT is not None
    chain += [_PRLIMIT, "--core=0:0"]
    for flag, value in (
        ("as", limits.memory),
        ("fsize", limits.file_size),
        ("cpu", limits.cpu_seconds),
    ):
        if value is not None:
            chain.append(f"--{flag}={value}:{value}")
    chain += ["--", *argv]
    procs = str(group / "cgroup.procs") if group is not None else ""
    return ["/bin/sh", "-c", _LAUNCH, "htsec-launch", procs, cwd, *chain]


def spawn(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    uid: int,
    gid: int,
    limits: Limits,
    group: Path | None,
    stdin: int,
    stdout: int,
    stderr: int,
) -> Job:
    """Start ``argv`` as ``uid``/``gid`` (no supplementary groups), in a new session, in
    ``group``, with ``limits`` and umask 077."""
    if _SETPRIV is None or _PRLIMIT is None:
        return _spawn_forked(
            argv,
            cwd=cwd,
            env=env,
            uid=uid,
            gid=gid,
            limits=limits,
            group=group,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
    actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate((stdin, stdout, stderr))]
    pid = os.posix_spawn(
        "/bin/sh",
        _launch_argv(argv, cwd, uid, gid, limits, group),
        job_env(env),
        file_actions=actions,
        setsid=True,
    )
    return Job(pid)


class _Forked(Job):
    """A job started by fork (where setpriv or prlimit is missing)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(proc.pid)
        self._proc = proc

    def wait(self, timeout: float | None = None) -> int:
        self.returncode = self._proc.wait(timeout)
        return self.returncode


def _spawn_forked(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    uid: int,
    gid: int,
    limits: Limits,
    group: Path | None,
    stdin: int,
    stdout: int,
    stderr: int,
) -> Job:
    procs_fd = os.open(group / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) if group else -1
    drop = os.geteuid() == 0 and uid != 0

    def child() -> None:  # pragma: no cover - runs between fork and exec
        if procs_fd >= 0:
            os.write(procs_fd, b"0")
        if limits.memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
        if limits.file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
        if limits.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.umask(0o077)
        if drop:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)

    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=job_env(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            preexec_fn=child,
        )
        return _Forked(proc)
    finally:
        if procs_fd >= 0:
            os.close(procs_fd)
