"""Credentials: HTCondor's OAuth credential directory (:mod:`htsec.creds.layout`).

The directory layout is the contract with HTCondor's credd, schedd, shadow, starter and
credmons (shared/FORMATS.md section 3); htsec writes it from its store and imports existing ones.
"""

from __future__ import annotations

from .layout import (
    CREDMON_COMPLETE,
    MAX_CRED_FILE,
    MAX_NAME,
    MAX_PENDING_FILE,
    PENDING_MAX_AGE,
    SWEEP_DELAY,
    CredDir,
    FoundCredential,
    ImportProblem,
    MetaFile,
    PendingLogin,
    TokenName,
    TopFile,
    UseFile,
    deliver,
    dump_meta,
    dump_pending,
    dump_top,
    dump_use,
    import_dir,
    local_user,
    parse_meta,
    parse_pending,
    parse_top,
    parse_use,
    pending_url,
    split_scopes,
)

__all__ = [
    "CREDMON_COMPLETE",
    "MAX_CRED_FILE",
    "MAX_NAME",
    "MAX_PENDING_FILE",
    "PENDING_MAX_AGE",
    "SWEEP_DELAY",
    "CredDir",
    "FoundCredential",
    "ImportProblem",
    "MetaFile",
    "PendingLogin",
    "TokenName",
    "TopFile",
    "UseFile",
    "deliver",
    "dump_meta",
    "dump_pending",
    "dump_top",
    "dump_use",
    "import_dir",
    "local_user",
    "parse_meta",
    "parse_pending",
    "parse_top",
    "parse_use",
    "pending_url",
    "split_scopes",
]
