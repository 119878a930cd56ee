"""``htsec q``, ``htsec rm``, ``htsec history``: the local execution point's jobs, as
condor_q, condor_rm and condor_history show them (through the server)."""

from __future__ import annotations

import time
from typing import Any

import click

from htsec.cli.context import CONTEXT, App, pass_app, server_option, token_file_option
from htsec.cli.output import cell, emit_json, err, out, table, when
from htsec.execute.records import parse_job_id

__all__ = ["history", "q", "rm"]

_ST = {"idle": "I", "running": "R", "completed": "C", "held": "H", "removed": "X"}


def _runtime(job: dict[str, Any]) -> str:
    start = job.get("started_at")
    if not start:
        return "0+00:00:00"
    end = job.get("ended_at") or (time.time() if job["state"] == "running" else start)
    secs = max(0, int(end - start))
    days, rest = divmod(secs, 86400)
    return f"{days}+{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def _cmd(job: dict[str, Any]) -> str:
    return " ".join([str(job.get("cmd") or ""), *[str(a) for a in job.get("args") or []]])


def _params(user: str | None, all_users: bool) -> dict[str, str]:
    return {"all_users": "true"} if all_users else ({"user": user} if user else {})


_user_opt = click.option("--user", help="Another user's jobs (needs ADMINISTRATOR).")
_all_opt = click.option("--all-users", is_flag=True, help="Everyone's jobs (needs ADMINISTRATOR).")
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command("q", context_settings=CONTEXT)
@_user_opt
@_all_opt
@_json_opt
@server_option
@token_file_option
@pass_app
def q(
    app: App,
    user: str | None,
    all_users: bool,
    as_json: bool,
    server: str | None,
    token_file: str | None,
) -> None:
    """Your jobs on the local execution point that are idle, running or held (like condor_q);
    held jobs show why."""
    body = app.client(server, token_file).call("GET", "/v1/jobs", params=_params(user, all_users))
    jobs: list[dict[str, Any]] = body["jobs"]
    if as_json:
        emit_json(body)
        return
    t = table("ID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "CMD")
    for j in jobs:
        t.add_row(
            cell(j["id"]),
            cell(j["owner"]),
            when(int(j["submitted_at"])),
            _runtime(j),
            _ST.get(j["state"], "?"),
            cell(_cmd(j)),
        )
    if jobs:
        out.print(t)
    for j in jobs:
        if j["state"] == "held":
            out.print(f"{cell(j['id'])} held: {cell(j['hold_reason'])}", markup=False)
        elif j.get("note"):
            out.print(f"{cell(j['id'])}: {cell(j['note'])}", markup=False)
    counts = {s: sum(1 for j in jobs if j["state"] == s) for s in ("idle", "running", "held")}
    out.print(
        f"Total for query: {len(jobs)} jobs; 0 completed, 0 removed, {counts['idle']} idle, "
        f"{counts['running']} running, {counts['held']} held, 0 suspended"
    )


@click.command("rm", context_settings=CONTEXT)
@click.argument("job_ids", nargs=-1, required=True, metavar="CLUSTER[.PROC]...")
@_json_opt
@server_option
@token_file_option
@pass_app
def rm(
    app: App, job_ids: tuple[str, ...], as_json: bool, server: str | None, token_file: str | None
) -> None:
    """Remove jobs (a whole cluster or one proc); a running job is killed with everything it
    started (like condor_rm)."""
    for job in job_ids:
        parse_job_id(job)  # before any request: the id is a path segment of the URL
    client = app.client(server, token_file)
    removed: list[str] = []
    for job in job_ids:
        removed += client.call("DELETE", f"/v1/jobs/{job}")["removed"]
    if as_json:
        emit_json({"removed": removed})
        return
    for job in job_ids:
        n = sum(1 for r in removed if r == job or r.startswith(f"{job}."))
        if "." in job:
            click.echo(f"Job {job} marked for removal")
        else:
            click.echo(f"All jobs in cluster {job} have been marked for removal ({n})")


@click.command("history", context_settings=CONTEXT)
@_user_opt
@_all_opt
@click.option("--limit", default=100, show_default=True, help="Newest jobs shown.")
@_json_opt
@server_option
@token_file_option
@pass_app
def history(
    app: App,
    user: str | None,
    all_users: bool,
    limit: int,
    as_json: bool,
    server: str | None,
    token_file: str | None,
) -> None:
    """Your completed and removed jobs, newest first (like condor_history)."""
    params = {**_params(user, all_users), "history": "true", "limit": str(max(1, limit))}
    body = app.client(server, token_file).call("GET", "/v1/jobs", params=params)
    if as_json:
        emit_json(body)
        return
    if not body["jobs"]:
        err.print("no finished jobs")
        return
    t = table("ID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "COMPLETED", "EXIT", "CMD")
    for j in body["jobs"]:
        code = j.get("exit_code")
        exit_text = (
            f"signal {j['exit_signal']}"
            if j.get("exit_signal")
            else ("" if code is None else str(code))
        )
        t.add_row(
            cell(j["id"]),
            cell(j["owner"]),
            when(int(j["submitted_at"])),
            _runtime(j),
            _ST.get(j["state"], "?"),
            when(int(j["ended_at"])) if j.get("ended_at") else "",
            exit_text if j["state"] == "completed" else "",
            cell(_cmd(j)),
        )
    out.print(t)
