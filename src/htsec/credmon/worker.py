"""The credmon worker process (see :mod:`htsec.credmon.supervisor`); not run by hand."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from htsec._log import RedactSecrets
from htsec.config import load
from htsec.credmon.daemon import Credmon
from htsec.errors import HtsecError

__all__ = ["OOM_SCORE_ADJ", "OOM_SCORE_STEP", "main"]

#: The worker's ``oom_score_adj`` where it may set it (root, CAP_SYS_RESOURCE): the last
#: process an OOM killer picks (-1000 would exempt it entirely). It holds refreshes between the
#: provider's rotation and the store's commit; the supervisor holds nothing and may go first.
OOM_SCORE_ADJ = -999
#: Without the privilege, the supervisor raises its own score by this much instead.
OOM_SCORE_STEP = 100


def _last_for_the_oom_killer() -> None:
    """Lower this process's ``oom_score_adj`` to :data:`OOM_SCORE_ADJ`, or else as far as an
    unprivileged process may (back to the value the supervisor had before raising its own)."""
    path = "/proc/self/oom_score_adj"
    try:
        with open(path) as f:
            current = int(f.read())
    except (OSError, ValueError) as exc:
        logging.getLogger("htsec.credmon").debug("no oom_score_adj: %s", exc)
        return
    for value in (OOM_SCORE_ADJ, current - OOM_SCORE_STEP):
        if value >= current:
            return
        try:
            with open(path, "w") as f:  # fs-ok: a /proc knob, not a file htsec keeps
                f.write(str(max(-1000, value)))
            return
        except OSError:
            continue  # not permitted: try the smaller step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="htsec-credmon-worker")
    ap.add_argument("--cred-dir", type=Path)
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--parent", type=int)
    ap.add_argument("--log-file", type=Path)
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--metrics-port", type=int)
    args = ap.parse_args(argv)
    handler: logging.Handler = (
        logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    )
    handler.addFilter(RedactSecrets())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _last_for_the_oom_killer()
    try:
        credmon = Credmon(load(), cred_dir=args.cred_dir)
        if args.metrics_port is not None and not args.once:
            from prometheus_client import start_http_server

            start_http_server(
                args.metrics_port, addr="127.0.0.1", registry=credmon.engine.metrics.registry
            )
        result = asyncio.run(
            credmon.run(once=args.once, interval=args.interval, parent=args.parent)
        )
    except HtsecError as exc:
        print(f"htsec credmon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.once and result is not None:
        print(result.report.summary() + f"; {len(result.imported)} imported", flush=True)
        # Each credential that failed in this pass or is not fresh, once, with the reason.
        failed = {**result.unhealthy, **result.report.dead, **result.report.failed}
        for name, why in sorted(failed.items()):
            print(f"{name}: {why or 'not fresh and no reason recorded'}", file=sys.stderr)
        return 0 if result.ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
