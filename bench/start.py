"""Job start latency of the local execution point (issue 13: target < 100 ms median).

From a submit accepted (its procs stored, the runner woken: what ``POST /v1/jobs`` does before
it answers) to the job's process running with its token in place: the runner has claimed the
proc, made its 0700 sandbox and cgroup, written ``.condor_creds/bench.use`` (htsec.execute.creds),
copied the executable in as the owner, and spawned the process as the slot's account
(``htsec-slot1``). One job at a time, each waited for; beside the floor of a bare
``subprocess.Popen`` of the same script.
Needs root (jobs run as the slot accounts ``htsec-slot<N>``; ``scripts/setup`` creates them).

    .venv/bin/python bench/start.py [--jobs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SCRIPT = '#!/bin/sh\ntest -s "$_CONDOR_CREDS/bench.use"\n'


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def floor(script: Path, n: int) -> float:
    """Median ms of a bare spawn of the job's script (what no execution point can beat)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(script)])
        times.append((time.perf_counter() - t0) * 1000)
        proc.wait()
    return statistics.median(times)


def run(jobs: int = 50) -> dict[str, Any]:
    """Start ``jobs`` jobs one at a time; returns the figures (and prints a line)."""
    if os.geteuid() != 0:
        raise SystemExit("start: needs root (jobs run as the slot accounts)")
    work = Path(tempfile.mkdtemp(prefix="htsec-bench-start-", dir="/tmp"))
    work.chmod(0o711)
    for name in [n for n in os.environ if n.startswith(("_CONDOR_", "HTSEC_"))]:
        os.environ.pop(name)
    os.environ.pop("CONDOR_CONFIG", None)
    os.environ["HTSEC_HOME"] = str(work / "home")
    os.environ["_CONDOR_EXECUTE"] = str(work / "execute")
    from htsec.config import load
    from htsec.creds.open import open_credstore
    from htsec.execute.creds import CredDelivery
    from htsec.execute.description import expand
    from htsec.execute.point import ExecutePoint
    from htsec.store.db import open_store

    settings = load()
    store = open_store(settings.database_url)
    creds = open_credstore(settings, store)
    creds.put("root", "bench", access_token="bench-token", expires_at=int(time.time()) + 3600)
    iwd = work / "iwd"
    iwd.mkdir()
    (iwd / "job.sh").write_text(SCRIPT)
    (iwd / "job.sh").chmod(0o755)
    text = "executable = job.sh\nuse_oauth_services = bench\nqueue\n"
    started: dict[int, float] = {}
    done = threading.Event()

    def on_started(row: Any, _when: float) -> None:
        started[row.cluster_id] = time.perf_counter()
        done.set()

    delivery = CredDelivery(creds)
    delivery.start()
    point = ExecutePoint(settings, store, delivery=delivery, slots=1)
    point.runner.on_started = on_started
    point.start()
    latencies: list[float] = []
    try:
        for _ in range(jobs):
            done.clear()
            t0 = 0.0

            def procs(cluster: int) -> list[tuple[int, dict[str, Any]]]:
                made = expand(text, cluster=cluster, owner="root", user="root@b", iwd=str(iwd))
                return [(p.proc_id, p.ad) for p in made]

            cluster, _ = point.book.submit(
                owner="root", submitter="bench", iwd=str(iwd), text=text, expand=procs
            )
            t0 = time.perf_counter()  # accepted: stored; now the runner is woken
            point.runner.wake()
            if not done.wait(30):
                row = point.book.get(cluster, 0)
                raise SystemExit(f"start: job {cluster} did not start: {row}")
            latencies.append((started[cluster] - t0) * 1000)
            deadline = time.monotonic() + 30
            while point.book.get(cluster, 0).state == "running" and time.monotonic() < deadline:
                time.sleep(0.005)
            state = point.book.get(cluster, 0)
            if state.state != "completed" or state.exit_code != 0:
                raise SystemExit(f"start: job {cluster} ended {state.state}: {state.hold_reason}")
    finally:
        point.stop()
        delivery.close()
        store.close()
    bare = floor(iwd / "job.sh", 20)
    shutil.rmtree(work, ignore_errors=True)
    p50, p99 = statistics.median(latencies), _pct(latencies, 0.99)
    print(
        f"start: {jobs} jobs, accepted -> running with token: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"min {min(latencies):.1f} ms (bare spawn of the script: {bare:.1f} ms)",
        file=sys.stderr,
    )
    return {
        "start_ms_p50": round(p50, 1),
        "start_ms_p99": round(p99, 1),
        "start_floor_ms": round(bare, 2),
        # The same run's reference: how many bare spawns one job start costs.
        "start_vs_floor": round(p50 / bare, 1) if bare > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(run(args.jobs)))


if __name__ == "__main__":
    main()
