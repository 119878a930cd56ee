"""Benchmark of issue 12: the portal in a real browser, and the submit gate.

**Browser half**: from the refusal of a job (the one-time link the credd hands ``htsec
submit``, ``POST /v1/creds/authorizations``) to the credential stored, driven by Playwright
(Debian's chromium, headless) against a real ``htsec serve`` and the local oidc-provider
(tests/oidc.py): open the link, press "Log in at rig", log in at the provider, come back, the
"All set" page. Each round uses a new link and a fresh browser profile (so the provider asks
for the login every time). The time is split by where it is spent:

* **provider**: the browser's requests to the provider (Playwright's resource timing, from
  request start to response end, by origin) plus the requests the portal itself makes to the
  provider while the browser waits (discovery, JWKS, the code exchange: the provider's own log,
  one line per request with its duration);
* **htsec**: the browser's requests to the portal (the same timing) minus those server-side
  provider calls made inside them;
* the rest of ``total`` is the browser's (parsing, rendering, the scripted typing) and
  Playwright's round trips.

**Gate half** (``gate_per_s``): ``htsec submit`` decisions per second over 1,000 submit files
against a store of 10,000 credentials (the submit part; None until it is written).

Prints one line per round, the medians, then one JSON line: ``total_ms``, ``htsec_ms``,
``provider_ms``, ``gate_per_s``.

    .venv/bin/python bench/portal.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, serving  # noqa: E402
from tests.oidc import Provider, default_config, start_provider  # noqa: E402
from tests.portal.rig import provider_env  # noqa: E402

HTSEC = str(Path(sys.executable).with_name("htsec"))
CHROMIUM = "/usr/bin/chromium"
NEED = {"service": "rig", "scopes": ["openid", "offline_access"]}
# "2026-11-30T02:44:51.986Z POST /token -> 200 12ms": the rig logs each request when answered.
_LOG = re.compile(r"^(\S+Z) (GET|POST) (\S+) -> \d+ (\d+)ms$")
# Requests only the portal makes (the browser's go to /auth and /interaction/...).
_SERVER_SIDE = ("/token", "/.well-known/", "/jwks", "/me")


def _htsec(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [HTSEC, *args], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip()


def _server_side_ms(log: Path, start: float, end: float) -> float:
    """Milliseconds the provider spent on the portal's own requests answered in [start, end]."""
    total = 0.0
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG.match(line)
        if not m or not m.group(3).startswith(_SERVER_SIDE):
            continue
        at = dt.datetime.fromisoformat(m.group(1)).timestamp()
        if start - 0.001 <= at <= end + 0.001:
            total += float(m.group(4))
    return total


@contextmanager
def portal_site(tmp: Path) -> Iterator[tuple[str, str, Provider, dict[str, str]]]:
    """A served portal with the rig as provider ``rig``: (url, ca, provider, client env)."""
    home = tmp / "home"
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("_CONDOR_", "HTSEC_")) and k != "CONDOR_CONFIG"
        },
        "HTSEC_HOME": str(home),
        "_CONDOR_TRUST_DOMAIN": "pool.example.org",
        "_CONDOR_UID_DOMAIN": "pool.example.org",
    }
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    config = default_config()
    config["clients"][0]["redirect_uris"].append(f"{url}/return/rig")
    provider = start_provider(config, tmp / "oidc")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # serving() starts htsec serve with os.environ
    try:
        _htsec(env, "key", "create", "POOL")
        server_env = {**provider_env(provider, tmp), "_CONDOR_HTSEC_SERVE_CREDMON": "false"}
        with serving(home, server_env, port=port):
            yield url, str(home / "tls" / "ca.pem"), provider, env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        provider.stop()


def browser_rounds(rounds: int) -> list[dict[str, float]]:
    from playwright.sync_api import sync_playwright

    results = []
    with (
        tempfile.TemporaryDirectory(prefix="htsec-bench-portal-") as d,
        portal_site(Path(d)) as (url, ca, provider, env),
    ):
        token = _htsec(env, "token", "create", "-i", "alice@pool.example.org")
        portal_origin = urlsplit(url).netloc
        provider_origin = urlsplit(provider.issuer).netloc
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            for i in range(rounds + 1):  # the first round warms up both servers
                link = httpx.post(
                    f"{url}/v1/creds/authorizations",
                    json={"needs": [{**NEED, "handle": f"round{i}"}]},  # a new one each
                    headers={"Authorization": f"Bearer {token}"},
                    verify=ca,
                ).json()["url"]
                r = one_round(browser, link, url, provider, portal_origin, provider_origin)
                if i:
                    results.append(r)
                    print(f"round {i:2}: " + "  ".join(f"{k} {v:7.1f}" for k, v in r.items()))
            browser.close()
    return results


DETAIL = False


def one_round(
    browser: Any, link: str, url: str, provider: Provider, portal: str, idp: str
) -> dict[str, float]:
    ctx = browser.new_context(ignore_https_errors=True)
    spent = {portal: 0.0, idp: 0.0}

    def finished(request: Any) -> None:
        origin = urlsplit(request.url).netloc
        timing = request.timing
        if origin in spent and timing["responseEnd"] > 0:
            ms = timing["responseEnd"] - max(timing["requestStart"], 0)
            spent[origin] += ms
            if DETAIL:
                print(f"    {ms:7.1f} ms  {request.method} {urlsplit(request.url).path[:60]}")

    page = ctx.new_page()
    page.on("requestfinished", finished)
    started = time.time()
    t0 = time.perf_counter()
    page.goto(link)
    if not page.get_by_role("button", name=re.compile("^Log in at")).count():
        raise RuntimeError(f"the link's page has no login button:\n{page.inner_text('main')}")
    page.get_by_role("button", name=re.compile("^Log in at")).click()
    page.wait_for_url(f"{provider.issuer}/**")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "rig")
    page.locator("button[type=submit]").first.click()
    page.wait_for_url(f"{url}/key/**")
    page.get_by_role("heading", name="All set").wait_for()
    total = (time.perf_counter() - t0) * 1000
    ended = time.time()
    ctx.close()
    server_side = _server_side_ms(provider.log_path, started, ended)
    htsec = spent[portal] - server_side
    idp_ms = spent[idp] + server_side
    return {
        "total_ms": total,
        "htsec_ms": htsec,
        "provider_ms": idp_ms,
        "browser_ms": total - htsec - idp_ms,
    }


def gate_per_s() -> float | None:
    """``htsec submit`` decisions per second (the gate half, written with ``htsec submit``)."""
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="browser flows to time")
    parser.add_argument("--detail", action="store_true", help="print each request's time")
    args = parser.parse_args()
    global DETAIL
    DETAIL = args.detail
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is not installed (scripts/setup --test)")
    rounds = browser_rounds(args.rounds)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(
        f"median of {len(rounds)}: total {med['total_ms']:.1f} ms, htsec {med['htsec_ms']:.1f} ms "
        f"(target < 200), provider {med['provider_ms']:.1f} ms, browser {med['browser_ms']:.1f} ms"
    )
    gate = gate_per_s()
    print(
        json.dumps(
            {
                "total_ms": round(med["total_ms"], 1),
                "htsec_ms": round(med["htsec_ms"], 1),
                "provider_ms": round(med["provider_ms"], 1),
                "gate_per_s": gate,
            }
        )
    )


if __name__ == "__main__":
    main()
