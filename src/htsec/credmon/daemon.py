"""``htsec credmon``: a drop-in for HTCondor's ``condor_credmon_oauth`` (FORMATS.md section 3).

Each pass: delete ``CREDMON_COMPLETE``; import credentials HTCondor's credd or web server wrote
(``.top`` + ``.meta``; a local-issuer ``.top`` placeholder asks for a local token); refresh what
is due (:mod:`htsec.credmon.engine`) -- only where the user's directory can take the result;
mirror a rotated refresh token into ``.top``, then write the fresh access token as a
single-line ``.use`` (0400, atomic rename each); publish again every ``.use`` that does not hold
the store's access token (a publish that failed after the provider answered, a crash); touch
``CREDMON_COMPLETE``. It writes ``<cred dir>/pid``, treats SIGHUP as "rescan now", finishes the
current pass on SIGTERM, and tells a parent ``condor_master`` it is ready.

A ``.top`` is imported when the store does not know the credential, or when the file is newer
than the store's row and holds another refresh token (the user authorised again). An older
``.top`` is never imported: after a crash between the store's commit and the mirror write it
holds the refresh token the provider has already rotated away. A ``.meta`` saying
``"use_refresh_token": false`` is honoured as ``condor_credmon_oauth`` does
(``OAuthCredmon.should_renew``): that token is never refreshed and its files are left alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from htsec.config import Settings
from htsec.credmon.engine import RefreshEngine, RefreshReport
from htsec.credmon.holder import Holder
from htsec.credmon.issuer import IssuerConfig, LocalIssuer, load_config
from htsec.credmon.leases import Claim
from htsec.credmon.policy import Policy
from htsec.credmon.providers import ProviderSet, load_providers
from htsec.creds.creddir import CREDMON_COMPLETE, CredDir
from htsec.creds.files import UseFile
from htsec.creds.names import TokenName, local_user
from htsec.creds.open import open_credstore
from htsec.creds.scan import FoundCredential, ImportProblem, import_dir
from htsec.creds.store import CredentialInfo, CredStore
from htsec.errors import ConfigError, CredentialFileError, HtsecError

__all__ = ["Credmon", "PassResult", "tell_master_ready"]


log = logging.getLogger("htsec.credmon")


@dataclass
class PassResult:
    report: RefreshReport
    imported: list[str]
    problems: list[str]
    unhealthy: dict[str, str]

    @property
    def ok(self) -> bool:
        """No credential failed in this pass (its refresh, or publishing the result), and
        every credential that is not fresh has a recorded reason."""
        return not (self.report.failed or self.report.dead) and all(self.unhealthy.values())


class Credmon:
    def __init__(
        self,
        settings: Settings,
        *,
        cred_dir: Path | None,
        policy: Policy | None = None,
        providers: ProviderSet | None = None,
        verify: Any = True,
        creds: CredStore | None = None,
    ) -> None:
        self.settings = settings
        self.cred_dir = CredDir(cred_dir) if cred_dir else None
        self._own_store = creds is None
        if creds is None:
            creds = open_credstore(settings)
        self.creds = creds
        self.providers = providers or load_providers()
        # The local issuers' knobs are read now; a key is loaded when first needed (a credmon
        # with no local credentials never needs one) and a bad one is logged then, once.
        self._issuer_configs: dict[str, IssuerConfig | HtsecError] = {}
        for name in sorted(self.providers.local_names):
            try:
                self._issuer_configs[name] = load_config(name)
            except HtsecError as exc:
                self._issuer_configs[name] = exc
        self._issuers: dict[str, LocalIssuer | None] = {}
        holder = str(Holder.this_process())
        self.engine = RefreshEngine(
            self.creds,
            self.providers,
            holder=holder,
            policy=policy,
            issuers=self._issuer,
            publish=self._publish if self.cred_dir else None,
            precheck=self._can_publish if self.cred_dir else None,
            verify=verify,
        )

    def _issuer(self, name: str) -> LocalIssuer | None:
        if name not in self._issuers:
            config = self._issuer_configs.get(name.lower())
            try:
                if config is None:
                    raise ConfigError(f"{name} is not in LOCAL_CREDMON_PROVIDER_NAMES")
                if isinstance(config, HtsecError):
                    raise config
                self._issuers[name] = LocalIssuer(config)
            except HtsecError as exc:
                log.error("local issuer for %s unusable: %s", name, exc)
                self._issuers[name] = None
        return self._issuers[name]

    # -- on-disk directory -----------------------------------------------------------------
    def _write_use(self, user: str, name: TokenName, provider: str, use: dict[str, Any]) -> None:
        """The ``.use`` in the format its service wants: JSON, or a bare token for a local
        issuer with ``LOCAL_CREDMON_TOKEN_USE_JSON = false``."""
        assert self.cred_dir is not None
        issuer = self._issuer(provider) if self.providers.is_local(provider) else None
        if issuer is not None and not issuer.config.use_json:
            self.cred_dir.write_use(user, name, UseFile.bare_token(use["access_token"]))
        else:
            self.cred_dir.write_use(user, name, UseFile.from_response(use))

    def _can_publish(self, claim: Claim) -> str | None:
        """Why a refresh of ``claim`` could not be published, or None: asked before its
        refresh token is redeemed."""
        assert self.cred_dir is not None
        try:
            self.cred_dir.check_user_dir(claim.user)
        except (HtsecError, OSError) as exc:
            return str(exc)
        return None

    def _publish(self, claim: Claim, use: dict[str, Any]) -> None:
        self._publish_files(claim.user, claim.name, claim.provider, use)

    def _publish_files(
        self, user: str, name: TokenName, provider: str, use: dict[str, Any]
    ) -> None:
        """Mirror the store's refresh token into ``.top`` (if it changed), then write ``.use``:
        a ``.use`` that holds the store's access token thus means both files are current."""
        assert self.cred_dir is not None
        if not self.providers.is_local(provider):
            top = self.cred_dir.read_top(user, name)
            if top is not None and top.placeholder is None:
                current = self.creds.refresh_token(user, name.service, name.handle or None)
                if current and top.refresh_token != current:
                    self.cred_dir.rotate_refresh_token(user, name, current)
        self._write_use(user, name, provider, use)

    def _import(self) -> tuple[list[str], list[str]]:
        """Import what HTCondor wrote. What the store already holds is read in one query, and
        the new credentials are stored together (:meth:`CredStore.put_many`: one transaction,
        not one per credential)."""
        assert self.cred_dir is not None
        imported: list[str] = []
        problems: list[str] = []
        known = {(c.user, c.service, c.handle or ""): c for c in self.creds.credentials()}
        to_store: list[tuple[str, dict[str, Any]]] = []
        for item in import_dir(self.cred_dir.root):
            if isinstance(item, ImportProblem):
                problems.append(f"{item.path}: {item.message}")
                continue
            problems.extend(f"{p.path}: {p.message}" for p in item.problems)
            label = f"{item.user}/{item.name.stem}"
            try:
                found = self._import_one(item, known)
            except (HtsecError, OSError) as exc:  # OSError: the credd removed it meanwhile
                problems.append(f"{label}: {exc}")
                continue
            if isinstance(found, dict):
                to_store.append((label, found))
            elif found:
                imported.append(label)
        results = self.creds.put_many([entry for _, entry in to_store])
        for (label, _), error in zip(to_store, results, strict=True):
            if error is None:
                imported.append(label)
            else:
                problems.append(f"{label}: {error}")
        return imported, problems

    def _import_one(
        self, item: FoundCredential, known: dict[tuple[str, str, str], CredentialInfo]
    ) -> bool | dict[str, Any]:
        """True if a local-issuer credential was created; the arguments of a
        :meth:`CredStore.put` if the ``.top`` is to be imported; False if there is nothing to
        do. ``known`` holds what the store had when the pass began."""
        assert self.cred_dir is not None
        name, user = item.name, item.user
        handle = name.handle or None
        info = known.get((local_user(user), name.service, name.handle or ""))
        if self.providers.is_local(name.service):
            return (
                item.top is not None
                and info is None
                and self.creds.ensure_local(
                    user, name.service, handle, actor="credmon", source="cred-dir"
                )
            )
        if item.meta is not None and not item.meta.use_refresh_token:
            if info is not None:  # the store had it: a new login says "do not refresh"
                self._forget_unrefreshed(user, name)
            return False
        top = item.top
        if top is None or not top.refresh_token:
            return False
        if info is not None:
            top_path = self.cred_dir.path(user, name, "top")
            if os.stat(top_path).st_mtime <= info.updated_at:
                return False  # older than the store: possibly a rotated-away token
            if self.creds.refresh_token(user, name.service, handle) == top.refresh_token:
                return False
        meta = item.meta
        return {
            "user": user,
            "service": name.service,
            "handle": handle,
            "refresh_token": top.refresh_token,
            "scopes": list(top.scopes),
            "audience": top.audience,
            "client_id": meta.client_id if meta else None,
            "client_secret": meta.client_secret if meta else None,
            "token_url": meta.token_url if meta else None,
            "actor": "credmon",
            "peer": "cred-dir",
            "source": "cred-dir",
        }

    def _forget_unrefreshed(self, user: str, name: TokenName) -> None:
        """``"use_refresh_token": false`` in ``.meta``: HTCondor's web server writes it when
        the provider gave no refresh token, and ``condor_credmon_oauth`` then never refreshes
        the token (``OAuthCredmon.should_renew``): its ``.use`` stays as the login left it.
        Such a credential is not imported; one imported from the directory earlier (the user
        logged in again and got no refresh token this time) is forgotten by the store, so that
        the credmon neither refreshes it nor writes over the new login's files."""
        if (local_user(user), name) not in self.creds.from_directory():
            return  # stored through htsec itself: not the directory's to change
        self.creds.delete(user, name.service, name.handle or None, actor="credmon", peer="cred-dir")
        log.info("%s/%s: .meta now says use_refresh_token false; forgotten", user, name.stem)

    def _forget_removed(self) -> list[str]:
        """Credentials imported from the directory whose ``.top`` HTCondor has removed -- the
        user deleted it (``condor_store_cred delete`` removes ``.top`` and ``.use``) or the
        credd swept a user without jobs -- are forgotten by the store as well, and whatever
        file is left of them removed, so their tokens stop reaching jobs."""
        assert self.cred_dir is not None
        forgotten = []
        for user, name in self.creds.from_directory():
            if os.path.lexists(self.cred_dir.path(user, name, "top")):
                continue
            label = f"{user}/{name.stem}"
            try:
                self.creds.delete(
                    user, name.service, name.handle or None, actor="credmon", peer="cred-dir"
                )
                if self.cred_dir.user_dir(user).is_dir():
                    self.cred_dir.delete(user, name)
            except (HtsecError, OSError) as exc:
                log.error("%s: removed from the credential directory, but: %s", label, exc)
                continue
            log.info("%s: removed from the credential directory by HTCondor; forgotten", label)
            forgotten.append(label)
        return forgotten

    def _publish_stale(self, skip: Collection[str]) -> dict[str, str]:
        """Every credential with a live access token has it in its ``.use``: one that is
        missing or holds another token is published again (with the ``.top`` mirror). That
        covers a publish that failed after the provider answered -- the new tokens are
        durable in the store, so no token request is needed -- and a crash between the
        store's commit and the write. Credentials in ``skip`` (published or failed in this
        pass already) are left alone. Returns the failures, one log line each."""
        assert self.cred_dir is not None
        now = time.time()
        failed = {}
        for info in self.creds.credentials():
            if info.state != "active" or not info.has_access_token:
                continue
            if info.access_expires_at is not None and info.access_expires_at <= now:
                continue
            label = f"{info.user}/{info.name.stem}"
            if label in skip:
                continue
            try:
                tok = self.creds.access_token(info.user, info.service, info.handle)
                if self._use_holds(info.user, info.name, tok.access_token):
                    continue
                self._publish_files(info.user, info.name, info.provider, tok.use_json())
            except (HtsecError, OSError) as exc:
                failed[label] = f"not published: {exc}"
                log.error("%s: not published: %s", label, exc)
        return failed

    def _use_holds(self, user: str, name: TokenName, access_token: str) -> bool:
        assert self.cred_dir is not None
        try:
            use = self.cred_dir.read_use(user, name)
        except CredentialFileError:
            return False  # unreadable or damaged: written anew
        return use is not None and use.access_token == access_token

    def _health(self) -> dict[str, str]:
        """Credentials that are not fresh, with the reason recorded for each ('' if none)."""
        now = time.time()
        out = {}
        for info in self.creds.credentials():
            fresh = (
                info.state == "active"
                and info.has_access_token
                and (info.access_expires_at is None or info.access_expires_at > now)
            )
            if not fresh:
                out[f"{info.user}/{info.name.stem}"] = info.last_error or ""
        return out

    # -- passes ----------------------------------------------------------------------------
    def _mark(self, action: Callable[[], object], what: str) -> list[str]:
        """Clear or touch ``CREDMON_COMPLETE``; anything in the way (a directory of that name,
        a FIFO) is a problem reported for this pass, not the end of the credmon."""
        try:
            action()
        except (HtsecError, OSError) as exc:
            return [f"{what}: {exc}"]
        return []

    async def one_pass(self, keep_going: Callable[[], bool] | None = None) -> PassResult:
        """One pass; raises :class:`FileSecurityError` when the credential root itself is
        unusable (missing, not a directory, open to others): nothing can be published then."""
        imported: list[str] = []
        problems: list[str] = []
        if self.cred_dir is not None:
            cred_dir = self.cred_dir
            await asyncio.to_thread(cred_dir.check_root)
            problems += await asyncio.to_thread(
                self._mark, cred_dir.clear_complete, f"{cred_dir.root / CREDMON_COMPLETE}"
            )
            imported, found = await asyncio.to_thread(self._import)
            problems += found
            await asyncio.to_thread(self._forget_removed)
        report = await self.engine.run_pass(keep_going=keep_going)
        if self.cred_dir is not None:
            cred_dir = self.cred_dir
            # What this pass refreshed it has just published (or counted as failed).
            done = {*report.failed, *report.refreshed, *report.issued}
            stale = await asyncio.to_thread(self._publish_stale, done)
            report.failed.update(stale)
            problems += await asyncio.to_thread(
                self._mark, cred_dir.touch_complete, f"{cred_dir.root / CREDMON_COMPLETE}"
            )
        for p in problems:
            log.warning("skipped %s", p)
        return PassResult(report, imported, problems, await asyncio.to_thread(self._health))

    async def run(
        self, *, once: bool = False, interval: float = 10.0, parent: int | None = None
    ) -> PassResult | None:
        """Run as the worker of :mod:`htsec.credmon.supervisor`: ``parent`` is the supervisor's
        pid; when it disappears (even by SIGKILL) the worker finishes and commits the refreshes
        it holds, then exits, so no rotated refresh token is lost with the supervisor."""
        if self.cred_dir is not None:
            self.cred_dir.check_root()
        loop = asyncio.get_running_loop()
        # A thread for each refresh in flight (publishing its files: four fsyncs) and a few
        # for the store (claims, group commits): with asyncio's default of cores + 4 threads,
        # commits of rotated refresh tokens queued behind file writes.
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(
                self.engine.policy.concurrency + 4, thread_name_prefix="credmon"
            )
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.engine.wake.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

        def keep_going() -> bool:
            if parent is not None and os.getppid() != parent:
                stop.set()
            return not stop.is_set()

        try:
            if once:
                return await self.one_pass()
            if parent is None:
                tell_master_ready()
            await self.loop(
                stop,
                interval=min(interval, 1.0) if parent else interval,
                keep_going=keep_going,
                period=interval,
            )
            return None
        finally:
            self.close()

    async def loop(
        self,
        stop: asyncio.Event,
        *,
        interval: float = 10.0,
        keep_going: Callable[[], bool] | None = None,
        period: float | None = None,
        on_pass: Callable[[PassResult], None] | None = None,
        raise_errors: bool = False,
    ) -> None:
        """Passes until ``stop`` is set; a set ``engine.wake`` starts the next one at once.

        ``interval`` is how often ``keep_going`` is checked while idle, ``period`` (default
        ``interval``) how often a pass runs when nothing wakes it. A failed pass is logged and
        tried again at the next period, or with ``raise_errors`` ends the loop (its caller
        restarts it); ``on_pass`` sees every finished pass."""
        period = interval if period is None else period
        last = 0.0
        while not stop.is_set() and (keep_going is None or keep_going()):
            if time.monotonic() - last < period and not self.engine.wake.is_set():
                await _wait_any(self.engine.wake, stop, interval)
                continue
            last = time.monotonic()
            self.engine.wake.clear()
            try:
                result = await self.one_pass(keep_going)
            except HtsecError as exc:  # e.g. the store is unreachable: try again later
                if raise_errors:
                    raise
                log.error("credmon pass failed: %s", exc)
                continue
            if on_pass is not None:
                on_pass(result)

    def close(self) -> None:
        self.creds.flush_audit()
        if self._own_store:
            self.creds.store.close()


async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()


def tell_master_ready() -> None:
    """Under a ``condor_master`` (it sets ``CONDOR_INHERIT``), report the Ready state."""
    if not os.environ.get("CONDOR_INHERIT"):
        return
    try:
        import htcondor2

        htcondor2.set_ready_state("Ready")
    except Exception as exc:  # the master may be gone; running on is right
        log.warning("could not tell condor_master we are ready: %s", exc)
