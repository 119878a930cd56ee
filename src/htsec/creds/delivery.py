"""Delivery: a job's access token written into its sandbox, as HTCondor's starter does.

``src/condor_utils/cred_dir.cpp`` and ``src/condor_starter.V6.1/jic_shadow.cpp``: the starter
writes ``<sandbox>/.condor_creds/<stem>.use`` as the job user, mode ``0600``, and points
``_CONDOR_CREDS`` at it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from htsec import _fs
from htsec.creds.files import UseFile, dump_use
from htsec.creds.names import TokenName
from htsec.errors import CredentialError, FileSecurityError

__all__ = ["deliver"]

_SANDBOX_MODE = 0o600  # cred_dir.cpp: replace_secure_file as the job user


def deliver(
    sandbox_creds_dir: str | os.PathLike[str],
    name: TokenName | str,
    use_json: UseFile | Mapping[str, Any],
    *,
    uid: int | None = None,
    gid: int | None = None,
    mode: int = _SANDBOX_MODE,
) -> Path:
    """Write ``<sandbox_creds_dir>/<stem>.use`` for a job, as the starter does.

    The starter (``cred_dir.cpp`` ``WriteToCredDir`` via ``jic_shadow.cpp``) writes each
    token the job ad's ``OAuthServicesNeeded`` names into ``<sandbox>/.condor_creds`` as the
    job user, mode 0600, and sets ``_CONDOR_CREDS`` to that directory. ``name`` may be a
    :class:`TokenName` or its wire form ``svc*handle``. A missing directory is created 0700
    (HTCondor uses 0755; nothing but the job needs to look inside).

    :raises CredentialError: if ``use_json`` holds a ``refresh_token`` (jobs get access
        tokens only) or the sandbox does not exist.
    """
    if not isinstance(name, TokenName):
        name = TokenName.parse_wire(name)
    if isinstance(use_json, Mapping) and "refresh_token" in use_json:
        raise CredentialError(
            f"refusing to deliver {name.wire}: the token holds a refresh_token, and jobs get "
            "access tokens only"
        )
    data = dump_use(use_json)
    directory = Path(sandbox_creds_dir)
    if not directory.parent.is_dir():
        raise CredentialError(f"cannot deliver into {directory}: the sandbox does not exist")
    if not _fs.make_dir(directory, 0o700, uid=uid, gid=gid):
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise FileSecurityError(f"{directory} is not a directory (a symlink or a file)")
    path = directory / f"{name.stem}.use"
    _fs.write_atomic(path, data, mode, uid=uid, gid=gid)
    return path
