"""The process's long-lived heap, moved out of the garbage collector's way once it is built.

A Trellis process imports about 1,800 modules (FastAPI, Pydantic, SQLAlchemy, numpy, the model
clients...): some 230,000 objects the cyclic garbage collector tracks and never frees. Its full
(generation 2) collection walks all of them, 200 to 500 ms of CPU on the shared 2-core machine, and
runs inside whichever request happened to allocate past the threshold: the tail of every endpoint,
seen first as the grouped usage query's p95 (``bench/metrics_history.py``: about 190 ms while its
p50 was 16 ms; the CPU time of the slow calls was that one collection).

``freeze_startup_heap`` collects once and then ``gc.freeze()``s what is left (CPython moves it to a
permanent generation that later collections skip), so a full collection walks only what was
allocated since. Once per process: the first app to start freezes the heap (imports, settings, its
runtime); later ones (tests build many apps in one process) do not, so nothing they leave behind is
kept from the collector. The cost: a cycle among the frozen objects that becomes garbage later is not
freed; they are the process's modules and its first runtime, which live as long as it does.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> int:
    """Collect, then freeze every object the collector tracks (the first call in a process only).
    Returns the objects frozen by this call (0 after the first)."""
    global _frozen
    if _frozen:
        return 0
    _frozen = True
    gc.collect()
    before = gc.get_freeze_count()
    gc.freeze()
    return gc.get_freeze_count() - before
