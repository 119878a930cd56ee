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
    directory = None
    if cred_dir is not None:
        cmd += ["--cred-dir", str(cred_dir)]
        directory = CredDir(cred_dir)
        directory.check_root()
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
    if directory is not None:
        directory.write_pid()  # after the handlers: a credd's SIGHUP must not kill us
    failures = 0
    code = 0
    while not stopping:
        started = time.monotonic()
        # The worker starts with SIGHUP ignored (a disposition exec keeps) until its own
        # handler is installed: a credd's "rescan now" during its imports must not kill it.
        child = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_ignore_sighup)
        if stopping:  # SIGTERM arrived while the worker was starting
            child.send_signal(signal.SIGTERM)
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
        if code == -signal.SIGHUP:  # not a failure of the worker's own making
            log.warning("credmon worker was killed by SIGHUP; restarting")
            continue
        failures = failures + 1 if time.monotonic() - started < 30 else 1
        delay = min(60.0, 2.0**failures)
        log.error("credmon worker exited with %s; restarting in %.0f s", code, delay)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:  # SIGTERM ends the wait
            time.sleep(0.1)
    return code


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
