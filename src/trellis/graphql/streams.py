"""Where subscriptions get their events. Each source is one small function, so it can move to the
event bus (``trellis.events``) without touching the schema.

``follow_run``: a run's event log, replayed from the database after ``after`` and then followed
live until the run ends, through ``LiveEvents.follow_run`` as the REST door's Server-Sent Events
stream does (the database first, then the event bus; holes and gaps read back from the database),
so nothing is missed and a client resumes with the last ``seq`` it saw. The ownership check (a missing run, or another
user's: ``not_found_error``) happens before the first event, so the subscription fails as a whole.

``generation``: a streamed model call through ``Gateway.stream``, the call the REST door streams
with; closing the subscription closes the provider stream (llama.cpp stops within a token).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from trellis.auth.schemas import Principal
from trellis.events.runs import event_out
from trellis.gateway import tasks
from trellis.gateway.schemas import GenerationOut
from trellis.gateway.service import BadGateway, CallContext, StreamOutcome
from trellis.kit.errors import TrellisError
from trellis.runtime import Runtime
from trellis.workflows.schemas import EventOut


async def follow_run(runtime: Runtime, principal: Principal, run_id: str, *, after: int = 0) -> AsyncIterator[EventOut]:
    """The run's events after ``after``, live until the run has ended and every event is out."""
    await runtime.workflows.run(principal, run_id)  # raises for a missing run or another user's

    async def events() -> AsyncIterator[EventOut]:
        async for delivery in runtime.live.follow_run(principal, run_id, after):
            yield event_out(delivery)

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
