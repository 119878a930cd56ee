"""What the portal's own routes cost, counted so the figures mean something on a loaded machine:
database commits and CPU milliseconds per request of the link page, the login and the return.

The whole ``htsec serve`` app runs in this process (Starlette's TestClient, no TLS) against the
real oidc-provider (tests/oidc.py) as provider ``rig``; each round makes a new link and walks it
as a browser does (tests/portal/rig.py). Commits are counted with a SQLAlchemy ``commit`` event
listener on the store's engine; CPU is this process's CPU time (``time.process_time``) spent in
the request, which includes the test client's own work and, for the return, the client side of
the two calls to the provider (code exchange, user info), not the provider's. Wall-clock
milliseconds are printed beside them.

With ``--links N``, instead: ``create_link`` (what the submit gate's check does for a job that
needs a login) timed 300 times on a SQLite store already holding N expired links (kept a day
to explain refusals), with the purge of old links on every call (as before ``Store.due``) and
at most once a minute (now).

    .venv/bin/python bench/portal_commits.py [--rounds 30] [--links 20000]

Prints the medians per route, then one JSON line ``{route: {"commits", "cpu_ms", "wall_ms"}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from tests.oidc import start_provider  # noqa: E402
from tests.portal.rig import (  # noqa: E402
    PORTAL,
    Browser,
    login_form,
    path_of,
    provider_env,
    rig_config,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="links walked (after one warm-up)")
    parser.add_argument("--links", type=int, default=0, help="time create_link instead")
    args = parser.parse_args()
    if args.links:
        print(
            json.dumps({"every_link": links(args.links, True), "once_a_minute": links(args.links)})
        )
        return
    with tempfile.TemporaryDirectory(prefix="htsec-bench-commits-") as d:
        tmp = Path(d)
        provider = start_provider(rig_config(), tmp / "oidc")
        try:
            for k in [k for k in os.environ if k.startswith(("_CONDOR_", "HTSEC_"))]:
                del os.environ[k]
            os.environ.pop("CONDOR_CONFIG", None)
            os.environ.update(
                {
                    **provider_env(provider, tmp),
                    "HTSEC_HOME": str(tmp / "home"),
                    "HTSEC_PORTAL_URL": PORTAL,
                    "_CONDOR_HTSEC_SERVE_CREDMON": "false",
                }
            )
            print(json.dumps(run(args.rounds, provider.issuer)))
        finally:
            provider.stop()


def run(rounds: int, issuer: str) -> dict[str, dict[str, float]]:
    from htsec.config import load
    from htsec.creds.links import Need, create_link, link_url
    from htsec.server import create_app
    from htsec.tokens.authority import Authority

    settings = load()
    authority = Authority(settings)
    app = create_app(settings, authority)
    commits = [0]

    @event.listens_for(app.state.credstore.store.engine, "commit")
    def _count(_conn: Any) -> None:
        commits[0] += 1

    samples: dict[str, list[tuple[int, float, float]]] = defaultdict(list)

    def timed(route: str, i: int, call: Any) -> Any:
        c0, p0, w0 = commits[0], time.process_time(), time.perf_counter()
        r = call()
        if i:  # round 0 warms up (templates, provider metadata, TLS context)
            samples[route].append(
                (
                    commits[0] - c0,
                    1000 * (time.process_time() - p0),
                    1000 * (time.perf_counter() - w0),
                )
            )
        return r

    try:
        with TestClient(app, base_url=PORTAL) as client:
            for i in range(rounds + 1):
                need = Need("rig", f"r{i}", frozenset({"openid", "profile"}))
                link = create_link(app.state.credstore, user="alice", needs=(need,))
                path = path_of(link_url(PORTAL, link.id))
                b = Browser(client, issuer)
                page = timed("GET /key", i, partial(client.get, path))
                assert page.status_code == 200, page.text
                action, fields = login_form(page, f"rig_r{i}")
                post = partial(client.post, action, data=fields, follow_redirects=False)
                start = timed("POST /login", i, post)
                assert start.status_code == 303, start.text
                back = timed("GET /return", i, partial(b.come_back, b.to_provider_and_back(start)))
                assert back.status_code == 303, back.text
                done = timed("GET /key (done)", i, partial(client.get, path))
                assert done.status_code == 200 and "All set" in done.text, done.text
                client.cookies.clear()  # the next link in a new browser
    finally:
        authority.store.close()
    out: dict[str, dict[str, float]] = {}
    for route, rows in samples.items():
        out[route] = {
            "commits": statistics.median(r[0] for r in rows),
            "commits_max": max(r[0] for r in rows),
            "cpu_ms": round(statistics.median(r[1] for r in rows), 2),
            "wall_ms": round(statistics.median(r[2] for r in rows), 2),
        }
        print(f"{route:16} " + "  ".join(f"{k} {v}" for k, v in out[route].items()))
    return out


def links(existing: int, purge_every_time: bool = False) -> dict[str, float]:
    from sqlalchemy import insert

    from htsec.creds.links import _LINKS, Need, create_link
    from htsec.store.db import Store, open_store

    with tempfile.TemporaryDirectory(prefix="htsec-bench-links-") as d:
        store = open_store(f"sqlite:///{d}/htsec.db")
        if purge_every_time:
            store.due = lambda what, every: True  # type: ignore[method-assign]
        assert isinstance(store, Store)
        now = int(time.time())
        with store.session() as s:
            s.execute(
                insert(_LINKS),
                [
                    {
                        "id": f"{n:064x}",
                        "user": f"u{n % 500}",
                        "state": "pending",
                        "created_at": now - 3600,
                        "expires_at": now - 2700,
                        "source": "htsec",
                    }
                    for n in range(existing)
                ],
            )
        commits = [0]

        @event.listens_for(store.engine, "commit")
        def _count(_conn: Any) -> None:
            commits[0] += 1

        need = Need("box", None, frozenset({"read"}))
        cpu, wall = [], []
        for i in range(300):
            p0, w0 = time.process_time(), time.perf_counter()
            create_link(store, user=f"alice{i % 50}", needs=[need], ttl=900)
            cpu.append(1000 * (time.process_time() - p0))
            wall.append(1000 * (time.perf_counter() - w0))
        store.close()
    out = {
        "commits": commits[0] / 300,
        "cpu_ms": round(statistics.median(cpu), 2),
        "wall_ms": round(statistics.median(wall), 2),
    }
    print(("purge on every link " if purge_every_time else "purge once a minute ") + str(out))
    return out


if __name__ == "__main__":
    main()
