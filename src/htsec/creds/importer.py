"""``htsec cred import``: take over the credentials of an existing HTCondor credential directory.

Each ``<user>/<service>[_<handle>]`` with a ``.top`` (OAuth refresh token, or a local-issuer
placeholder) becomes a store row; its ``.meta`` supplies client id, secret and token URL, and
its ``.use`` the current access token (only that when ``.meta`` says ``"use_refresh_token":
false``: HTCondor never refreshes such a token). Secrets land sealed. One unreadable
credential never stops the others; each problem is reported.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from htsec.creds.scan import FoundCredential, ImportProblem, import_dir
from htsec.creds.store import CredStore
from htsec.errors import HtsecError

__all__ = ["import_directory"]


def _expires_at(found: FoundCredential, path: Path) -> int | None:
    """A .use without ``expires_at`` expires ``expires_in`` after the file was written."""
    if found.use is None:
        return None
    fields = found.use.fields
    at = fields.get("expires_at")
    if _sane(at, 0, _MAX_TIME):
        return int(at)  # type: ignore[arg-type]
    inn = fields.get("expires_in")
    if _sane(inn, 0, _MAX_TIME):
        try:
            return int(os.stat(path).st_mtime + inn)  # type: ignore[operator]
        except OSError:
            return None
    return None


_MAX_TIME = 2**40  # seconds; a hostile 1e400 (inf) or 1e30 would not fit the store's column


def _sane(value: object, low: float, high: float) -> bool:
    """A finite number in [low, high] (not a bool)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


def import_directory(creds: CredStore, root: Path, *, actor: str) -> dict[str, Any]:
    """Import every credential under ``root``.

    Returns ``{"imported": [{user, name}...], "problems": [{path, problem}...]}``.
    """
    imported: list[dict[str, str]] = []
    problems: list[dict[str, str]] = []
    for item in import_dir(root):
        if isinstance(item, ImportProblem):
            problems.append({"path": str(item.path), "problem": item.message})
            continue
        for p in item.problems:
            problems.append({"path": str(p.path), "problem": p.message})
        if item.top is None and item.use is None:
            if not item.problems:
                problems.append(
                    {
                        "path": str(Path(root) / item.user / item.name.stem),
                        "problem": "no .top or .use file",
                    }
                )
            continue
        use_path = Path(root) / item.user / f"{item.name.stem}.use"
        access = None
        token_type = "bearer"  # noqa: S105 - RFC 6750 token type, not a secret
        if item.use is not None:
            access = item.use.access_token
            token_type = str(item.use.fields.get("token_type", "bearer"))
        refresh = item.top.refresh_token if item.top is not None else None
        meta = item.meta
        if meta is not None and not meta.use_refresh_token:
            # HTCondor's credmon never refreshes such a token (OAuthCredmon.should_renew):
            # only its access token is taken over.
            refresh = None
        try:
            creds.put(
                item.user,
                item.name.service,
                item.name.handle or None,
                refresh_token=refresh or None,
                access_token=access,
                expires_at=_expires_at(item, use_path),
                token_type=token_type,
                scopes=list(item.top.scopes) if item.top else None,
                audience=item.top.audience if item.top else None,
                client_id=meta.client_id if meta else None,
                client_secret=meta.client_secret if meta else None,
                token_url=meta.token_url if meta else None,
                actor=actor,
                peer="import",
            )
        except HtsecError as exc:
            problems.append({"path": str(use_path.with_suffix(".top")), "problem": str(exc)})
            continue
        imported.append({"user": item.user, "name": item.name.stem})
    creds.audit(
        actor=actor,
        action="import",
        outcome="ok" if not problems else "partial",
        detail=f"{len(imported)} imported, {len(problems)} problem(s) from {root}",
    )
    return {"imported": imported, "problems": problems}
