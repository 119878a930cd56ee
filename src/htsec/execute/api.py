"""The jobs API of the local execution point (``htsec serve``).

``POST /v1/jobs`` submits a description (its text and directory) for the caller's own user
(``alice`` for ``alice@$(UID_DOMAIN)``, WRITE); ``GET /v1/jobs`` lists the caller's active
procs (``?history=true``: completed and removed ones), ``DELETE /v1/jobs/<cluster>[.<proc>]``
removes them (a running proc is killed with its descendants). ADMINISTRATOR reaches everyone's.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from htsec.authz import Perm, credential_owner, grants
from htsec.errors import Busy, Forbidden, NotFound, UsageError
from htsec.execute import userlog
from htsec.execute.asuser import OwnerFileError, owner_files
from htsec.execute.description import MAX_TEXT, expand
from htsec.execute.point import ExecutePoint, owner_identity
from htsec.execute.records import ACTIVE, DONE, parse_job_id
from htsec.web.auth import Caller, require
from htsec.web.verifier import VerifiedCaller

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["jobs"])


class JobIn(BaseModel):
    """A submit description and the directory its relative names are in."""

    submit: str = Field(max_length=MAX_TEXT)
    iwd: str = Field(min_length=1, max_length=4096)


def _point(request: Request) -> ExecutePoint:
    point: ExecutePoint | None = getattr(request.app.state, "execute", None)
    if point is None:
        raise Busy("this server runs no execution point (htsec serve runs one)")
    return point


def _me(request: Request, caller: VerifiedCaller, perm: Perm) -> str:
    require(caller, perm)
    me = credential_owner(caller.subject, request.app.state.settings.uid_domain)
    if me is None:
        raise Forbidden(
            f"{caller.subject} is no user of UID_DOMAIN "
            f"{request.app.state.settings.uid_domain}: jobs belong to user@$(UID_DOMAIN)"
        )
    return me


@router.post("/jobs", status_code=201)
def submit(body: JobIn, request: Request, caller: Caller) -> dict[str, Any]:
    """Queue every proc of the description for the caller's user."""
    point = _point(request)
    owner = _me(request, caller, Perm.WRITE)
    if not body.iwd.startswith("/") or "\x00" in body.iwd:
        raise UsageError("iwd must be an absolute directory path")
    who = owner_identity(owner)
    domain = request.app.state.settings.uid_domain
    made: list[tuple[int, dict[str, Any]]] = []

    def procs(cluster: int) -> list[tuple[int, dict[str, Any]]]:
        made[:] = [
            (p.proc_id, p.ad)
            for p in expand(
                body.submit, cluster=cluster, owner=owner, user=f"{owner}@{domain}", iwd=body.iwd
            )
        ]
        return made

    cluster, count = point.book.submit(
        owner=owner, submitter=caller.subject, iwd=body.iwd, text=body.submit, expand=procs
    )
    logs: dict[str, str] = {}
    for proc_id, ad in made:
        if path := ad.get("UserLog"):
            where = path if path.startswith("/") else f"{ad['Iwd']}/{path}"
            logs[where] = logs.get(where, "") + userlog.submitted(cluster, proc_id)
    warnings = []
    if logs:
        with owner_files(who) as files:
            for where, text in logs.items():
                try:
                    fd = files.append(where)
                    try:
                        os.write(fd, text.encode())
                    finally:
                        os.close(fd)
                except OwnerFileError as exc:
                    warnings.append(f"user log: {exc}")
    point.runner.wake()
    return {"cluster": cluster, "procs": count, "owner": owner, "warnings": warnings}


Who = Annotated[str | None, Query(max_length=200)]


def _listing(
    request: Request, caller: VerifiedCaller, user: str | None, all_users: bool
) -> str | None:
    """The owner whose jobs are shown (None: everyone's)."""
    me = _me(request, caller, Perm.READ) if not grants(caller, Perm.ADMINISTRATOR) else None
    if all_users or (user is not None and user != me):
        require(caller, Perm.ADMINISTRATOR, to="see other users' jobs")
        return user
    return me if me is not None else _me(request, caller, Perm.READ)


@router.get("/jobs")
def list_jobs(
    request: Request,
    caller: Caller,
    user: Who = None,
    all_users: bool = False,
    history: bool = False,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> dict[str, Any]:
    """Active procs (``history``: finished ones, newest first)."""
    point = _point(request)
    owner = _listing(request, caller, user, all_users)
    rows = point.book.find(
        owner=owner, states=DONE if history else ACTIVE, limit=limit if history else None
    )
    return {"jobs": [r.as_dict() for r in rows[:limit]]}


@router.delete("/jobs/{job}")
def remove_jobs(
    request: Request,
    caller: Caller,
    job: Annotated[str, Path(max_length=20)],
) -> dict[str, Any]:
    """Remove a cluster's active procs, or one proc; running ones are killed."""
    cluster, proc = parse_job_id(job)
    point = _point(request)
    admin = grants(caller, Perm.ADMINISTRATOR)
    owner = None if admin else _me(request, caller, Perm.WRITE)
    rows = point.book.remove(owner, cluster, proc)
    if not rows:
        raise NotFound(f"no active job {job}" + ("" if owner is None else f" of {owner}"))
    for r in rows:
        if r.state == "running":
            point.runner.remove(r.cluster_id, r.proc_id, caller.subject)
        else:
            point.runner.removed_idle(r, caller.subject)
    return {"removed": [r.job_id for r in rows]}
