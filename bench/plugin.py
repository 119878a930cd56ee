"""Benchmark: htsec-plugin-https beside curl, moving the same file from the same local nginx
(HTTPS, bearer token required) in the same run, each as the process a starter would run.

Rounds alternate which tool goes first; each moves the file to a fresh name on the same disk.
Rates are the file size over the whole process's wall time (the plugin's Python start-up
included, as a starter sees it), median over the rounds; "transfer only" divides by each tool's
own timing of the transfer (curl's ``%{time_total}``, the plugin's
``DeveloperData.TransferSeconds``). Also reported: CPU seconds per GiB of each process, and the
plugin's start-up (``-classad``; a run with no files). ``plugin_vs_curl`` is the plugin's
median whole-process rate over curl's (target >= 0.9).

    .venv/bin/python bench/plugin.py [--mib 256 | --gib] [--rounds 3]
    .venv/bin/python bench/plugin.py --clients [--gib]   # aiohttp, http.client, urllib3,
                                                         # httpx beside curl (the choice)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import classad2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.plugins.nginx import Nginx, start_nginx  # noqa: E402

TOKEN = "bench-token-" + "x" * 32
PLUGIN = str(Path(sys.executable).with_name("htsec-plugin-https"))


def _child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True, timeout=900)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def _inner_seconds(name: str, stdout: str, outfile: Path) -> float:
    """The transfer's own time, without process start-up: curl's ``%{time_total}``, the
    plugin's ``DeveloperData.TransferSeconds`` in its result ad."""
    if name == "curl":
        return float(stdout.strip())
    (ad,) = classad2.parseAds(outfile.read_text(), classad2.ParserType.New)
    if ad["TransferSuccess"] is not True:
        raise RuntimeError(f"the plugin failed: {ad['TransferError']}")
    return float(ad["DeveloperData"]["TransferSeconds"])


@contextlib.contextmanager
def _served(prefix: str, mib: int) -> Iterator[tuple[Path, Nginx, Path]]:
    """A scratch directory under /var/tmp, nginx serving ``big.bin`` (``mib`` MiB of random
    bytes) from it over HTTPS with :data:`TOKEN` required, and curl's header file with the
    token (not in argv: curl reads it with ``-H @file``); all gone afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    rig = start_nginx(tmp / "srv", token=TOKEN)
    try:
        block = os.urandom(1 << 20)
        with open(rig.data / "big.bin", "wb") as f:
            for _ in range(mib):
                f.write(block)
        headers = tmp / "curl-headers"
        headers.write_text(f"Authorization: Bearer {TOKEN}\n")
        headers.chmod(0o600)
        yield tmp, rig, headers
    finally:
        rig.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(mib: int = 256, rounds: int = 3) -> dict[str, Any]:
    size = mib << 20
    with _served("htsec-bench-plugin-", mib) as (tmp, rig, headers):
        work = tmp / "work"
        creds = work / ".condor_creds"
        creds.mkdir(parents=True, mode=0o700)
        (creds / "scitokens.use").write_text(json.dumps({"access_token": TOKEN}) + "\n")
        env = dict(os.environ, _CONDOR_CREDS=str(creds), SSL_CERT_FILE=str(rig.ca.cert))
        url = f"https://127.0.0.1:{rig.port}/big.bin"
        out = work / "out.bin"
        infile, outfile = work / ".plugin.in", work / ".plugin.in.out"
        infile.write_text(f'[ Url = "scitokens+{url}"; LocalFileName = "{out}" ]')
        curl = ["curl", "-sS", "--fail", "--cacert", str(rig.ca.cert), "-H", f"@{headers}"]
        cmds = {
            "curl": [*curl, "-w", "%{time_total}", "-o", str(out), url],
            "plugin": [PLUGIN, "-infile", str(infile), "-outfile", str(outfile)],
        }
        walls: dict[str, list[float]] = {"curl": [], "plugin": []}
        inner: dict[str, list[float]] = {"curl": [], "plugin": []}
        cpus: dict[str, list[float]] = {"curl": [], "plugin": []}
        _child(cmds["curl"], env)  # warm the page cache for both
        for r in range(rounds):
            order = ["curl", "plugin"] if r % 2 == 0 else ["plugin", "curl"]
            for name in order:
                outfile.write_bytes(b" " * 19264)
                wall, cpu, stdout = _child(cmds[name], env)
                inner[name].append(_inner_seconds(name, stdout, outfile))
                if out.stat().st_size != size:
                    raise RuntimeError(f"{name} moved {out.stat().st_size} of {size} bytes")
                out.unlink()
                walls[name].append(wall)
                cpus[name].append(cpu)
        startup = min(_child([PLUGIN, "-classad"], env)[0] for _ in range(3))
        empty = work / ".empty.in"
        empty.write_text("")
        outfile.write_bytes(b" " * 19264)
        run_empty = [PLUGIN, "-infile", str(empty), "-outfile", str(outfile)]
        startup_run = min(_child(run_empty, env)[0] for _ in range(3))
    rate = {k: size / statistics.median(v) / 1e6 for k, v in walls.items()}
    inner_rate = {k: size / statistics.median(v) / 1e6 for k, v in inner.items()}
    cpu_gib = {k: statistics.median(v) * (1 << 30) / size for k, v in cpus.items()}
    print(f"plugin vs curl, {mib} MiB from nginx over HTTPS on 127.0.0.1, {rounds} rounds")
    print(
        f"{'tool':8} {'MB/s median':>12} {'MB/s best':>10} {'transfer only':>14} {'CPU s/GiB':>10}"
    )
    for k in walls:
        best = size / min(walls[k]) / 1e6
        print(f"{k:8} {rate[k]:12.0f} {best:10.0f} {inner_rate[k]:14.0f} {cpu_gib[k]:10.2f}")
    print(
        f"plugin start-up: -classad {startup * 1000:.0f} ms, an empty transfer run "
        f"{startup_run * 1000:.0f} ms"
    )
    return {
        "plugin_vs_curl": round(rate["plugin"] / rate["curl"], 3),
        "plugin_vs_curl_transfer_only": round(inner_rate["plugin"] / inner_rate["curl"], 3),
        "plugin_mb_s": round(rate["plugin"]),
        "curl_mb_s": round(rate["curl"]),
        "plugin_cpu_s_per_gib": round(cpu_gib["plugin"], 2),
        "curl_cpu_s_per_gib": round(cpu_gib["curl"], 2),
        "plugin_classad_ms": round(startup * 1000),
        "plugin_bench_mib": mib,
    }


def _clients(url: str, ca: str, headers: Path, out: Path) -> dict[str, Any]:
    """One download with each HTTP client considered for the plugin, in this process (curl as
    a child): name -> function. How the plugin's client was chosen (docs/plugins.md)."""
    import asyncio
    import http.client
    import ssl
    import urllib.parse

    import aiohttp
    import httpx
    import urllib3

    auth = {"Authorization": headers.read_text().split(": ", 1)[1].strip()}
    chunk = 1 << 20

    def ctx() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=ca)

    def curl() -> None:
        cmd = ["curl", "-sS", "--fail", "--cacert", ca, "-H", f"@{headers}", "-o", str(out)]
        subprocess.run([*cmd, url], check=True)

    def with_aiohttp() -> None:
        async def go() -> None:
            async with (
                aiohttp.ClientSession(auto_decompress=False) as s,
                s.get(url, ssl=ctx(), headers=auth) as r,
            ):
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                async for data in r.content.iter_chunked(chunk):
                    os.write(fd, data)
                os.close(fd)

        asyncio.run(go())

    def readinto(resp: Any) -> None:
        buf = bytearray(chunk)
        view = memoryview(buf)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        while n := resp.readinto(buf):
            os.write(fd, view[:n])
        os.close(fd)

    def with_http_client() -> None:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=ctx())
        conn.request("GET", parts.path, headers=auth)
        readinto(conn.getresponse())
        conn.close()

    def with_urllib3() -> None:
        pool = urllib3.PoolManager(ssl_context=ctx())
        resp = pool.request("GET", url, headers=auth, preload_content=False)
        readinto(resp)
        resp.release_conn()

    def with_httpx() -> None:
        with (
            httpx.Client(verify=ctx()) as c,
            c.stream("GET", url, headers=auth) as r,
            open(out, "wb") as f,
        ):
            for data in r.iter_raw(chunk):
                f.write(data)

    return {
        "curl": curl,
        "aiohttp": with_aiohttp,
        "http.client": with_http_client,
        "urllib3": with_urllib3,
        "httpx": with_httpx,
    }


def compare_clients(mib: int, rounds: int) -> None:
    """Each candidate client beside curl on the same file, alternating order; wall rate and
    CPU seconds per GiB (this process's, or curl's as a child)."""
    size = mib << 20
    with _served("htsec-bench-clients-", mib) as (tmp, rig, headers):
        out = tmp / "out.bin"
        fns = _clients(f"https://127.0.0.1:{rig.port}/big.bin", str(rig.ca.cert), headers, out)
        rates: dict[str, list[float]] = {k: [] for k in fns}
        cpus: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(rounds):
            for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
                who = resource.RUSAGE_CHILDREN if name == "curl" else resource.RUSAGE_SELF
                u0 = resource.getrusage(who)
                t0 = time.perf_counter()
                fns[name]()
                wall = time.perf_counter() - t0
                u1 = resource.getrusage(who)
                if out.stat().st_size != size:
                    raise RuntimeError(f"{name} moved {out.stat().st_size} of {size} bytes")
                out.unlink()
                rates[name].append(size / wall / 1e6)
                cpus[name].append(u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime)
    print(f"HTTP clients, {mib} MiB from nginx over HTTPS on 127.0.0.1, {rounds} rounds")
    print(f"{'client':12} {'MB/s median':>12} {'CPU s/GiB':>10}")
    for name in fns:
        cpu = statistics.median(cpus[name]) * (1 << 30) / size
        print(f"{name:12} {statistics.median(rates[name]):12.0f} {cpu:10.2f}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mib", type=int, default=256, help="file size for plugin vs curl")
    parser.add_argument("--gib", action="store_true", help="move 1 GiB (overrides --mib)")
    parser.add_argument("--rounds", type=int, default=3, help="plugin vs curl rounds")


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    return run(1024 if args.gib else args.mib, args.rounds)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    p.add_argument(
        "--clients", action="store_true", help="compare the candidate HTTP clients instead"
    )
    a = p.parse_args()
    if a.clients:
        compare_clients(1024 if a.gib else a.mib, a.rounds)
    else:
        print(json.dumps(from_args(a)))
