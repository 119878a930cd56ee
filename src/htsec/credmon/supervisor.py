"""``htsec credmon``'s process model: a supervisor and one worker.

The supervisor is what HTCondor sees: it writes ``<cred dir>/pid``, takes SIGHUP ("rescan
now") and SIGTERM, and forwards them to its worker. The worker (``python -m
htsec.credmon.worker``, in a session of its own) does the refreshes. If the supervisor is
killed -- SIGKILL included -- the worker notices its parent is gone, finishes the refreshes
it holds, commits them, and exits; so killing the daemon at any moment never strands a
refresh between the provider's rotation and the store's commit (the window in which a
rotated refresh token would otherwise be lost and the grant burnt by reuse detection). A
crashed worker is restarted; the next worker takes over leases of dead local holders at once.
Only a crash of the machine (or of the worker itself) can still lose that window.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from htsec.credmon.daemon import tell_master_ready
from htsec.creds.layout import CredDir

__all__ = ["supervise"]

log = logging.getLogger("htsec.credmon")


def supervise(
    *,
    cred_dir: Path | None,
    once: bool,
    interval: float,
    log_file: Path | None,
    debug: bool,
    metrics_port: int | None = None,
) -> int:
    """Run the worker (restarting it if it dies) until told to stop; returns an exit code."""
    cmd = [
        sys.executable,
        "-m",
        "htsec.credmon.worker",
        "--interval",
        str(interval),
        "--parent",
        str(os.getpid()),
    ]
    if cred_dir is not None:
        cmd += ["--cred-dir", str(cred_dir)]
        directory = CredDir(cred_dir)
        directory.check_root()
        directory.write_pid()
    if once:
        cmd.append("--once")
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    if debug:
        cmd.append("--debug")
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    failures = 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(cmd, start_new_session=True)
        if not once and failures == 0:
            tell_master_ready()
        while True:
            try:
                code = child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
        if once or stopping or code == 0:
            return code
        failures = failures + 1 if time.monotonic() - started < 30 else 1
        delay = min(60.0, 2.0**failures)
        log.error("credmon worker exited with %s; restarting in %.0f s", code, delay)
        time.sleep(delay)
