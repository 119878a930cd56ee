"""htsec.execute.records: jobs in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from htsec.errors import NotFound
from htsec.execute.records import ACTIVE, DONE, JobBook
from htsec.store.db import Store


def _submit(book: JobBook, owner: str = "alice", procs: int = 2) -> int:
    cluster, count = book.submit(
        owner=owner,
        submitter=f"{owner}@pool",
        iwd="/w",
        text="executable = x\nqueue\n",
        expand=lambda c: [(p, {"ClusterId": c, "ProcId": p, "Cmd": "x"}) for p in range(procs)],
    )
    assert count == procs
    return cluster


def test_procs_move_through_their_states(store: Store) -> None:
    book = JobBook(store)
    first, second = _submit(book), _submit(book, "bob", 1)
    assert second > first
    claimed = book.claim_idle(2)
    assert [(r.cluster_id, r.proc_id, r.state, r.runs) for r in claimed] == [
        (first, 0, "running", 1),
        (first, 1, "running", 1),
    ]
    assert book.claim_idle(5)[0].cluster_id == second  # each proc is claimed once
    assert book.claim_idle(5) == []
    assert book.set(first, 0, only_if=("running",), state="completed", exit_code=0)
    assert not book.set(first, 0, only_if=("running",), state="held")
    removed = book.remove("alice", first, None)
    assert [r.job_id for r in removed] == [f"{first}.1"]
    assert book.remove("alice", second, None) == []  # bob's
    assert {r.job_id for r in book.find(owner="alice", states=DONE)} == {
        f"{first}.0",
        f"{first}.1",
    }
    assert [r.job_id for r in book.find(states=ACTIVE)] == [f"{second}.0"]
    assert book.get(first, 0).ad["Cmd"] == "x"
    with pytest.raises(NotFound):
        book.get(first, 9)


def test_a_failed_expansion_leaves_no_cluster(store: Store) -> None:
    book = JobBook(store)

    def bad(_cluster: int) -> list[tuple[int, dict[str, object]]]:
        raise ValueError("no")

    with pytest.raises(ValueError):
        book.submit(owner="a", submitter="a@p", iwd="/w", text="x", expand=bad)
    assert book.find(states=ACTIVE + DONE) == []
