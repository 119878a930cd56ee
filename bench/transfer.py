"""Benchmark of the local execution point's transfers (issue 13), in one run:

* job start latency (``bench/start.py``): from a submit accepted to the job's process running
  as its slot's account with its token in place, median (target < 100 ms), beside a bare spawn;
* token hand-off (``bench/handoff.py``): from a credmon's refresh to the sandbox ``.use``
  replaced, p99 (target < 1 s), beside the inotify floor;
* plugin vs curl (``bench/plugin.py``): htsec-plugin-https and curl moving the same file from
  the same local nginx over HTTPS, rate ratio (target >= 0.9); 256 MiB unless ``--gib``;

Last line: one JSON object (``start_ms_p50``, ``handoff_ms_p99``, ``plugin_vs_curl`` ...).

    .venv/bin/python bench/transfer.py [--start-jobs 50] [--handoff-seconds 8] [--users 40]
                                       [--jobs 2] [--mib 256 | --gib] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import handoff
import plugin
import start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--handoff-seconds",
        type=float,
        default=8.0,
        help="per hand-off mode (two modes; 8 s: ~320 refreshes each, the run under a minute)",
    )
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2, help="jobs per user")
    parser.add_argument("--start-jobs", type=int, default=50, help="jobs timed from accepted")
    plugin.add_arguments(parser)
    args = parser.parse_args()
    figures: dict[str, object] = {}
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("start", lambda: start.run(args.start_jobs)),
        ("handoff", lambda: handoff.run(args.handoff_seconds, args.users, args.jobs)),
        ("plugin", lambda: plugin.from_args(args)),
    ]
    for name, part in parts:
        t0 = time.monotonic()
        figures.update(part())
        print(f"transfer: the {name} part took {time.monotonic() - t0:.1f} s", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
