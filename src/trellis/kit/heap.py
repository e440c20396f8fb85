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

``tune_collector`` raises the youngest generation's threshold (the setting ``gc_young_threshold``).
CPython's 700 allocations suits a short script; a server that holds a thousand WebSocket
connections allocates that in well under a millisecond, so it ran hundreds of young collections a
minute, and each tenth promoted whatever was alive at that instant to the older generations, which
then filled up and triggered full passes over every connection's objects (about 230,000 objects,
100-140 ms each, eleven in a 100-second ``bench/ws_fanout.py`` run: the fan-out's p99). With 20,000,
short-lived objects die young and the same run had one full pass; a young collection walks at most
the threshold's worth of objects (a few milliseconds at 20,000).
"""

from __future__ import annotations

import gc

_frozen = False
_tuned = False


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


def tune_collector(young_threshold: int) -> bool:
    """Set the youngest generation's collection threshold (the first call in a process only; the
    older generations keep CPython's). True when this call set it."""
    global _tuned
    if _tuned:
        return False
    _tuned = True
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)
    return True


def settle_heap(young_threshold: int) -> None:
    """For a long-running process once it has started (``trellis serve``, ``trellis worker``): the
    collector's young threshold, then the startup heap frozen."""
    tune_collector(young_threshold)
    freeze_startup_heap()
