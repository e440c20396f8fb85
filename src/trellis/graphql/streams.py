"""Where subscriptions get their events. Each source is one small function, so it can move to the
event bus (``trellis.events``) without touching the schema.

``follow_run``: a run's event log, replayed from the database after ``after`` and then followed
until the run ends, through the same ``WorkflowService`` calls the REST door's Server-Sent Events
stream makes (``events`` then ``run``): the database is the source of truth, so nothing is missed
and a client resumes with the last ``seq`` it saw. The ownership check (a missing run, or another
user's: ``not_found_error``) happens before the first event, so the subscription fails as a whole.

``generation``: a streamed model call through ``Gateway.stream``, the call the REST door streams
with; closing the subscription closes the provider stream (llama.cpp stops within a token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from trellis.auth.schemas import Principal
from trellis.gateway import tasks
from trellis.gateway.schemas import GenerationOut
from trellis.gateway.service import BadGateway, CallContext, StreamOutcome
from trellis.kit.errors import TrellisError
from trellis.runtime import Runtime
from trellis.workflows.repository import ENDED
from trellis.workflows.schemas import EventOut

POLL_SECONDS = 0.25  # as the SSE stream polls (workflows/api.py)
PAGE = 500


async def follow_run(
    runtime: Runtime, principal: Principal, run_id: str, *, after: int = 0, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[EventOut]:
    """The run's events after ``after``, live until the run has ended and every event is out."""
    service = runtime.workflows
    first = await service.events(principal, run_id, after=after, limit=PAGE)  # raises for another's run

    async def events() -> AsyncIterator[EventOut]:
        seen, batch = after, first
        while True:
            for row in batch:
                seen = row.seq
                yield EventOut.of(row)
            if len(batch) == PAGE:
                batch = await service.events(principal, run_id, after=seen, limit=PAGE)
                continue
            run = await service.run(principal, run_id)
            if run.status in ENDED:
                batch = await service.events(principal, run_id, after=seen, limit=PAGE)
                if not batch:
                    return
                continue
            await asyncio.sleep(poll_seconds)
            batch = await service.events(principal, run_id, after=seen, limit=PAGE)

    return events()


Delta = str
Done = GenerationOut


async def generation(runtime: Runtime, ctx: CallContext, call: tasks.PreparedCall) -> AsyncIterator[Delta | Done]:
    """Token deltas (str), then the whole answer (``GenerationOut``, as a non-streamed call has it)."""
    gateway = runtime.gateway
    started = time.perf_counter()
    outcome = StreamOutcome()
    stream = gateway.stream(ctx, call.model_name, call.model, call.request, outcome)
    try:
        async for chunk in stream:
            if chunk.delta:
                yield chunk.delta
    except TrellisError:
        raise
    except Exception as exc:  # the client learns the stream failed (as over SSE), not why internally
        message = getattr(exc, "message", None) or "The model stream failed"
        raise BadGateway(str(message)) from exc
    finally:
        await stream.aclose()
    yield tasks.as_streamed_generation(call, outcome, time.perf_counter() - started)
