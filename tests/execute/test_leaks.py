"""Issue 13 item 2, the leak scan: while jobs run (real processes, as the job user) with tokens
a real credmon keeps refreshing against the oidc rig, nothing the job user can read -- each
sandbox, each job's environment and argv, and the whole of /proc (every process's cmdline, the
job user's own processes' environ and memory, /proc/sys ...) -- holds a refresh token or a
client secret (the rig's, and known values planted in the store). The scan itself is proved
to find secrets where they are planted on purpose (``test_the_scan_finds_...``).

The jobs of the first test run under ``htsec serve`` (its execution point and in-process
credmon); the second starts its own processes (it tests the scan). The scanner runs as the
job user, gets the secrets on standard input (never in its own argv or
environment) and skips only its own process."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from htsec.creds.store import CredStore
from tests.conftest import free_port
from tests.credmon.webserver import provider_env
from tests.execute.conftest import Point
from tests.execute.test_creds import (
    job_ids,
    needs_root,
    new_sandbox,
    sandboxes,  # noqa: F401 - fixture
)
from tests.execute.test_creds_handoff import creds, oidc, token_of, wait_until  # noqa: F401
from tests.oidc import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, obtain_refresh_token
from tests.oidc import Provider as OidcProvider

pytestmark = needs_root
# Jobs and the scanner run as the job user: the system's Python (the test's may live under
# /root), standard library only.
PYTHON = "/usr/bin/python3"

# Reads what is readable as the job user and reports where a secret is; the secrets arrive
# on stdin. Skips /proc/<pid>/task (the same files again per thread), per-process net/ (one
# network namespace, scanned once through the scanner's own) and device-like files.
SCANNER = r"""
import json, os, sys
req = json.load(sys.stdin)
secrets = [s.encode() for s in req["secrets"]]
me = str(os.getpid())
found, stats = [], {"files": 0, "mem_bytes": 0, "mem_pids": [], "environ_pids": []}
SKIP = {"kcore", "kmsg", "kpagecount", "kpageflags", "kpagecgroup", "pagemap", "clear_refs",
        "sysrq-trigger", "trace_pipe", "task", "net", "map_files", "mem"}

def check(where, data):
    for i, s in enumerate(secrets):
        if s in data:
            found.append([where, i])

def read(path, limit=1 << 20):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)

def scan_tree(top, skip=SKIP):
    for dirpath, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            if name in skip:
                continue
            path = os.path.join(dirpath, name)
            data = read(path)
            if data is not None:
                stats["files"] += 1
                check(path, data)

def scan_mem(pid):
    maps = read(f"/proc/{pid}/maps")
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for line in (maps or b"").decode().splitlines():
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                data = os.pread(fd, min(end - start, 1 << 28), start)
            except OSError:
                continue
            stats["mem_bytes"] += len(data)
            check(f"/proc/{pid}/mem", data)
        stats["mem_pids"].append(int(pid))
    finally:
        os.close(fd)

for sandbox in req["sandboxes"]:
    scan_tree(sandbox, skip=set())
for entry in os.scandir("/proc"):
    if entry.name.isdigit():
        if entry.name == me:
            continue
        if read(f"/proc/{entry.name}/environ") is not None:
            stats["environ_pids"].append(int(entry.name))
        scan_tree(entry.path)
        scan_mem(entry.name)
    elif entry.name not in SKIP and not entry.is_symlink():
        if entry.is_dir(follow_symlinks=False):
            scan_tree(entry.path)
        else:
            data = read(entry.path)
            if data is not None:
                stats["files"] += 1
                check(entry.path, data)
scan_tree(f"/proc/{me}/net", skip=set())
json.dump({"found": found, **stats}, sys.stdout)
"""

# A job: has a child, reads its tokens every 100 ms (so they are in its memory), and says ready
# once it has read them the first time.
JOB = r"""
import os, subprocess, sys, time
creds = os.environ["_CONDOR_CREDS"]
child = subprocess.Popen(["sleep", "600"])
held = []
while True:
    for name in sorted(os.listdir(creds)):
        with open(os.path.join(creds, name), "rb") as f:
            held.append(f.read())
    del held[:-20]
    if not os.path.exists("ready"):
        open("ready", "w").close()
    time.sleep(0.1)
"""


def scan(
    secret_values: list[str], sandbox_paths: list[Path], ids: tuple[int, int] | None = None
) -> dict[str, Any]:
    """What a process of ``ids`` (default: :func:`job_ids`) finds of ``secret_values``."""
    uid, gid = ids or job_ids() or (0, 0)
    request = json.dumps({"secrets": secret_values, "sandboxes": [str(p) for p in sandbox_paths]})
    out = subprocess.run(
        [PYTHON, "-I", "-c", SCANNER],
        input=request.encode(),
        capture_output=True,
        user=uid,
        group=gid,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
        timeout=300,
        check=True,
    )
    return dict(json.loads(out.stdout))


def start_job(sandbox: Path, environ: dict[str, str], argv: tuple[str, ...] = ()) -> Any:
    uid, gid = job_ids() or (0, 0)
    proc = subprocess.Popen(
        [PYTHON, "-I", "-c", JOB, *argv],
        user=uid,
        group=gid,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "HOME": str(sandbox), **environ},
        cwd=sandbox,
        start_new_session=True,  # its own process group: killed with its child
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: (sandbox / "ready").exists(), 30, "the job did not start")
    return proc


def stop(procs: list[Any]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    stop(started)


# The job of the leak test: the same, as a submitted executable.
JOB_SCRIPT = "#!/usr/bin/python3 -I\n" + JOB


def job_processes(dirs: list[Path]) -> list[int]:
    """Pids of processes whose working directory is one of ``dirs`` and whose uid owns it (the
    slot's own account)."""
    owner = {d: d.stat().st_uid for d in dirs}
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            uid = os.stat(entry.path).st_uid
            cwd = Path(os.readlink(f"{entry.path}/cwd"))
        except OSError:
            continue
        if owner.get(cwd) == uid:
            out.append(int(entry.name))
    return out


@pytest.mark.slow
def test_no_refresh_token_or_client_secret_is_readable_by_running_jobs(
    tmp_path: Path,
    oidc: OidcProvider,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    creds: CredStore,  # noqa: F811 - the fixture
    home: Path,
    execute_dir: Path,
    iwd: Path,
) -> None:
    """Real ``htsec serve`` (its execution point and its credmon, refreshing against the oidc
    rig every pass) runs three jobs of one cluster as the slot accounts."""
    provider_env(monkeypatch, tmp_path, oidc)
    login = obtain_refresh_token(oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, "root", "openid")
    refresh_tokens = {login["refresh_token"]}
    creds.put(
        "root",
        "oidc",
        refresh_token=login["refresh_token"],
        access_token=login["access_token"],
        expires_at=int(time.time()) + int(login["expires_in"]),
        scopes="openid",
        provider="oidc",
    )
    # Known values planted in the store beside the rig's: a second credential.
    planted_rt, planted_cs = f"rt-{secrets.token_hex(16)}", f"cs-{secrets.token_hex(16)}"
    creds.put(
        "root",
        "box",
        "work",
        refresh_token=planted_rt,
        access_token=f"at-{secrets.token_hex(16)}",
        expires_at=int(time.time()) + 3600,
        client_id="box-client",
        client_secret=planted_cs,
        token_url="https://box.example.org/token",
    )
    env = {
        **os.environ,
        "_CONDOR_HTSEC_SERVER_URL": f"https://127.0.0.1:{(port := free_port())}",
        "_CONDOR_HTSEC_SERVE_CREDMON": "true",
        "_CONDOR_HTSEC_EXECUTE_SLOTS": "3",
        "_CONDOR_EXECUTE": str(execute_dir / "execute"),
    }
    point = Point(home, execute_dir / "execute", port, env)
    (iwd / "job.py").write_text(JOB_SCRIPT)
    (iwd / "job.py").chmod(0o755)
    point.start()
    try:
        cluster = point.submit(
            "executable = job.py\narguments = --job=$(ProcId)\n"
            "use_oauth_services = oidc, box\nbox_oauth_permissions_work =\nqueue 3\n",
            iwd,
        )
        for proc in range(3):
            point.wait(f"{cluster}.{proc}", "running")
        dirs = [next((execute_dir / "execute").glob(f"dir_{cluster}.{p}_*")) for p in range(3)]
        for sandbox in dirs:
            wait_until(lambda s=sandbox: (s / "ready").exists(), 30, "a job did not start")
        # At least one refresh delivered into the running jobs' sandboxes.
        use = dirs[0] / ".condor_creds" / "oidc.use"
        before = token_of(use)
        wait_until(lambda: token_of(use) != before, 60, "no refresh reached the jobs")
        refresh_tokens.add(creds.refresh_token("root", "oidc") or "")
        values = [*sorted(refresh_tokens - {""}), planted_rt, CLIENT_SECRET, planted_cs]
        job_pids = job_processes(dirs)
        assert len(job_pids) >= 6, job_pids  # each job and its child

        # Each slot runs as its own account: scan as each of them, as each job could.
        result: dict[str, Any] = {"found": [], "files": 0, "mem_bytes": 0}
        for ids in sorted({(d.stat().st_uid, d.stat().st_gid) for d in dirs}):
            one = scan(values, dirs, ids)
            result["found"] += one["found"]
            result["files"] = max(result["files"], one["files"])
            result["mem_bytes"] += one["mem_bytes"]
            for key in ("mem_pids", "environ_pids"):
                result[key] = sorted({*result.get(key, []), *one[key]})

        assert set(job_pids) <= set(result["mem_pids"]), result  # their memory was read
        assert set(job_pids) <= set(result["environ_pids"]), result
        assert result["files"] > 1000, result
        print(
            f"leak scan: {result['files']} files, {result['mem_bytes']} bytes of the job "
            f"user's memory ({len(result['mem_pids'])} processes), {len(values)} secrets"
        )
        assert result["found"] == [], [(where, f"secret #{i}") for where, i in result["found"]]
        # ... and the jobs did get their access tokens; removed, their directory is gone.
        for sandbox in dirs:
            assert sorted(os.listdir(sandbox / ".condor_creds")) == [
                "box_work.use",
                "oidc.use",
            ]
        assert point.call("DELETE", f"/v1/jobs/{cluster}").status_code == 200
        for proc in range(3):
            point.wait(f"{cluster}.{proc}", "removed")
        for sandbox in dirs:
            assert not (sandbox / ".condor_creds").exists()
    finally:
        point.stop()


@pytest.mark.slow
def test_the_scan_finds_a_secret_in_a_sandbox_environment_argv_memory_or_anywhere_in_proc(
    sandboxes: Path,  # noqa: F811 - the fixture
    procs: list[Any],
) -> None:
    """The scan's teeth: a secret planted in each place it looks is found there."""
    values = {
        where: f"planted-{where}-{secrets.token_hex(12)}"
        for where in ("sandbox", "environ", "cmdline", "memory", "other")
    }
    creds_dir = sandboxes / "creds"
    creds_dir.mkdir(mode=0o755)
    environ = {"_CONDOR_CREDS": str(creds_dir)}
    s_file = new_sandbox(sandboxes, "file")
    uid, gid = job_ids() or (0, 0)
    leak = s_file / "leak.txt"
    leak.write_text(values["sandbox"])
    os.chown(leak, uid, gid)
    procs.append(start_job(s_file, environ))
    procs.append(start_job(new_sandbox(sandboxes, "env"), {**environ, "X": values["environ"]}))
    procs.append(start_job(new_sandbox(sandboxes, "argv"), environ, (values["cmdline"],)))
    # Memory only: the job reads it from a file that is then removed.
    (creds_dir / "mem.use").write_text(values["memory"])
    procs.append(start_job(new_sandbox(sandboxes, "mem"), environ))  # it has read the file
    (creds_dir / "mem.use").unlink()
    # Another user's process (root's) with the secret in its argv: /proc/<pid>/cmdline.
    other = subprocess.Popen(
        [PYTHON, "-c", "import time; time.sleep(600)", values["other"]], start_new_session=True
    )
    procs.append(other)

    result = scan(list(values.values()), [s_file])

    names = list(values)
    hits = {(names[i], where.split("/")[-1]) for where, i in result["found"]}
    assert ("sandbox", "leak.txt") in hits, hits
    assert ("environ", "environ") in hits, hits
    assert ("cmdline", "cmdline") in hits, hits
    assert ("memory", "mem") in hits, hits
    assert ("other", "cmdline") in hits, hits
