"""``htsec credmon``'s process model: a supervisor and one worker.

The supervisor is what HTCondor sees: it writes ``<cred dir>/pid``, takes SIGHUP ("rescan
now") and SIGTERM, and forwards them to its worker. The worker (``python -m
htsec.credmon.worker``, in a session of its own) does the refreshes. If the supervisor is
killed -- SIGKILL included -- the worker notices its parent is gone, finishes the refreshes
it holds, commits them, and exits; so killing the daemon at any moment never strands a
refresh between the provider's rotation and the store's commit (the window in which a
rotated refresh token would otherwise be lost and the grant burnt by reuse detection). A
crashed worker is restarted; the next worker takes over leases of dead local holders at once.
Only a crash of the machine (or of the worker itself) can still lose that window: at most the
worker's ``concurrency`` (16) refreshes, each marked in flight in the store, tried once after
the restart and, if the provider refuses it, marked ``needs_reauth`` ("rotation lost in a
crash"). The worker is the OOM killer's last pick: it lowers its ``oom_score_adj``, the
supervisor raises its own (docs/htsec-credmon.md).

For ``--once`` the worker is forked from the supervisor instead of started as a new
interpreter: the supervisor has already imported everything the worker needs (and holds no
threads, connections or files of the store yet), so a one-shot pass pays for one start-up, not
two. Everything above holds unchanged for it: the forked worker runs in a session of its own,
starts with SIGHUP ignored, and the supervisor forwards signals to it and waits. The daemon
still starts each worker as a new interpreter, so a worker restarted after a crash runs the
code installed now, not what the supervisor loaded days ago.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Protocol

from htsec.credmon.daemon import tell_master_ready
from htsec.credmon.worker import OOM_SCORE_STEP
from htsec.creds.creddir import CredDir

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
    args = [
        "--interval",
        str(interval),
        "--parent",
        str(os.getpid()),
    ]
    directory = None
    if cred_dir is not None:
        args += ["--cred-dir", str(cred_dir)]
        directory = CredDir(cred_dir)
        directory.check_root()
    if once:
        args.append("--once")
    if log_file is not None:
        args += ["--log-file", str(log_file)]
    if debug:
        args.append("--debug")
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    fork = once and _single_threaded()
    stopping = False
    child: _Child | None = None

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
    oom_raised = False
    while not stopping:
        started = time.monotonic()
        # The worker starts with SIGHUP ignored (a disposition exec keeps) until its own
        # handler is installed: a credd's "rescan now" during its imports must not kill it.
        if fork:
            child = _ForkedWorker(args)
        else:
            child = subprocess.Popen(
                [sys.executable, "-m", "htsec.credmon.worker", *args],
                start_new_session=True,
                preexec_fn=_ignore_sighup,
            )
        if stopping:  # SIGTERM arrived while the worker was starting
            child.send_signal(signal.SIGTERM)
        if not oom_raised:  # once: later workers inherit the supervisor's raised value
            _before_the_worker_for_the_oom_killer()
            oom_raised = True
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


def _before_the_worker_for_the_oom_killer() -> None:
    """Raise this process's ``oom_score_adj`` above the worker's (raising needs no
    privilege; the worker was started with the old value and lowers its own further where it
    may): a killed supervisor loses nothing, a killed worker may lose rotated refresh tokens."""
    try:
        with open("/proc/self/oom_score_adj", "r+") as f:
            current = int(f.read())
            f.seek(0)
            f.write(str(min(1000, current + OOM_SCORE_STEP)))
    except (OSError, ValueError) as exc:
        log.debug("oom_score_adj left as it is: %s", exc)


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class _Child(Protocol):
    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


def _single_threaded() -> bool:
    """Only a process with one thread may fork and go on running Python in the child (a
    lock held by another thread at the fork would stay held in the child forever)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False  # no /proc: cannot tell, so start a new interpreter


class _ForkedWorker:
    """The worker as a fork of this process (``--once``): the same code as ``python -m
    htsec.credmon.worker ARGS`` in a session of its own, without a second start-up."""

    def __init__(self, args: list[str]) -> None:
        from htsec.credmon import worker  # imported here, before the fork, not by the child

        self._status: int | None = None
        for stream in (sys.stdout, sys.stderr):  # or the child would write it out again
            with contextlib.suppress(Exception):
                stream.flush()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child; its outcome is checked by the tests
            code = 70  # EX_SOFTWARE
            try:
                os.setsid()
                _ignore_sighup()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = worker.main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                logging.shutdown()
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):  # a closed stream: nowhere to say so
                        stream.flush()
                os._exit(code)

    def poll(self) -> int | None:
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def wait(self) -> int:
        while self._status is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:  # a signal handler's poll() reaped it meanwhile
                if self._status is None:
                    raise
                break
            self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def send_signal(self, sig: int) -> None:
        if self._status is None:
            os.kill(self.pid, sig)
