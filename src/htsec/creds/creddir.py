"""HTCondor's OAuth credential directory (``SEC_CREDENTIAL_DIRECTORY_OAUTH``): :class:`CredDir`.

shared/FORMATS.md section 3: the contract between HTCondor's credd, schedd, shadow, starter
and any credmon; htsec writes it from its store. Confirmed against HTCondor's source: modes and
owners from ``store_cred.cpp`` (root ``2770 root:condor``, user directories ``0700``),
``OAuthCredmonWebserver.py`` (user directories ``2755``), ``credmon/utils/utils.py``
(``get_cred_dir``, ``atomic_rename`` to ``0400``, ``drop_pid``, ``credmon_complete``),
``credmon_interface.cpp`` (``<user>.mark`` ``0600``, never re-created, swept once ``now - mtime
>= SEC_CREDENTIAL_SWEEP_DELAY``; ``pid`` read as at most 255 bytes of decimal;
``CREDMON_COMPLETE`` unlinked and touched) and ``NTreceivers.cpp`` (the shadow reads
``<root>/<Owner>/<stem>.use`` only if owned by its uid with no group or other bits).

The file formats are :mod:`htsec.creds.files` and :mod:`htsec.creds.pending`; every write goes
through :mod:`htsec._fs` (temporary file with its final mode, fsync, rename, fsync of the
directory), every read through :func:`htsec.creds.safety.read_limited`.

Why about 500 lines in one file: it is one class, the directory's whole contract (root, user
directories, credential files, marks, pending logins, ``pid``, ``CREDMON_COMPLETE``), whose
methods share its owner, mode and no-follow rules; what can stand alone (formats, checks) is
already apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from htsec import _fs
from htsec.creds.files import (
    MAX_CRED_FILE,
    MetaFile,
    TopFile,
    UseFile,
    dump_meta,
    dump_top,
    dump_use,
    parse_meta,
    parse_top,
    parse_use,
    split_suffix,
)
from htsec.creds.names import TokenName, is_local_user, local_user
from htsec.creds.pending import (
    MAX_PENDING_FILE,
    PENDING_MAX_AGE,
    PendingLogin,
    check_key,
    dump_pending,
    is_key,
    parse_pending,
)
from htsec.creds.safety import check_root_mode, check_user_dir, read_limited
from htsec.errors import BadCredentialName, CredentialError, CredentialFileError, FileSecurityError

__all__ = ["CREDMON_COMPLETE", "SWEEP_DELAY", "CredDir"]

#: ``SEC_CREDENTIAL_SWEEP_DELAY`` default (``credmon_interface.cpp``).
SWEEP_DELAY = 3600
#: Name of the file a credmon deletes when a pass starts and touches when it ends.
CREDMON_COMPLETE = "CREDMON_COMPLETE"

_CRED_MODE = 0o400  # credmon atomic_rename(mode=S_IRUSR)
_USER_DIR_MODE = 0o700  # store_cred.cpp mkdir(user_cred_path, 0700)
_EFFECTIVE_IDS = os.access in os.supports_effective_ids
_ROOT_MODE = 0o2770  # store_cred.cpp comment; credmon get_cred_dir makes S_ISGID|0770
_MARK_MODE = 0o600  # credmon_mark_creds_for_sweeping: safe_fcreate_keep_if_exists(..., 0600)
_PENDING_MODE = 0o640  # credd.cpp write_secure_file(..., group_readable=true)
_PUBLIC_MODE = 0o644  # pid and CREDMON_COMPLETE: Python open() under umask 022
_MAX_PID_FILE = 255  # credmon_kick: a read of 256 bytes or more is ignored
_Kind = Literal["top", "use", "meta"]


class CredDir:
    """HTCondor's OAuth credential directory at ``root`` (``SEC_CREDENTIAL_DIRECTORY_OAUTH``).

    ::

        creds = CredDir("/var/lib/condor/oauth_credentials", gid=condor_gid)
        creds.check_root()
        name = TokenName("box", "read")
        creds.store("alice@example.org", name, top=..., meta=..., use=...)

    Layout: ``<root>/<user>/`` (0700; 2755 when HTCondor's web server made it) holds
    ``<stem>.top``, ``<stem>.use`` and ``<stem>.meta`` (0400 each); ``<root>/<user>.mark``
    (0600), ``<root>/<64 hex>`` pending logins (0640), ``<root>/pid`` and
    ``<root>/CREDMON_COMPLETE`` (0644). ``uid``/``gid``, when given, own every file and
    directory htsec creates (the shadow insists that ``.use`` files belong to its own uid,
    root in a root install, ``NTreceivers.cpp``).

    User arguments may carry ``@domain``; it is dropped, as HTCondor does.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, uid: int | None = None, gid: int | None = None
    ) -> None:
        self.root = Path(root)
        self.uid = uid
        self.gid = gid

    def __repr__(self) -> str:
        return f"CredDir({str(self.root)!r}, uid={self.uid}, gid={self.gid})"

    # root ----------------------------------------------------------------------------------

    def check_root(self) -> None:
        """Refuse a root that HTCondor's credmon would refuse (``credmon/utils`` get_cred_dir).

        :raises FileSecurityError: if it is missing, not a directory, open to "other" in any
            way, or not readable, writable and searchable by this process.
        """
        root = self.root
        fix = f"fix: chown root:condor {root} && chmod 2770 {root}"
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise FileSecurityError(
                f"credential directory {root} does not exist; "
                f"create it: mkdir -m 2770 {root} && chown root:condor {root}"
            ) from None
        except OSError as exc:
            raise FileSecurityError(f"cannot inspect {root}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise FileSecurityError(f"credential directory {root} is not a directory")
        check_root_mode(root, st)
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise FileSecurityError(
                f"credential directory {root} is not readable, writable and searchable by "
                f"uid {os.geteuid()}; {fix} and run htsec as root or in group condor"
            )

    def ensure_root(self) -> None:
        """Create the root as ``2770`` (owned by ``uid``/``gid``) if missing, then check it.

        :raises CredentialError: if the parent directory does not exist.
        :raises FileSecurityError: as :meth:`check_root`.
        """
        if not self.root.parent.is_dir():
            raise CredentialError(
                f"cannot create {self.root}: {self.root.parent} is not a directory"
            )
        _fs.make_dir(self.root, _ROOT_MODE, uid=self.uid, gid=self.gid)
        self.check_root()

    # names and paths -----------------------------------------------------------------------

    def user_dir(self, user: str) -> Path:
        """``<root>/<local user>`` (not created)."""
        return self.root / local_user(user)

    def path(self, user: str, name: TokenName, kind: _Kind) -> Path:
        """``<root>/<user>/<stem>.<kind>``."""
        if kind not in ("top", "use", "meta"):
            raise TypeError(f"kind must be top, use or meta, not {kind!r}")
        if not isinstance(name, TokenName):
            raise TypeError("name must be a TokenName")
        return self.user_dir(user) / f"{name.stem}.{kind}"

    def ensure_user_dir(self, user: str) -> Path:
        """Create ``<root>/<user>`` as 0700 or check an existing one (see :meth:`check_user_dir`).

        :raises FileSecurityError: if it is unsafe to write into.
        """
        path = self.user_dir(user)
        if not _fs.make_dir(path, _USER_DIR_MODE, uid=self.uid, gid=self.gid):
            check_user_dir(path, os.lstat(path), self._root_stat(), self.uid)
        return path

    def check_user_dir(self, user: str) -> None:
        """Could ``user``'s files be written now? The credmon asks before it redeems a refresh
        token, so that a new one is never fetched into a directory it cannot publish to.

        The directory may be missing (it is then created ``0700``); an existing one must be a
        real directory that group and others cannot write, owned by someone who can write the
        root anyway, and writable by this process -- HTCondor's ``0700`` and its web server's
        ``2755`` both qualify.

        :raises FileSecurityError: with the fix, for a directory that is not fit.
        """
        root = self._root_stat()
        path = self.user_dir(user)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path = self.root  # created on the first write: the root must take it
        else:
            check_user_dir(path, st, root, self.uid)
        if not os.access(path, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE_IDS):
            raise FileSecurityError(
                f"{path} is not writable by uid {os.geteuid()}; fix: run the credmon as the "
                f"directory's owner or as root (chown {os.geteuid()} {path})"
            )

    def _root_stat(self) -> os.stat_result:
        try:
            return os.stat(self.root)
        except OSError as exc:
            raise FileSecurityError(
                f"cannot inspect the credential directory {self.root}: {exc.strerror}"
            ) from None

    def users(self) -> list[str]:
        """Names of the user directories (invalid names skipped, as the import scanner does)."""
        out = []
        for entry in _scandir(self.root):
            if entry.is_dir(follow_symlinks=False) and is_local_user(entry.name):
                out.append(entry.name)
        return sorted(out)

    def names(self, user: str) -> list[TokenName]:
        """Tokens of ``user`` that have any of ``.top``/``.use``/``.meta`` (invalid skipped)."""
        found = set()
        for entry in _scandir(self.user_dir(user)):
            stem, suffix = split_suffix(entry.name)
            if suffix:
                try:
                    found.add(TokenName.parse_stem(stem))
                except BadCredentialName:
                    continue
        return sorted(found)

    # credential files ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _user_dir_fd(self, user: str, *, write: bool) -> Iterator[int]:
        """The user's directory, opened without following a symlink: what is then written,
        read or removed relative to it cannot be redirected by swapping the directory
        meanwhile. For ``write`` it is created if missing and checked on the open descriptor
        (see :func:`htsec.creds.safety.check_user_dir`).

        :raises FileNotFoundError: if it does not exist (and ``write`` is false).
        """
        if write:
            self.ensure_user_dir(user)
        path = self.user_dir(user)
        fd = _fs.open_dir(path)
        try:
            if write:
                check_user_dir(path, os.fstat(fd), self._root_stat(), self.uid)
            yield fd
        finally:
            os.close(fd)

    def _write(self, user: str, name: TokenName, kind: _Kind, data: bytes) -> Path:
        path = self.path(user, name, kind)
        with self._user_dir_fd(user, write=True) as fd:
            _fs.write_atomic(path, data, _CRED_MODE, uid=self.uid, gid=self.gid, dir_fd=fd)
        return path

    def write_top(
        self, user: str, name: TokenName, top: TopFile, *, keep_unknown: bool = True
    ) -> Path:
        """Write ``<stem>.top`` (0400, atomically).

        With ``keep_unknown`` the keys of an existing readable ``.top`` that ``top`` does not
        set survive (another credmon's additions); a corrupt old file is simply replaced.
        """
        if keep_unknown and top.placeholder is None:
            try:
                old = self.read_top(user, name)
            except CredentialFileError:
                old = None
            if old is not None and old.extra:
                merged = {**old.extra, **top.extra}
                top = TopFile(top.refresh_token, top.scopes, top.audience, merged)
        return self._write(user, name, "top", dump_top(top))

    def write_requested_top(
        self, user: str, name: TokenName, refresh_token: str, scopes: str, audience: str
    ) -> Path:
        """Write ``<stem>.top`` with ``scopes`` and ``audience`` exactly as the request gave
        them (0400, atomically): condor_credd compares them with the next request's as strings
        (``store_cred.cpp`` ``cred_matches``), so blanks removed would make the same submit
        file mismatch. Parsed back before it is written."""
        obj: dict[str, Any] = {"refresh_token": refresh_token}
        if scopes:
            obj["scopes"] = scopes
        if audience:
            obj["audience"] = audience
        data = json.dumps(obj).encode("ascii")  # json.dump's defaults, as the web server
        parse_top(data)
        return self._write(user, name, "top", data)

    def write_use(self, user: str, name: TokenName, use: UseFile | Mapping[str, Any]) -> Path:
        """Write ``<stem>.use`` (0400, one line, atomically).

        :raises CredentialError: if ``use`` holds a ``refresh_token``.
        """
        return self._write(user, name, "use", dump_use(use))

    def write_meta(self, user: str, name: TokenName, meta: MetaFile) -> Path:
        """Write ``<stem>.meta`` (0400, atomically)."""
        return self._write(user, name, "meta", dump_meta(meta))

    def store(
        self,
        user: str,
        name: TokenName,
        *,
        top: TopFile | None = None,
        meta: MetaFile | None = None,
        use: UseFile | Mapping[str, Any] | None = None,
    ) -> None:
        """Write the given files in the order ``.meta``, ``.top``, ``.use``.

        The credd and schedd take the appearance of ``.use`` as "stored and ready"
        (``CREDD_POLLING_TIMEOUT``), so it goes last, after everything it depends on.
        """
        if use is not None:
            dump_use(use)  # refuse a refresh_token before anything is written
        if meta is not None:
            self.write_meta(user, name, meta)
        if top is not None:
            self.write_top(user, name, top)
        if use is not None:
            self.write_use(user, name, use)

    def rotate_refresh_token(self, user: str, name: TokenName, refresh_token: str) -> TopFile:
        """Replace the refresh token in ``.top``, keeping scopes, audience and unknown keys.

        :raises CredentialError: if there is no ``.top`` or it is a placeholder.
        :raises CredentialFileError: if it cannot be read.
        """
        old = self.read_top(user, name)
        if old is None or old.placeholder is not None:
            raise CredentialError(f"{user}/{name.stem}.top holds no refresh token to replace")
        new = TopFile(refresh_token, old.scopes, old.audience, old.extra)
        self.write_top(user, name, new, keep_unknown=False)
        return new

    def _read(self, user: str, name: TokenName, kind: _Kind) -> tuple[Path, bytes] | None:
        path = self.path(user, name, kind)
        try:
            with self._user_dir_fd(user, write=False) as fd:
                return path, read_limited(path, MAX_CRED_FILE, dir_fd=fd)
        except FileNotFoundError:
            return None
        except FileSecurityError as exc:
            raise CredentialFileError(path, str(exc)) from None

    def read_top(self, user: str, name: TokenName) -> TopFile | None:
        """The parsed ``.top``, or None if there is none.

        :raises CredentialFileError: if it is unreadable, too large or malformed.
        """
        got = self._read(user, name, "top")
        return None if got is None else parse_top(got[1], got[0])

    def read_use(self, user: str, name: TokenName) -> UseFile | None:
        """The parsed ``.use``, or None (see :func:`parse_use`)."""
        got = self._read(user, name, "use")
        return None if got is None else parse_use(got[1], got[0])

    def read_meta(self, user: str, name: TokenName) -> MetaFile | None:
        """The parsed ``.meta``, or None (see :func:`parse_meta`)."""
        got = self._read(user, name, "meta")
        return None if got is None else parse_meta(got[1], got[0])

    def delete(self, user: str, name: TokenName) -> bool:
        """Remove ``.use``, ``.top`` and ``.meta`` (in that order); True if any existed.

        The credd's delete removes only ``.top`` and ``.use``; htsec also drops ``.meta``,
        which nothing reads without them.
        """
        kinds: tuple[_Kind, ...] = ("use", "top", "meta")
        removed = False
        try:
            with self._user_dir_fd(user, write=False) as fd:
                for kind in kinds:
                    removed |= _fs.remove(self.path(user, name, kind), dir_fd=fd)
        except FileNotFoundError:  # no user directory: nothing to remove
            return False
        return removed

    # mark and sweep ------------------------------------------------------------------------
    # What HTCondor's schedd and credd do to the directory; nothing of htsec calls these yet:
    # the submit part (to come) will, and the tests play HTCondor with them meanwhile.

    def mark_path(self, user: str) -> Path:
        return self.root / f"{local_user(user)}.mark"

    def touch_mark(self, user: str) -> bool:
        """Mark ``user`` for sweeping as the schedd does when the user has no jobs left.

        Nothing happens if the user has no directory; an existing mark keeps its mtime
        (``safe_fcreate_keep_if_exists``). True if a mark was created.
        """
        if not self.user_dir(user).is_dir():
            return False
        return _fs.touch(
            self.mark_path(user), _MARK_MODE, update_mtime=False, uid=self.uid, gid=self.gid
        )

    def clear_mark(self, user: str) -> bool:
        """Remove the mark (the credd does on every store, query or delete for the user)."""
        return _fs.remove(self.mark_path(user))

    def mark_time(self, user: str) -> float | None:
        """The mark's mtime, or None if there is no mark file (a directory is no mark)."""
        try:
            st = os.lstat(self.mark_path(user))
        except FileNotFoundError:
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_mtime

    def sweepable(self, *, now: float | None = None, delay: float = SWEEP_DELAY) -> list[str]:
        """Users whose mark is at least ``delay`` seconds old (``process_cred_mark_dir``)."""
        now = time.time() if now is None else now
        out = []
        for entry in _scandir(self.root):
            if not entry.name.endswith(".mark") or entry.is_dir(follow_symlinks=False):
                continue
            user = entry.name[: -len(".mark")]
            if not is_local_user(user):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if now - mtime >= delay:
                out.append(user)
        return sorted(out)

    # pending web logins --------------------------------------------------------------------
    # Written by the submit gate and read by the portal (both to come), as HTCondor's schedd
    # and OAuth web server do; only the tests call them yet.

    def pending_path(self, key: str) -> Path:
        return self.root / check_key(key)

    def write_pending(self, logins: Sequence[PendingLogin], *, key: str | None = None) -> str:
        """Write a pending-login file (0640 for the web server's group); returns its key."""
        key = secrets.token_hex(32) if key is None else check_key(key)
        _fs.write_atomic(
            self.pending_path(key), dump_pending(logins), _PENDING_MODE, uid=self.uid, gid=self.gid
        )
        return key

    def read_pending(self, key: str) -> list[PendingLogin] | None:
        """The logins in ``<root>/<key>``, or None if there is no such file.

        The root is group-writable by design, so only a file of condor_credd (root) or of
        the credmon's user (``uid`` when given, else ours) is read: anyone else's could name
        any ``LocalUser`` with provider URLs of its writer's choosing.

        :raises CredentialFileError: if it is unreadable, malformed or of another owner.
        """
        path = self.pending_path(key)
        owners = {0, os.geteuid()} if self.uid is None else {0, os.geteuid(), self.uid}
        try:
            data = read_limited(path, MAX_PENDING_FILE, owners=owners)
        except FileNotFoundError:
            return None
        return parse_pending(data, path)

    def pending_keys(self) -> list[str]:
        return sorted(
            e.name
            for e in _scandir(self.root)
            if is_key(e.name) and not e.is_dir(follow_symlinks=False)
        )

    def stale_pending(
        self, *, now: float | None = None, max_age: float = PENDING_MAX_AGE
    ) -> list[str]:
        """Keys whose file's ctime is more than ``max_age`` ago (``cleanup_key_files``)."""
        now = time.time() if now is None else now
        out = []
        for key in self.pending_keys():
            try:
                ctime = os.lstat(self.root / key).st_ctime
            except FileNotFoundError:
                continue
            if now - ctime > max_age:
                out.append(key)
        return out

    def remove_pending(self, key: str) -> bool:
        return _fs.remove(self.pending_path(key))

    # pid and CREDMON_COMPLETE --------------------------------------------------------------

    def write_pid(self, pid: int | None = None) -> None:
        """Write ``<root>/pid`` (decimal, no newline, 0644) so the credd can SIGHUP us."""
        pid = os.getpid() if pid is None else pid
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise TypeError("pid must be a positive int")
        _fs.write_atomic(
            self.root / "pid", str(pid).encode("ascii"), _PUBLIC_MODE, uid=self.uid, gid=self.gid
        )

    def read_pid(self) -> int | None:
        """The credmon's pid from ``<root>/pid``, or None if there is no file.

        Parsed as the credd does (``credmon_kick``): leading blanks, then decimal digits. The
        root is group-writable by design, so the file is read without blocking (a FIFO is
        refused), never through a symlink, at most 255 bytes, and only if it is owned by the
        credmon's user: ``uid`` when given, else ours, or root.

        :raises CredentialFileError: if it is too long, not a regular file of the credmon's
            user, or holds no positive number.
        """
        path = self.root / "pid"
        owners = {os.geteuid(), 0} if self.uid is None else {self.uid, 0}
        try:
            data = read_limited(path, _MAX_PID_FILE, owners=owners)
        except FileNotFoundError:
            return None
        match = re.match(rb"\s*\+?([0-9]{1,9})", data)
        if not match or int(match.group(1)) <= 0:
            raise CredentialFileError(path, "holds no positive process id")
        return int(match.group(1))

    def clear_complete(self) -> bool:
        """Remove ``CREDMON_COMPLETE`` at the start of a pass; True if it existed."""
        return _fs.remove(self.root / CREDMON_COMPLETE)

    def touch_complete(self) -> None:
        """Create or touch ``CREDMON_COMPLETE`` at the end of a pass."""
        _fs.touch(self.root / CREDMON_COMPLETE, _PUBLIC_MODE, uid=self.uid, gid=self.gid)

    def is_complete(self) -> bool:
        """Whether the credmon finished a pass (the submit gate, to come, waits for it as
        condor_credd does)."""
        return (self.root / CREDMON_COMPLETE).exists()


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []
