"""A consumer that takes nudges and never finishes them: the contract test kills it with SIGKILL.

Run as ``python -m tests.workflows.queue.dead_consumer URL NAME REDELIVER_AFTER``. It prints each run
id it takes (one line, flushed) and holds the handler call open forever, so the nudge stays
unacknowledged until the process dies.
"""

from __future__ import annotations

import asyncio
import sys

from trellis.kit.logging import configure_logging
from trellis.workflows.queue import build_work_queue


async def main(url: str, name: str, redeliver_after: float) -> None:
    queue = build_work_queue(url, name=name, redeliver_after=redeliver_after)

    async def take(run_id: str) -> None:
        print(run_id, flush=True)
        await asyncio.Event().wait()

    await queue.consume(take, concurrency=1)
    print("consuming", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    configure_logging("WARNING")  # to stderr: stdout carries the run ids
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
