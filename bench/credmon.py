"""Benchmark: one full refresh pass of the credmon against a real OAuth server.

Against a local npm ``oidc-provider`` (refresh-token rotation on; every thread of it pinned to
one core, this process to the other), in the same run:

(a) htsec's refresh pass over N credentials (SQLite store, leases, sealing, audit);
(b) the way ``condor_credmon_oauth`` does it: one credential after another with a blocking
    HTTP client, writing ``.use`` and ``.top`` files (S credentials);
(c) the provider's ceiling: a plain asyncio load generator posting pre-built refresh grants on
    keep-alive connections (M tokens, run before and after (a); the higher rate counts).
    For reference, the same posts through a plain aiohttp session (the library under htsec's
    token client) and through httpx's default transport are printed too;
(d) ``htsec credmon --once`` as a cold process over 200 users in a directory written as
    HTCondor's web server writes it (``.top`` + ``.meta``; the provider known only from
    ``.meta``), ``HTSEC_CREDMON_RATE = 0`` (condor_credmon_oauth has no rate limit): first the
    pass that imports them all into a new store (``once_first_s``), then passes over the users
    already imported with every access token due (``once_s``, the best of two). Beside them, in
    the same run: the start-up floor ``python -c 'import htsec'`` and the import floor
    ``python -c 'import htsec.cli, htsec.credmon.worker, htsec.credmon.token_client'`` (what a
    pass loads; best of three each).

Refresh tokens are obtained beforehand: 20 per set through the real authorization-code + PKCE
flow, the rest minted in bulk by the rig (same grants and tokens, without the browser).
Rates are compared per credential; the last line is one JSON object with ``pass_s`` (wall time
of (a)), ``vs_sequential`` (rate a / rate b), ``vs_ceiling`` (rate a / rate c), ``once_s`` and
``once_first_s`` (wall times of (d)).

    .venv/bin/python bench/credmon.py [--count 2000] [--sequential 500] [--ceiling 2000]
    .venv/bin/python bench/credmon.py --count 10000        # the full size (slow set-up)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.oidc import (  # noqa: E402
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    default_config,
    mint_refresh_tokens,
    obtain_refresh_token,
    start_provider,
)

from htsec.credmon.engine import RefreshEngine  # noqa: E402
from htsec.credmon.policy import Policy  # noqa: E402
from htsec.credmon.providers import Provider, ProviderSet  # noqa: E402
from htsec.creds.crypto import Sealer, generate_key_file  # noqa: E402
from htsec.creds.store import CredStore  # noqa: E402
from htsec.store import open_store  # noqa: E402


def tokens_for(provider: object, n: int, prefix: str) -> list[str]:
    """n refresh tokens: a few through the real browser flow (auth code + PKCE), the rest made
    by the rig's admin API the same way the token endpoint makes them (a browser login costs
    five requests; thousands would not fit the benchmark's minute)."""
    real = min(n, 20)
    made = mint_refresh_tokens(provider, n - real, prefix + "m") if n > real else []  # type: ignore[arg-type]
    return _browser_tokens(provider, real, prefix) + made


def _browser_tokens(provider: object, n: int, prefix: str) -> list[str]:

    def one(i: int) -> str:
        return str(
            obtain_refresh_token(
                provider,
                CLIENT_ID,
                CLIENT_SECRET,
                REDIRECT_URI,  # type: ignore[arg-type]
                f"{prefix}{i}",
                "openid",
            )["refresh_token"]
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def sequential(token_url: str, tokens: list[str], outdir: Path) -> float:
    """condor_credmon_oauth's shape: serial, blocking client, .use then .top per credential."""
    t0 = time.perf_counter()
    with httpx.Client(timeout=10) as client:
        for i, rt in enumerate(tokens):
            r = client.post(
                token_url,
                data={"grant_type": "refresh_token", "refresh_token": rt},
                auth=(CLIENT_ID, CLIENT_SECRET),
            )
            r.raise_for_status()
            body = r.json()
            new_rt = body.pop("refresh_token", rt)
            for name, data in ((f"u{i}.use", body), (f"u{i}.top", {"refresh_token": new_rt})):
                tmp = outdir / (name + ".tmp")
                tmp.write_text(json.dumps(data))
                os.replace(tmp, outdir / name)
    return len(tokens) / (time.perf_counter() - t0)


async def ceiling(token_url: str, tokens: list[str], concurrency: int) -> float:
    """The provider's ceiling: a plain asyncio load generator, as little client work as
    possible -- requests pre-built as bytes, ``concurrency`` keep-alive connections, responses
    read by Content-Length (the provider sends it). Each response's status is checked."""
    url = urlsplit(token_url)
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    requests = []
    for rt in tokens:
        body = urlencode({"grant_type": "refresh_token", "refresh_token": rt}).encode()
        requests.append(
            (
                f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Basic {basic}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    queue = iter(requests)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            for request in queue:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200 "):
                    raise SystemExit(f"the provider answered {head[:40]!r}")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return len(tokens) / (time.perf_counter() - t0)


async def httpx_default(token_url: str, tokens: list[str], concurrency: int) -> float:
    """For reference: the same posts through httpx's default transport (httpcore)."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def one(rt: str) -> None:
            async with sem:
                r = await client.post(
                    token_url,
                    data={"grant_type": "refresh_token", "refresh_token": rt},
                    auth=(CLIENT_ID, CLIENT_SECRET),
                )
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(rt) for rt in tokens))
        return len(tokens) / (time.perf_counter() - t0)


async def aiohttp_plain(token_url: str, tokens: list[str], concurrency: int) -> float:
    """For reference: the same posts through a plain aiohttp session (no bounds or guards)."""
    sem = asyncio.Semaphore(concurrency)
    auth = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, CLIENT_SECRET)}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(rt: str) -> None:
            async with sem:
                form = {"grant_type": "refresh_token", "refresh_token": rt}
                async with session.post(token_url, data=form, headers=auth) as r:
                    await r.read()
                    r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(rt) for rt in tokens))
        return len(tokens) / (time.perf_counter() - t0)


ONCE_USERS = 200


def _cold(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, the process and its children) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, cpu, proc.stdout


def credmon_once(provider: object, tmp: Path) -> dict[str, float]:
    """(d): see the module's docstring."""
    tokens = mint_refresh_tokens(provider, ONCE_USERS, "once")  # type: ignore[arg-type]
    root = tmp / "oauth_credentials"
    root.mkdir()
    os.chmod(root, 0o2770)
    for i, rt in enumerate(tokens):
        user = root / f"once{i}"
        user.mkdir(mode=0o700)
        files = {
            "oidc.top": {"refresh_token": rt, "scopes": "openid", "audience": ""},
            "oidc.meta": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "token_url": provider.token_url,  # type: ignore[attr-defined]
                "use_refresh_token": True,
            },
        }
        for name, data in files.items():
            fd = os.open(user / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
    home = tmp / "once-home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("_CONDOR_", "HTSEC_")) and k != "CONDOR_CONFIG"
    }
    env |= {
        "HTSEC_HOME": str(home),
        "_CONDOR_TRUST_DOMAIN": "bench.example.org",
        "_CONDOR_HTSEC_CREDMON_RATE": "0",
    }
    python = sys.executable
    out: dict[str, float] = {}
    for key, code in (
        ("floor", "import htsec"),
        ("imports", "import htsec.cli, htsec.credmon.worker, htsec.credmon.token_client"),
    ):
        out[f"{key}_s"], out[f"{key}_cpu_s"] = min(
            _cold([python, "-c", code], env)[:2] for _ in range(3)
        )
    htsec = [str(Path(python).parent / "htsec"), "credmon", "--cred-dir", str(root), "--once"]
    expect = f"{ONCE_USERS} refreshed"
    wall, cpu, said = _cold(htsec, env)
    if expect not in said or f"{ONCE_USERS} imported" not in said:
        raise SystemExit(f"first htsec credmon --once: {said}")
    out["once_first_s"], out["once_first_cpu_s"] = wall, cpu
    runs = []
    for _ in range(2):
        with sqlite3.connect(home / "htsec.db") as db:  # every access token due now
            db.execute(
                "UPDATE credentials SET access_expires_at = ?, next_attempt_at = NULL",
                (int(time.time()) - 1,),
            )
        wall, cpu, said = _cold(htsec, env)
        if expect not in said or "; 0 imported" not in said:
            raise SystemExit(f"htsec credmon --once: {said}")
        runs.append((wall, cpu))
    out["once_s"], out["once_cpu_s"] = min(runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=2000, help="credentials in htsec's pass (a)")
    ap.add_argument("--sequential", type=int, default=500, help="credentials for (b), >= 500")
    ap.add_argument("--ceiling", type=int, default=2000, help="refresh grants for (c)")
    ap.add_argument("--warmup", type=int, default=3000, help="refreshes before measuring")
    ap.add_argument(
        "--concurrency", type=int, default=16, help="htsec's and (c)'s requests in flight"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="htsec-bench-credmon-"))
    cfg = default_config(ttl={"AccessToken": 3600, "RefreshToken": 86400, "Grant": 86400})
    provider = start_provider(cfg, tmp)
    if os.environ.get("HTSEC_BENCH_DEBUG"):
        print(provider.log, file=sys.stderr)
    try:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            # Every thread of node (V8's GC helpers, libuv's pool), not just the main one:
            # otherwise they run on the benchmark's core.
            for tid in os.listdir(f"/proc/{provider.process.pid}/task"):
                os.sched_setaffinity(int(tid), {1})
            os.sched_setaffinity(0, {0})
        t0 = time.perf_counter()
        ours = tokens_for(provider, args.count, "a")
        seq = tokens_for(provider, args.sequential, "b")
        top = [tokens_for(provider, args.ceiling, f"c{k}") for k in range(2)]
        ref = tokens_for(provider, 1000, "h")
        ref_aio = tokens_for(provider, 1000, "k")
        warm = tokens_for(provider, args.warmup, "w")
        setup_s = time.perf_counter() - t0

        store = open_store(f"sqlite:///{tmp / 'htsec.db'}")
        generate_key_file(tmp / "store.key")
        creds = CredStore(store, Sealer(tmp / "store.key"))
        for i, rt in enumerate(ours):
            creds.put(f"a{i}", "oidc", refresh_token=rt)
        providers = ProviderSet(
            {
                "oidc": Provider(
                    name="oidc",
                    client_id=CLIENT_ID,
                    client_secret=CLIENT_SECRET,
                    token_url=provider.token_url,
                    rate=0,
                )
            },
            set(),
        )
        engine = RefreshEngine(
            creds, providers, holder="bench", policy=Policy(concurrency=args.concurrency, batch=256)
        )
        # Warm the provider up first (node's JIT): otherwise whichever runs first pays for it.
        # (c) runs before and after (a); the higher figure counts (the stricter ratio).
        asyncio.run(ceiling(provider.token_url, warm, args.concurrency))
        rates_c = [asyncio.run(ceiling(provider.token_url, top[0], args.concurrency))]
        t0 = time.perf_counter()
        report = asyncio.run(engine.run_pass())
        pass_s = time.perf_counter() - t0
        if len(report.refreshed) != args.count:
            raise SystemExit(
                f"htsec refreshed {len(report.refreshed)} of {args.count}: {report.summary()}"
            )
        rate_a = args.count / pass_s
        outdir = tmp / "anchor"
        outdir.mkdir()
        rate_b = sequential(provider.token_url, seq, outdir)
        rates_c.append(asyncio.run(ceiling(provider.token_url, top[1], args.concurrency)))
        rate_c = max(rates_c)
        rate_h = asyncio.run(httpx_default(provider.token_url, ref, args.concurrency))
        rate_k = asyncio.run(aiohttp_plain(provider.token_url, ref_aio, args.concurrency))
        store.close()
        once = credmon_once(provider, tmp)
    finally:
        provider.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"set-up: {args.count + args.sequential + 2 * args.ceiling + 2000 + args.warmup} "
        "refresh tokens "
        f"in {setup_s:.1f} s; "
        "provider on core 1, this process on core 0"
    )
    print(f"{'':44} {'creds':>6} {'per s':>8}")
    print(f"{'(a) htsec refresh pass':44} {args.count:6d} {rate_a:8.0f}   ({pass_s:.2f} s)")
    print(
        f"{'(b) sequential, blocking (condor_credmon_oauth)':44} {args.sequential:6d} {rate_b:8.0f}"
    )
    print(
        f"{'(c) provider ceiling (plain async posts)':44} {args.ceiling:6d} {rate_c:8.0f}"
        f"   (before/after (a): {rates_c[0]:.0f}/{rates_c[1]:.0f})"
    )
    print(f"{'    for reference: plain aiohttp session':44} {1000:6d} {rate_k:8.0f}")
    print(f"{'    for reference: httpx default transport':44} {1000:6d} {rate_h:8.0f}")
    print(f"{'':44} {'creds':>6} {'wall s':>8} {'cpu s':>6}")
    for label, key, n in (
        ("(d) htsec credmon --once, first import", "once_first", ONCE_USERS),
        ("(d) htsec credmon --once, already imported", "once", ONCE_USERS),
        ("    start-up floor: python -c 'import htsec'", "floor", 0),
        ("    imports: cli, credmon.worker, token_client", "imports", 0),
    ):
        print(f"{label:44} {n or '':>6} {once[key + '_s']:8.2f} {once[key + '_cpu_s']:6.2f}")
    print(
        json.dumps(
            {
                "pass_s": round(pass_s, 3),
                "count": args.count,
                "rate_per_s": round(rate_a),
                "vs_sequential": round(rate_a / rate_b, 2),
                "vs_ceiling": round(rate_a / rate_c, 2),
                "sequential_per_s": round(rate_b),
                "ceiling_per_s": round(rate_c),
                "aiohttp_per_s": round(rate_k),
                "httpx_default_per_s": round(rate_h),
                "once_s": round(once["once_s"], 3),
                "once_first_s": round(once["once_first_s"], 3),
                "once_floor_s": round(once["floor_s"], 3),
                "once_imports_s": round(once["imports_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
