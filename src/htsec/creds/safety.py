"""What keeps htsec's reads and writes in HTCondor's credential directory safe.

A root that "other" may enter is refused (``credmon/utils/utils.py`` ``get_cred_dir``); a user
directory is published into only while no one else could change what is in it; a file is read
without following a symlink, without blocking on a FIFO and with a size bound.
Used by :class:`htsec.creds.creddir.CredDir` and the import scanner (:mod:`htsec.creds.scan`).
"""

from __future__ import annotations

import functools
import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

from htsec.errors import CredentialFileError, FileSecurityError

__all__ = ["check_root_mode", "check_user_dir", "read_limited"]


def check_user_dir(
    path: Path, st: os.stat_result, root: os.stat_result, owner: int | None = None
) -> None:
    """Is ``path`` (``st``, not following a link) a user directory htsec may publish into?

    HTCondor makes user directories in two ways: condor_credd (``store_cred.cpp``) ``0700``
    as root, and its OAuth web server (``OAuthCredmonWebserver.py``) with ``os.makedirs`` as
    user ``condor``: ``2755`` under umask 022 in a ``2770`` root. What keeps their files
    private is the root without "other" bits and the files' own ``0400``; so a user directory
    is refused only when someone else could change what is in it: group or others may write
    it, or it belongs to a uid that could not write the root anyway (root, this process, the
    root's owner or, for a group-writable root, a member of its group can) and is not
    ``owner``, the one htsec gives its own files.
    """
    check_root_mode(path.parent, root)
    if not stat.S_ISDIR(st.st_mode):
        raise FileSecurityError(
            f"user credential directory {path} is not a directory (a symlink or a file); "
            f"fix: replace it with a directory (mkdir -m 700 {path})"
        )
    if st.st_mode & 0o022:
        raise FileSecurityError(
            f"user credential directory {path} has mode {stat.S_IMODE(st.st_mode):04o}: group "
            f"or others may write into it and replace its tokens; fix: chmod go-w {path}"
        )
    if st.st_uid != owner and not _may_write_root(st.st_uid, root):
        raise FileSecurityError(
            f"user credential directory {path} belongs to uid {st.st_uid}, who cannot write "
            f"the credential directory and should not own a user's tokens; "
            f"fix: chown {os.geteuid()} {path}"
        )


def check_root_mode(root_path: Path, st: os.stat_result) -> None:
    if st.st_mode & 0o007:
        raise FileSecurityError(
            f"credential directory {root_path} has mode {stat.S_IMODE(st.st_mode):04o}: others "
            f"have access, and HTCondor's credmon refuses to run then; "
            f"fix: chown root:condor {root_path} && chmod 2770 {root_path}"
        )


def _may_write_root(uid: int, root: os.stat_result) -> bool:
    if uid in (0, os.geteuid(), root.st_uid):
        return True
    return bool(root.st_mode & stat.S_IWGRP) and _in_group(uid, root.st_gid)


@functools.lru_cache(maxsize=1024)
def _in_group(uid: int, gid: int) -> bool:
    """Is ``uid`` a member of ``gid`` (primary or supplementary)? Cached: the name service
    may be LDAP, and a pass asks once per user directory."""
    try:
        user = pwd.getpwuid(uid)
        return gid in os.getgrouplist(user.pw_name, user.pw_gid)
    except (KeyError, OSError):
        return False


def read_limited(
    path: Path, limit: int, *, dir_fd: int | None = None, owners: Iterable[int] | None = None
) -> bytes:
    """Read a regular file of at most ``limit`` bytes, never through a symlink or a FIFO
    (with ``dir_fd``: ``path``'s name in that open directory; with ``owners``: only a file
    one of those uids owns).

    :raises FileNotFoundError: if it does not exist (callers turn that into None).
    :raises CredentialFileError: for everything else that stops the read.
    """
    try:
        fd = os.open(
            path.name if dir_fd is not None else path,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=dir_fd,
        )
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise CredentialFileError(path, "is a symbolic link; refusing to follow it") from None
        raise CredentialFileError(path, f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialFileError(path, "is not a regular file")
        if owners is not None and st.st_uid not in set(owners):
            raise CredentialFileError(path, f"is owned by uid {st.st_uid}, not by the credmon")
        if st.st_size > limit:
            raise CredentialFileError(path, f"is larger than {limit} bytes")
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise CredentialFileError(path, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise CredentialFileError(path, f"is larger than {limit} bytes")
    return b"".join(chunks)
