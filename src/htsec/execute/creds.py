"""Tokens delivered into job sandboxes, kept current while the jobs run (DESIGN.md flow 4).

What an HTCondor starter does with the shadow's ``CONDOR_getcreds`` answer
(``condor_shadow.V6.1/NTreceivers.cpp``, ``condor_starter.V6.1/jic_shadow.cpp``): before the
job starts, ``<sandbox>/.condor_creds/<service>[_<handle>].use`` for every token the job needs
(its ``OAuthServicesNeeded``), the access token only, owned by the job's user, and
``_CONDOR_CREDS`` pointing there; a token that cannot be read holds the job with
:data:`HOLD_REASON`. The starter re-fetches every ``SEC_CREDENTIAL_REFRESH`` (300 s); here a
refresh reaches every sandbox of that user within a second, driven by events, never by a timer.

Use, from the local execution point's runner (one :class:`CredDelivery` for all jobs)::

    delivery = CredDelivery(credstore, cred_dir=settings.cred_dir)
    delivery.start()                                   # once; delivery.close() at shutdown
    credmon.engine.listeners.append(delivery.notify)   # if a credmon runs in this process
    try:
        job = delivery.install(sandbox, user="alice", needs=["scitokens", "box*work"],
                               uid=job_uid, gid=job_gid)
    except CredentialsUnavailable as exc:
        hold(exc.hold_reason, exc.hold_code, exc.hold_subcode)   # HTCondor's words
    else:
        env.update(job.environ)                        # {"_CONDOR_CREDS": ".../.condor_creds"}
        ... run the job ...
        job.close()                                    # the directory is gone

Where the events come from: :mod:`htsec.execute.watch` (``inotify``) on HTCondor's credential
directory, which every credmon writes after its store commit, in this process or another one
(``htsec credmon``, ``condor_credmon_oauth``); and :meth:`CredDelivery.notify`, called by a
credmon in this process (``RefreshEngine.listeners``), which is the only signal when no
credential directory is configured (the embedded default). Either way the token delivered is
read from the store: what the credmon committed before it published.

:meth:`CredDelivery.install` blocks (a store read; for a local-issuer token not issued yet, up
to ``local_wait`` seconds while the credmon issues it, as the credd waits
``CREDD_POLLING_TIMEOUT``): call it from a worker thread in async code.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from htsec import _fs
from htsec.config import param
from htsec.creds.files import UseFile, dump_use
from htsec.creds.names import TokenName, local_user
from htsec.creds.store import CredStore
from htsec.errors import (
    ConfigError,
    CredentialInactive,
    CredentialsUnavailable,
    FileSecurityError,
    HtsecError,
    NotFound,
)
from htsec.execute.watch import CredDirWatch

__all__ = [
    "CREDS_DIR",
    "CREDS_ENV",
    "HOLD_REASON",
    "CredDelivery",
    "CredentialsUnavailable",
    "JobCreds",
    "local_services",
]

log = logging.getLogger("htsec.execute")

#: The sandbox's credential directory (the starter's name) and the variable naming it.
CREDS_DIR = ".condor_creds"
CREDS_ENV = "_CONDOR_CREDS"
#: The shadow's hold reason when a job's credentials cannot be read (``NTreceivers.cpp``,
#: ``CONDOR_getcreds``); its code and subcode are :class:`CredentialsUnavailable`'s.
HOLD_REASON = CredentialsUnavailable.hold_reason
#: The credd's wait for a credmon to write a token it asked for (``CREDD_POLLING_TIMEOUT``).
LOCAL_WAIT = 20.0


def local_services() -> frozenset[str]:
    """The local issuer's services, ``LOCAL_CREDMON_PROVIDER_NAMES`` (default ``scitokens``)."""
    raw = param("LOCAL_CREDMON_PROVIDER_NAMES") or ""
    names = {n.strip().lower() for n in raw.replace(",", " ").split() if n.strip()}
    return frozenset(names or {"scitokens"})


def _names(needs: str | Iterable[TokenName | str]) -> list[TokenName]:
    """The token names of ``needs``: a job ad's ``OAuthServicesNeeded`` (items separated by
    commas or blanks, as HTCondor's ``StringTokenIterator`` splits it) or its items."""
    items = [needs] if isinstance(needs, str) else needs
    out: list[TokenName] = []
    for need in items:
        parts = [need] if isinstance(need, TokenName) else need.replace(",", " ").split()
        for part in parts:
            name = part if isinstance(part, TokenName) else TokenName.parse_wire(part)
            if name not in out:
                out.append(name)
    return out


class _Use(NamedTuple):
    data: bytes  # the file
    key: bytes  # digest of the access token: a file holding it is current

    def __repr__(self) -> str:
        return "_Use([secure])"


class JobCreds:
    """One job's ``.condor_creds``: made by :meth:`CredDelivery.install`, kept current by it,
    removed by :meth:`close` (also on leaving a ``with`` block)."""

    def __init__(
        self,
        delivery: CredDelivery,
        sandbox: Path,
        user: str,
        names: list[TokenName],
        uid: int | None,
        gid: int | None,
    ) -> None:
        self.delivery = delivery
        self.sandbox = sandbox
        self.directory = sandbox / CREDS_DIR
        self.user = user
        self.names = tuple(names)
        self.uid, self.gid = uid, gid
        self._sandbox_fd = -1
        self._fd = -1
        self._written: dict[str, bytes] = {}  # stem -> digest of the token it holds
        self.closed = False

    def __repr__(self) -> str:
        return f"JobCreds({str(self.directory)!r}, user={self.user!r})"

    @property
    def environ(self) -> dict[str, str]:
        """What to add to the job's environment: ``{"_CONDOR_CREDS": <directory>}`` (nothing
        for a job that needs no token)."""
        return {CREDS_ENV: str(self.directory)} if self.names else {}

    def __enter__(self) -> JobCreds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop updating this job's tokens and remove its directory (safe to call twice)."""
        self.delivery._forget(self)

    # -- under the delivery's lock ---------------------------------------------------------
    def _make(self) -> None:
        """Create the directory, 0700, owned by the job's user; pinned by descriptors, so a
        job that swaps it for a symlink later moves nothing of ours outside its sandbox."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._sandbox_fd = os.open(self.sandbox, flags)
        except FileNotFoundError:
            raise FileSecurityError(f"the sandbox {self.sandbox} does not exist") from None
        except OSError as exc:
            raise FileSecurityError(
                f"the sandbox {self.sandbox} is not a directory: {exc.strerror}"
            ) from None
        try:
            os.mkdir(CREDS_DIR, 0o700, dir_fd=self._sandbox_fd)
        except FileExistsError:
            raise FileSecurityError(
                f"{self.directory} exists already; a sandbox gets a new one"
            ) from None
        self._fd = os.open(CREDS_DIR, flags, dir_fd=self._sandbox_fd)
        if self.uid is not None or self.gid is not None:
            uid, gid = -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
            os.fchown(self._fd, uid, gid)
        os.fchmod(self._fd, 0o700)

    def _write(self, name: TokenName, use: _Use) -> bool:
        """Replace ``<stem>.use`` unless it holds this access token already."""
        if self._fd < 0 or self._written.get(name.stem) == use.key:
            return False
        # Not fsynced: a sandbox does not outlive a crash.
        _fs.write_atomic(
            Path(f"{name.stem}.use"), use.data, 0o600,
            uid=self.uid, gid=self.gid, dir_fd=self._fd, durable=False,
        )  # fmt: skip
        self._written[name.stem] = use.key
        return True

    def _remove(self) -> None:
        if self._fd >= 0:
            # The job may have left anything in there, nested at any depth (shutil.rmtree
            # raised RecursionError past ~1000 levels); what is left, the sandbox's removal
            # takes once the job's processes are gone.
            with contextlib.suppress(OSError):
                _fs.empty_dir(self._fd, budget=10_000)
            mine = os.fstat(self._fd)
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                st = os.stat(CREDS_DIR, dir_fd=self._sandbox_fd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                    os.rmdir(CREDS_DIR, dir_fd=self._sandbox_fd)
        if self._sandbox_fd >= 0:
            os.close(self._sandbox_fd)
            self._sandbox_fd = -1


class CredDelivery:
    """Delivers tokens from ``creds`` into job sandboxes and keeps them current.

    ``cred_dir``: HTCondor's credential directory (``SEC_CREDENTIAL_DIRECTORY_OAUTH``), watched
    for refreshes; None when no credmon writes one (then only :meth:`notify` tells).
    ``wake_credmon``: asks a credmon to pass now (``app.state.credmon_wake`` in
    ``htsec serve``), used when a job needs a local-issuer token not issued yet.
    """

    def __init__(
        self,
        creds: CredStore,
        *,
        cred_dir: Path | None = None,
        wake_credmon: Callable[[], Any] | None = None,
        local: Iterable[str] | None = None,
        local_wait: float = LOCAL_WAIT,
    ) -> None:
        self.creds = creds
        self.wake_credmon = wake_credmon
        self.local = frozenset(s.lower() for s in local) if local is not None else None
        self.local_wait = local_wait
        self._lock = threading.RLock()  # store reads and sandbox writes, in order
        self._changed = threading.Condition()  # an event arrived (install waits on it)
        self._jobs: dict[str, list[JobCreds]] = {}  # user -> running jobs
        self._pending: collections.deque[tuple[str, str | None]] = collections.deque()
        self._use_json: dict[str, bool] = {}
        self.watch = CredDirWatch(cred_dir, self._on_change, on_wake=self._drain)
        self.updates = 0  # sandbox files replaced since start (for tests and benchmarks)

    def start(self) -> None:
        """Start watching (a credential directory that cannot be watched is logged; then
        only :meth:`notify` brings refreshes)."""
        self.watch.start()

    def close(self) -> None:
        """Stop watching and remove every directory still installed."""
        self.watch.close()
        with self._lock:
            jobs = [job for jobs in self._jobs.values() for job in jobs]
        for job in jobs:
            job.close()

    def __enter__(self) -> CredDelivery:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events ----------------------------------------------------------------------------
    def notify(self, user: str, name: TokenName | str | None = None) -> None:
        """``user``'s token ``name`` (all of them: None) changed in the store; safe from any
        thread, returns at once (the sandboxes are written on the watch thread)."""
        stem = name.stem if isinstance(name, TokenName) else name
        if isinstance(name, str) and "*" in name:
            stem = TokenName.parse_wire(name).stem
        self._pending.append((local_user(user), stem))
        self.watch.wake()

    def _drain(self) -> None:
        batch: dict[tuple[str, str | None], None] = {}  # a burst, each change once, in order
        while self._pending:
            batch[self._pending.popleft()] = None
        for user, stem in batch:
            self._on_change(user, stem)

    def _on_change(self, user: str, stem: str | None) -> None:
        with self._lock:
            jobs = list(self._jobs.get(user, ()))
            names = {n.stem: n for job in jobs for n in job.names if stem in (None, n.stem)}
            for name in names.values():
                try:
                    use = self._read(user, name)
                except HtsecError as exc:  # the jobs keep the token they have
                    log.warning("%s of %s not updated in sandboxes: %s", name.stem, user, exc)
                    continue
                except Exception:  # a bug or a driver error: logged, the others still go
                    log.exception("%s of %s not updated in sandboxes", name.stem, user)
                    continue
                for job in jobs:
                    if name in job.names:
                        try:
                            self.updates += job._write(name, use)
                        except OSError as exc:
                            log.warning("cannot update %s: %s", job.directory, exc.strerror)
        with self._changed:
            self._changed.notify_all()

    # -- reading tokens --------------------------------------------------------------------
    def _is_local(self, service: str) -> bool:
        local = self.local if self.local is not None else local_services()
        return service.lower() in local

    def _read(self, user: str, name: TokenName) -> _Use:
        """The ``.use`` for ``user``'s ``name``, from the store.

        :raises NotFound: no such credential, or no access token yet.
        :raises CredentialInactive: it needs re-authorisation.
        """
        token = self.creds.access_token(user, name.service, name.handle or None)
        key = hashlib.sha256(token.access_token.encode()).digest()
        if self._is_local(name.service) and not self._local_json(name.service):
            return _Use(dump_use(UseFile.bare_token(token.access_token)), key)
        return _Use(dump_use(token.use_json()), key)

    def _local_json(self, service: str) -> bool:
        """``LOCAL_CREDMON_TOKEN_USE_JSON`` for a local issuer (the credmon's own choice)."""
        if service not in self._use_json:
            from htsec.credmon.issuer import load_config

            try:
                self._use_json[service] = load_config(service.lower()).use_json
            except ConfigError:
                self._use_json[service] = True
        return self._use_json[service]

    def _missing(self, user: str, names: list[TokenName]) -> list[tuple[TokenName, str]]:
        """Which of ``names`` cannot be delivered now, and why; a local-issuer token not issued
        yet is asked for and waited for (at most ``local_wait`` s in all)."""
        deadline = time.monotonic() + self.local_wait
        asked = False
        while True:
            missing: list[tuple[TokenName, str]] = []
            waiting = False
            for name in names:
                try:
                    self._read(user, name)
                except CredentialInactive as exc:
                    missing.append((name, str(exc)))
                except NotFound as exc:
                    if self._is_local(name.service) and time.monotonic() < deadline:
                        waiting = True
                        if not asked:
                            self.creds.ensure_local(user, name.service, name.handle or None)
                    missing.append((name, str(exc)))
            if not waiting:
                return missing
            if not asked:
                asked = True
                if self.wake_credmon is not None:
                    self.wake_credmon()
            with self._changed:  # woken by the credmon's publish (inotify) or notify()
                self._changed.wait(max(0.0, deadline - time.monotonic()))

    # -- jobs ------------------------------------------------------------------------------
    def install(
        self,
        sandbox: str | os.PathLike[str],
        *,
        user: str,
        needs: str | Iterable[TokenName | str],
        uid: int | None = None,
        gid: int | None = None,
    ) -> JobCreds:
        """Create ``<sandbox>/.condor_creds`` (0700) with ``<stem>.use`` (0600) for each of
        ``needs`` (the job ad's ``OAuthServicesNeeded`` as it is, or its items: ``service`` or
        ``service*handle``), owned by ``uid:gid`` (None: left to this process), and keep the
        files current until :meth:`JobCreds.close`. ``user`` is the job's owner (``alice`` or
        ``alice@domain``). A job that needs no token gets nothing: no directory, and an empty
        :attr:`JobCreds.environ`.

        :raises CredentialsUnavailable: a credential is missing or needs re-authorisation;
            ``hold_reason`` is HTCondor's text, ``problems`` says which and why.
        :raises FileSecurityError: the sandbox is missing, not a directory, or already has a
            ``.condor_creds``.
        :raises BadCredentialName: a name HTCondor would not accept.
        """
        user = local_user(user)
        names = _names(needs)
        job = JobCreds(self, Path(sandbox), user, names, uid, gid)
        if not names:
            job.closed = True
            return job
        with self._lock:
            self._jobs.setdefault(user, []).append(job)
        self.watch.watch_user(user)  # before any read: no refresh falls between
        try:
            missing = self._missing(user, names)
            if missing:
                raise CredentialsUnavailable(user, missing)
            with self._lock:
                job._make()
                for name in names:
                    try:
                        job._write(name, self._read(user, name))
                    except (NotFound, CredentialInactive) as exc:  # gone in between
                        raise CredentialsUnavailable(user, [(name, str(exc))]) from None
        except BaseException:
            self._forget(job)
            raise
        return job

    def _forget(self, job: JobCreds) -> None:
        with self._lock:
            if job.closed:
                return
            job.closed = True
            jobs = self._jobs.get(job.user, [])
            if job in jobs:
                jobs.remove(job)
            if not jobs:
                self._jobs.pop(job.user, None)
                self.watch.unwatch_user(job.user)
            job._remove()

    def jobs(self) -> list[JobCreds]:
        """The jobs installed and not closed."""
        with self._lock:
            return [job for jobs in self._jobs.values() for job in jobs]
