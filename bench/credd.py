"""Benchmark: authenticated access-token fetches from the credd API, beside a bare endpoint.

Starts a real ``htsec serve`` (SQLite, HTTPS) with seeded credentials and, in the same run, a
bare FastAPI app returning a constant, served the same way (uvicorn, same TLS certificate).
Each target is driven for the same time with the same concurrency; the server is pinned to
one core and the load generator to the other.

Two load generators: an async aiohttp client (the library of the credmon's token calls), and
``wrk`` (Debian package, C) when installed. httpx's default transport tops out near 1,200
requests/s on one core here, below what either server answers; one Python process stays below
the bare endpoint whatever the client, so the headline figures come from wrk and the aiohttp
figures are printed beside them.

Prints a table, then one JSON line with ``req_per_s``, ``p50_ms``, ``p99_ms``, ``vs_bare`` (our
rate over the bare endpoint's) and the aiohttp figures.

    .venv/bin/python bench/credd.py [--seconds 5] [--concurrency 32] [--creds 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import httpx

from htsec.credmon.token_client import ssl_context

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HTSEC = str(Path(PY).with_name("htsec"))

BARE_APP = textwrap.dedent(
    """
    import sys, uvicorn
    from fastapi import FastAPI
    from htsec.web.protocol import bounded_protocol
    from htsec._log import uvicorn_log_config
    app = FastAPI()
    @app.get("/v1/creds/{service}/access-token")
    async def constant(service: str) -> dict:
        return {"access_token": "constant", "token_type": "bearer", "expires_in": 600}
    # Served exactly as 'htsec serve' serves: same TLS, same access log with its filter.
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_certfile=sys.argv[2],
                ssl_keyfile=sys.argv[3], log_level="info", access_log=True,
                log_config=uvicorn_log_config(), server_header=False,
                http=bounded_protocol(1000))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cmd: list[str], core: int) -> list[str]:
    return (
        ["taskset", "-c", str(core), *cmd]
        if shutil.which("taskset") and os.cpu_count() != 1
        else cmd
    )


def wait_up(url: str, ca: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if ca.exists():
                httpx.get(url, verify=str(ca), timeout=2)
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


async def drive(
    url: str, ca: Path, headers: dict[str, str], users: list[str], seconds: float, concurrency: int
) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=ssl_context(ca))
    async with aiohttp.ClientSession(connector=connector, headers=headers) as client:
        stop = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            nonlocal errors
            n = i
            while time.perf_counter() < stop:
                user = users[n % len(users)]
                n += concurrency
                t0 = time.perf_counter()
                async with client.get(url, params={"user": user}) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                if r.status != 200:
                    errors += 1

        # Warm up connections, then measure.
        async def warm() -> None:
            async with client.get(url, params={"user": users[0]}) as r:
                await r.read()

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return int(len(latencies) / elapsed), latencies, errors


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seconds", type=float, default=5.0, help="measuring time per target (default 5)"
    )
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    ap.add_argument("--creds", type=int, default=1000, help="credentials seeded (default 1000)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="htsec-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "HTSEC_"))}
    env.pop("CONDOR_CONFIG", None)
    port, bare_port = free_port(), free_port()
    env.update(
        HTSEC_HOME=str(home / "h"),
        _CONDOR_TRUST_DOMAIN="bench.example.org",
        _CONDOR_HTSEC_SERVER_URL=f"https://127.0.0.1:{port}",
        # The fetch path alone: the seeded credentials have no provider, and an in-process
        # credmon recording their failures would share the server's core.
        _CONDOR_HTSEC_SERVE_CREDMON="false",
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = subprocess.Popen(
            pin([HTSEC, "serve"], 1), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        procs.append(server)
        ca = home / "h" / "tls" / "ca.pem"
        wait_up(f"https://127.0.0.1:{port}/v1/health", ca, server)

        # Seed credentials straight into the store (the API path is what we measure).
        sys.path.insert(0, str(ROOT / "src"))
        os.environ.update({k: v for k, v in env.items() if k.startswith(("HTSEC_", "_CONDOR_"))})
        from htsec.config import load
        from htsec.creds.crypto import Sealer
        from htsec.creds.store import CredStore
        from htsec.store import open_store

        settings = load()
        store = open_store(settings.database_url)
        cs = CredStore(store, Sealer(settings.store_key_file))
        users = [f"user{i:05d}" for i in range(args.creds)]
        t0 = time.perf_counter()
        for u in users:
            cs.put(
                u,
                "box",
                refresh_token=f"rt-{u}",
                access_token=f"at-{u}",
                expires_at=int(time.time()) + 3600,
            )
        seed_s = time.perf_counter() - t0
        store.close()
        token = subprocess.run(
            [HTSEC, "token", "create", "-i", "condor@ep.bench.example.org", "--authz", "DAEMON"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

        bare = subprocess.Popen(
            pin(
                [
                    PY,
                    "-c",
                    BARE_APP,
                    str(bare_port),
                    str(home / "h" / "tls" / "server.pem"),
                    str(home / "h" / "tls" / "server.key"),
                ],
                1,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(bare)
        wait_up(f"https://127.0.0.1:{bare_port}/v1/creds/box/access-token", ca, bare)

        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {0})  # this process (the aiohttp client) on core 0
        headers = {"Authorization": f"Bearer {token}"}
        path = "/v1/creds/box/access-token"
        targets = {"bare FastAPI constant": bare_port, "htsec access-token fetch": port}
        results: dict[str, dict[str, dict[str, float]]] = {}
        for label, p in targets.items():
            url = f"https://127.0.0.1:{p}{path}"
            results[label] = {}
            if shutil.which("wrk"):
                results[label]["wrk"] = run_wrk(url, token, users, args, home)
            results[label]["aiohttp"] = run_aiohttp(url, ca, headers, users, args)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(home, ignore_errors=True)

    print(
        f"seeded {args.creds} credentials in {seed_s:.1f} s; concurrency {args.concurrency}, "
        f"{args.seconds:.0f} s per target and client, server on core 1, client on core 0"
    )
    print(f"{'':26} {'client':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for label, by_client in results.items():
        for client, r in by_client.items():
            print(f"{label:26} {client:>7} {r['rate']:8.0f} {r['p50']:8.2f} {r['p99']:8.2f}")
    main_client = "wrk" if "wrk" in results["htsec access-token fetch"] else "aiohttp"
    ours = results["htsec access-token fetch"]
    bare = results["bare FastAPI constant"]
    if main_client == "aiohttp":
        print("wrk is not installed (apt-get install wrk): the aiohttp client limits these figures")
    print(
        json.dumps(
            {
                "req_per_s": round(ours[main_client]["rate"]),
                "p50_ms": round(ours[main_client]["p50"], 2),
                "p99_ms": round(ours[main_client]["p99"], 2),
                "vs_bare": round(ours[main_client]["rate"] / bare[main_client]["rate"], 2),
                "bare_req_per_s": round(bare[main_client]["rate"]),
                "client": main_client,
                "aiohttp_req_per_s": round(ours["aiohttp"]["rate"]),
                "aiohttp_bare_req_per_s": round(bare["aiohttp"]["rate"]),
                "concurrency": args.concurrency,
                "seconds": args.seconds,
                "creds": args.creds,
            }
        )
    )


def run_aiohttp(
    url: str, ca: Path, headers: dict[str, str], users: list[str], args: argparse.Namespace
) -> dict[str, float]:
    rate, lat, err = asyncio.run(drive(url, ca, headers, users, args.seconds, args.concurrency))
    if err:
        raise SystemExit(f"{err} failed requests to {url}")
    return {"rate": rate, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}


WRK_SCRIPT = """
wrk.headers["Authorization"] = "Bearer %s"
local users = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", wrk.path .. "?user=" .. users[(i %% #users) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%f %%f %%f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    url: str, token: str, users: list[str], args: argparse.Namespace, home: Path
) -> dict[str, float]:
    """wrk with a Lua script (0600, never the token on a command line) rotating the users."""
    script = home / "bench.lua"
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(WRK_SCRIPT % (token, ",".join(f'"{u}"' for u in users)))
    out = subprocess.run(
        pin(
            [
                "wrk",
                "-t1",
                f"-c{args.concurrency}",
                f"-d{max(1, round(args.seconds))}s",
                "-s",
                str(script),
                url,
            ],
            0,
        ),
        capture_output=True,
        text=True,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"wrk failed: {out.stderr.strip() or out.stdout.strip()}")
    n, errors, duration_us, p50_us, p99_us = line.split()[1:]
    if int(errors):
        raise SystemExit(f"{errors} failed requests to {url}")
    return {
        "rate": int(n) / (float(duration_us) / 1e6),
        "p50": float(p50_us) / 1000,
        "p99": float(p99_us) / 1000,
    }


if __name__ == "__main__":
    main()
