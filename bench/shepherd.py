"""One shepherd policy decision over a simulated pool: 10,000 hosts, 1,000,000 idle jobs.

Times htsec.flock.policy.decide (the whole cycle's decision, target < 50 ms) and, beside it in
the same run, a reference: one pass that only sorts the same hosts by name (the floor any
decision that looks at every host pays). Also times reading the pool from 20,000 slot ads
(htsec.flock.condor.hosts_from_ads on plain dicts, the shape htcondor2 returns). Three load
shapes: idle queue 1,000,000 (reclaim), 0 (lend) and 800 (between the thresholds: hold).
Last line: one JSON object with ``cycle_ms`` (the worst shape's median) and ``rss_mib``.

    .venv/bin/python bench/shepherd.py [--hosts 10000] [--idle 1000000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable

from htsec.flock.condor import hosts_from_ads
from htsec.flock.policy import Host, Mode, Observed, PolicyConfig, decide


def pool(n: int, seed: int = 1) -> list[Host]:
    rnd = random.Random(seed)
    hosts = []
    for i in range(n):
        r = rnd.random()
        mode = Mode.REGULAR if r < 0.6 else Mode.FLOCKING if r < 0.9 else Mode.DRAINING
        target = (Mode.REGULAR if rnd.random() < 0.5 else Mode.FLOCKING) if r >= 0.9 else None
        hosts.append(Host(f"p{i:05d}", mode, rnd.random() < 0.7, rnd.random() < 0.99, target,
                          1e6 - rnd.choice((0, 100, 10_000))))  # fmt: skip
    return hosts


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    hosts = pool(args.hosts)
    cfg = PolicyConfig()
    now = 1e6
    ref = median_ms(lambda: sorted(hosts, key=lambda h: h.name), args.repeat)
    worst = 0.0
    for idle in (args.idle, 0, 800):
        obs = Observed(hosts, idle)
        ms = median_ms(lambda obs=obs: decide(obs, cfg, now), args.repeat)  # type: ignore[misc]
        n = len(decide(obs, cfg, now))
        print(f"decide, idle {idle:>9,}: {ms:7.2f} ms median ({n} actions)")
        worst = max(worst, ms)
    print(f"reference (sort {args.hosts:,} hosts by name): {ref:7.2f} ms median")
    ads = []
    masters = []
    for h in hosts:
        masters.append({"Name": h.name, "Machine": h.name, "HTSEC_FLOCK_HOST": h.name})
        for role in ("regular", "flocking") if h.mode is Mode.DRAINING else (h.mode.value,):
            ads.append({"Name": f"slot1@{role}-{h.name}", "Machine": h.name,
                        "HTSEC_FLOCK_ROLE": role, "HTSEC_FLOCK_HOST": h.name,
                        "State": "Claimed" if h.busy else "Unclaimed"})  # fmt: skip
            ads.append({**ads[-1], "Name": f"slot2@{role}-{h.name}", "State": "Unclaimed"})
    parse = median_ms(lambda: hosts_from_ads(ads, masters), max(3, args.repeat // 3))
    print(f"reading {len(ads):,} slot ads + {len(masters):,} master ads: {parse:7.2f} ms median")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident: {rss:.1f} MiB (whole process, Python and the simulated pool included)")
    print(json.dumps({"hosts": args.hosts, "idle_jobs": args.idle, "cycle_ms": round(worst, 2),
                      "reference_ms": round(ref, 2), "ads_ms": round(parse, 2),
                      "rss_mib": round(rss, 1)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
