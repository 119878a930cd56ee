"""Lease holders across processes and PID namespaces, with real processes on SQLite and
PostgreSQL: a live holder's leases are never freed by a credmon with the same host name in
another PID namespace (containers, pods), nor mistaken for a reused pid; a holder that provably
ended on this boot and in this namespace is taken over at once.

PID namespaces are real ones made by ``unshare --pid --fork`` (root only, as CI runs)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.credmon.holder import Holder
from htsec.credmon.leases import Leases
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import Store

# A credmon stand-in: claims and reaps on command, as the refresh engine does.
CHILD = r"""
import sys, time
from htsec.creds.crypto import Sealer
from htsec.credmon.holder import Holder
from htsec.credmon.leases import Leases
from htsec.creds.store import CredStore
from htsec.store import open_store
creds = CredStore(open_store(sys.argv[1]), Sealer(sys.argv[2]))
leases = Leases(creds, str(Holder.this_process()))
print(leases.holder, flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "claim":
        print(len(leases.claim(now=int(time.time()), lease_s=600, limit=int(arg))), flush=True)
    elif cmd == "reap":
        print(leases.reap_dead_holders(), flush=True)
"""


class Credmon:
    """One stand-in process; ``namespaced`` runs it as pid 1 of a new PID namespace."""

    def __init__(self, url: str, key: Path, *, namespaced: bool) -> None:
        prefix = ["unshare", "--pid", "--fork", "--kill-child"] if namespaced else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", CHILD, url, str(key)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.holder = self.proc.stdout.readline().strip()
        assert Holder.parse(self.holder) is not None, self.holder

    def ask(self, line: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # the namespace's pid 1 dies with unshare
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def creds(store: Store, tmp_path: Path) -> CredStore:
    generate_key_file(tmp_path / "store.key")
    cs = CredStore(store, Sealer(tmp_path / "store.key"))
    for i in range(20):
        cs.put(f"u{i}", "box", refresh_token=f"rt-{i}")
    return cs


@pytest.fixture
def spawn(creds: CredStore, db_url: str, tmp_path: Path) -> Iterator[object]:
    started: list[Credmon] = []

    def start(*, namespaced: bool) -> Credmon:
        if namespaced and (os.geteuid() != 0 or not shutil.which("unshare")):
            pytest.skip("PID namespaces need root and unshare(1)")
        c = Credmon(db_url, tmp_path / "store.key", namespaced=namespaced)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


def owners(creds: CredStore) -> dict[str, int]:
    from sqlalchemy import text

    with creds.store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT lease_owner, count(*) FROM credentials WHERE lease_owner IS NOT NULL "
                "GROUP BY lease_owner"
            )
        )
        return {r[0]: int(r[1]) for r in rows}


def test_live_leases_survive_twins_in_other_pid_namespaces(creds: CredStore, spawn) -> None:  # type: ignore[no-untyped-def]
    """Two credmons, each pid 1 of its own PID namespace, and one in this namespace, all with
    this host's name: none frees another's leases, though none can see the others' pids."""
    a = spawn(namespaced=True)
    b = spawn(namespaced=True)
    outer = spawn(namespaced=False)
    assert Holder.parse(a.holder).pid == Holder.parse(b.holder).pid == 1  # type: ignore[union-attr]
    assert len({a.holder, b.holder, outer.holder}) == 3  # unique per process start
    assert a.ask("claim 5") == 5
    assert outer.ask("claim 5") == 5  # its pid does not exist in a's or b's namespace
    held = owners(creds)
    for c in (a, b, outer):
        assert c.ask("reap") == 0
    assert b.ask("claim 20") == 10  # only the free ones
    assert owners(creds) == {**held, b.holder: 10}
    # Nor does a credmon in this process's namespace (pytest's) free a's or b's.
    leases = Leases(creds, str(Holder.this_process()))
    assert leases.reap_dead_holders() == 0
    assert leases.claim(now=int(time.time()), lease_s=60, limit=20) == []


def test_a_holder_that_ended_in_this_namespace_is_taken_over_at_once(
    creds: CredStore,
    spawn,  # type: ignore[no-untyped-def]
) -> None:
    dead = spawn(namespaced=False)
    assert dead.ask("claim 8") == 8
    elsewhere = spawn(namespaced=True)
    assert elsewhere.ask("claim 4") == 4
    dead.kill()
    elsewhere.kill()  # its namespace is gone, but that cannot be proved from here
    leases = Leases(creds, str(Holder.this_process()))
    assert leases.reap_dead_holders() == 8
    assert owners(creds) == {elsewhere.holder: 4}  # waits for its lease to run out
    assert len(leases.claim(now=int(time.time()), lease_s=60, limit=20)) == 16


def test_a_reused_pid_is_not_the_holder(creds: CredStore) -> None:
    """A holder whose pid now belongs to another process (other start time) is dead; the same
    pid with its own start time is alive."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with open(f"/proc/{sleeper.pid}/stat") as f:
            start = int(f.read().rpartition(")")[2].split()[19])
        me = Holder.this_process()
        alive = Holder(me.host, sleeper.pid, start, me.boot_id, me.pid_ns, "a" * 16)
        reused = Holder(me.host, sleeper.pid, start + 1, me.boot_id, me.pid_ns, "b" * 16)
        for holder, n in ((alive, 3), (reused, 4)):
            Leases(creds, str(holder)).claim(now=int(time.time()), lease_s=600, limit=n)
        assert Leases(creds, str(me)).reap_dead_holders() == 4
        assert owners(creds) == {str(alive): 3}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_older_credmons_names_are_trusted_until_their_lease_ends(creds: CredStore) -> None:
    """``host:pid`` from a credmon before holders named process starts: never freed early."""
    Leases(creds, "localhost:999999").claim(now=int(time.time()), lease_s=600, limit=5)
    assert Leases(creds, str(Holder.this_process())).reap_dead_holders() == 0


@pytest.mark.parametrize("pid", ["\u00b2", "\u0663", str(2**64), "0" * 400 + "7"])
def test_a_malformed_holder_is_trusted_until_its_lease_ends(creds: CredStore, pid: str) -> None:
    """A holder name with this boot and namespace but a pid that is no plain pid (a Unicode
    digit, a number beyond any pid) is not anyone's name: reaping neither raises (which stopped
    every pass) nor frees its lease early."""
    me = Holder.this_process()
    forged = f"{me.host}:{pid}:1:{me.boot_id}:{me.pid_ns}:{'c' * 16}"
    Leases(creds, forged).claim(now=int(time.time()), lease_s=600, limit=3)
    assert Holder.parse(forged) is None
    assert Leases(creds, str(me)).reap_dead_holders() == 0
    assert owners(creds) == {forged: 3}
