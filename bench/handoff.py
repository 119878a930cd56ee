"""The token hand-off part of ``bench/transfer.py``: from a credmon's refresh to the sandbox's
``.use`` replaced (issue 13: p99 < 1 s), against the real OpenID provider (tests/oidc.py, 4 s
access tokens, refresh-token rotation on).

Two ways a refresh reaches the delivery (:mod:`htsec.execute.creds`), measured in the same run:

(a) ``htsec credmon`` in another process writes HTCondor's credential directory; the delivery
    learns of it by inotify. Latency: from the credmon's rename of ``<user>/oidc.top`` (the
    rotated refresh token, written right after its store commit and before ``oidc.use``: the
    first trace of the commit visible outside that process) to the rename of each of that
    user's sandbox ``.use`` files, both seen by one inotify observer in this process (its own
    delay cancels out).
(b) the credmon inside this process (``htsec serve`` without a credential directory), which
    calls ``RefreshEngine.listeners``: from the listener call that follows the store commit to
    each sandbox ``.use`` renamed (seen by the same kind of observer).
Reference, same run: the floor of any inotify hand-off -- a bare ``os.replace`` in a watched
directory until the event is read.

``users`` users with ``jobs`` jobs each: one refresh updates ``jobs`` sandboxes, so there are
``users x jobs`` hand-offs per round of refreshes (one every ~2 s per user).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.credmon.webserver import write_files  # noqa: E402
from tests.oidc import (  # noqa: E402
    CLIENT_ID,
    CLIENT_SECRET,
    Provider,
    default_config,
    mint_refresh_tokens,
    start_provider,
)

from htsec.execute.watch import IN_MOVED_TO, Inotify  # noqa: E402

TTL = 4  # seconds an access token lives at the provider: a refresh every ~2 s per user


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Observer:
    """One inotify instance in a thread: when each watched directory received ``oidc.use``
    (sandboxes, labelled ``user/jobN``) or ``oidc.top`` (credential directories: ``user``)."""

    def __init__(self) -> None:
        self.notify = Inotify()
        self.dirs: dict[int, str] = {}  # wd -> label
        self.events: list[tuple[int, str]] = []  # (time_ns, label)
        self._stop = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, path: Path, label: str) -> None:
        self.dirs[self.notify.add(path, IN_MOVED_TO)] = label

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.notify.fd, select.POLLIN)
        poller.register(self._stop, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            now = time.time_ns()
            if self._stop in ready:
                return
            for wd, _mask, name in self.notify.read():
                label = self.dirs.get(wd)
                if label is not None and name == ("oidc.use" if "/" in label else "oidc.top"):
                    self.events.append((now, label))

    def close(self) -> None:
        os.eventfd_write(self._stop, 1)
        self._thread.join()
        self.notify.close()


def pair(events: list[tuple[int, str]], starts: list[tuple[int, str]]) -> list[float]:
    """Latencies (ms): for each start ``(t, user)``, the first replacement of each of the
    user's sandboxes (labelled ``user/jobN``) after it and before the user's next start."""
    out: list[float] = []
    by_user: dict[str, list[int]] = {}
    for t, user in sorted(starts):
        by_user.setdefault(user, []).append(t)
    done: set[tuple[str, int]] = set()
    for t, label in sorted(events):
        user, _, job = label.partition("/")
        if not job:
            continue
        before = [s for s in by_user.get(user, []) if s <= t]
        if not before:
            continue
        key = (label, before[-1])
        if key not in done:
            done.add(key)
            out.append((t - before[-1]) / 1e6)
    return out


def _install_all(delivery: Any, base: Path, users: list[str], jobs: int, obs: Observer) -> list:
    installed = []
    for user in users:
        for j in range(jobs):
            sandbox = base / f"{user}-{j}"
            sandbox.mkdir(mode=0o700)
            job = delivery.install(sandbox, user=user, needs=["oidc"])
            obs.watch(job.directory, f"{user}/job{j}")
            installed.append(job)
    return installed


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"handoff: {what}")
        time.sleep(0.05)


def separate_credmon(
    provider: Provider, work: Path, users: int, jobs: int, seconds: float
) -> list[float]:
    """(a): ``htsec credmon --interval 0.5`` over a credential directory, inotify hand-off."""
    from htsec.config import load
    from htsec.creds.open import open_credstore
    from htsec.execute.creds import CredDelivery

    root = work / "oauth_credentials"
    root.mkdir()
    os.chmod(root, 0o2770)
    names = [f"a{i}" for i in range(users)]
    for name, rt in zip(names, mint_refresh_tokens(provider, users, "ha"), strict=True):
        token = {"access_token": "x", "token_type": "bearer", "expires_in": 1, "refresh_token": rt}
        write_files(root, name, token, provider.token_url, scopes="openid", audience="")
    htsec = str(Path(sys.executable).with_name("htsec"))
    credmon = subprocess.Popen(
        [htsec, "credmon", "--cred-dir", str(root), "--interval", "0.5"],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    creds = open_credstore(load())
    obs = Observer()
    try:

        def imported() -> bool:
            done = [c for c in creds.credentials() if c.has_access_token]
            return len(done) == users and all(c.access_expires_at for c in done)

        _wait(imported, 60, "the credmon did not import every credential")
        for name in names:
            obs.watch(root / name, name)
        with CredDelivery(creds, cred_dir=root) as delivery:
            base = work / "sandboxes-a"
            base.mkdir()
            _install_all(delivery, base, names, jobs, obs)
            obs.start()
            time.sleep(seconds)
    finally:
        credmon.terminate()
        credmon.wait(timeout=30)
        obs.close()
        creds.store.close()
    starts = [(t, label) for t, label in obs.events if "/" not in label]
    return pair(obs.events, starts)


def in_process_credmon(
    provider: Provider, work: Path, users: int, jobs: int, seconds: float
) -> list[float]:
    """(b): the credmon inside this process, no credential directory, its listener."""
    from htsec.config import load
    from htsec.credmon.daemon import Credmon
    from htsec.creds.open import open_credstore
    from htsec.execute.creds import CredDelivery

    creds = open_credstore(load())
    names = [f"b{i}" for i in range(users)]
    for name, rt in zip(names, mint_refresh_tokens(provider, users, "hb"), strict=True):
        creds.put(
            name,
            "oidc",
            refresh_token=rt,
            access_token="x",
            expires_at=int(time.time()) + 3,
            scopes="openid",
            provider="oidc",
        )
    credmon = Credmon(load(), cred_dir=None, creds=creds)
    commits: list[tuple[int, str]] = []
    credmon.engine.listeners.append(lambda user, name: commits.append((time.time_ns(), user)))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(credmon.loop(stop, interval=0.5),), daemon=True
    )
    obs = Observer()
    try:
        with CredDelivery(creds) as delivery:
            credmon.engine.listeners.append(delivery.notify)
            base = work / "sandboxes-b"
            base.mkdir()
            _install_all(delivery, base, names, jobs, obs)
            obs.start()
            thread.start()
            time.sleep(seconds)
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)
    finally:
        obs.close()
        loop.close()
        creds.store.close()
    return pair(obs.events, commits)


def inotify_floor(work: Path, rounds: int = 2000) -> list[float]:
    """The reference: write a temporary file, ``os.replace`` it into a watched directory, read
    the event (ms from just before the rename)."""
    directory = work / "floor"
    directory.mkdir()
    notify = Inotify()
    notify.add(directory, IN_MOVED_TO)
    poller = select.poll()
    poller.register(notify.fd, select.POLLIN)
    out = []
    try:
        for i in range(rounds):
            tmp = directory / f".t{i}"
            tmp.write_bytes(b'{"access_token": "x"}')
            t0 = time.time_ns()
            os.replace(tmp, directory / "oidc.use")
            while not notify.read():
                poller.poll()
            out.append((time.time_ns() - t0) / 1e6)
    finally:
        notify.close()
    return out


def run(seconds: float = 20.0, users: int = 40, jobs: int = 2) -> dict[str, Any]:
    """Both hand-offs and the reference; prints a table, returns the figures."""
    work = Path(tempfile.mkdtemp(prefix="htsec-bench-handoff-"))
    os.environ["HTSEC_HOME"] = str(work / "home")
    for name in [n for n in os.environ if n.startswith("_CONDOR_")] + ["CONDOR_CONFIG"]:
        os.environ.pop(name, None)
    config = default_config(ttl={"AccessToken": TTL, "RefreshToken": 3600, "Grant": 3600})
    provider = start_provider(config, work / "oidc")
    secret = work / "oidc.secret"
    secret.write_text(CLIENT_SECRET)
    secret.chmod(0o600)
    os.environ.update(
        {
            "_CONDOR_OIDC_CLIENT_ID": CLIENT_ID,
            "_CONDOR_OIDC_CLIENT_SECRET_FILE": str(secret),
            "_CONDOR_OIDC_TOKEN_URL": provider.token_url,
        }
    )
    try:
        floor = inotify_floor(work)
        a = separate_credmon(provider, work, users, jobs, seconds)
        b = in_process_credmon(provider, work, users, jobs, seconds)
    finally:
        provider.process.terminate()
        provider.process.wait()
        shutil.rmtree(work, ignore_errors=True)
    if not a or not b:
        raise SystemExit("handoff: no refresh was handed off (is the provider up?)")
    rows = [
        ("(a) htsec credmon, other process", a),
        ("(b) credmon in this process", b),
        ("reference: os.replace -> inotify", floor),
    ]
    print(f"token hand-off, {users} users x {jobs} jobs, {seconds:.0f} s each, ms:")
    print(f"  {'':36} {'n':>6} {'p50':>8} {'p99':>8} {'max':>8}")
    for label, values in rows:
        print(
            f"  {label:36} {len(values):6d} {statistics.median(values):8.2f} "
            f"{pct(values, 99):8.2f} {max(values):8.2f}"
        )
    return {
        "handoff_ms_p99": round(max(pct(a, 99), pct(b, 99)), 2),
        "handoff_ms_p50": round(max(statistics.median(a), statistics.median(b)), 2),
        "handoff_separate_ms_p99": round(pct(a, 99), 2),
        "handoff_in_process_ms_p99": round(pct(b, 99), 2),
        "handoff_count": len(a) + len(b),
        "inotify_floor_ms_p99": round(pct(floor, 99), 3),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
