"""The refresh engine's group commit holds no answer back: an answer that arrives while no
write is running is written at once (no timer to wait out), and the answers that arrive during
a write go together into the next one. Each caller hears its own result."""

from __future__ import annotations

import asyncio
import threading
import time

from htsec.credmon.pacing import Batcher


def test_an_answer_is_written_at_once_and_later_ones_together() -> None:
    batches: list[list[str]] = []
    started: list[float] = []
    writing = threading.Event()

    def write(items: list[str]) -> list[bool]:
        started.append(time.monotonic())
        batches.append(list(items))
        writing.set()
        time.sleep(0.2)  # a slow fsync
        return [item != "refused" for item in items]

    async def main() -> list[bool]:
        batcher: Batcher[str] = Batcher(write)
        t0 = time.monotonic()
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.to_thread(writing.wait, 5)
        assert started[0] - t0 < 0.1  # written at once, not after a timer
        rest = [asyncio.ensure_future(batcher.submit(x)) for x in ("b", "refused", "d")]
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(main()) == [True, True, False, True]
    assert batches == [["a"], ["b", "refused", "d"]]


def test_a_failed_write_reaches_each_caller_of_its_batch() -> None:
    def write(items: list[str]) -> list[bool]:
        raise OSError("disk full")

    async def main() -> list[object]:
        batcher: Batcher[str] = Batcher(write)
        return list(
            await asyncio.gather(*(batcher.submit(x) for x in "abc"), return_exceptions=True)
        )

    assert [type(r) for r in asyncio.run(main())] == [OSError] * 3
