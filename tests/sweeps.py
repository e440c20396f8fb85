"""How many seeds the real-model sweeps try: a few in ``make test``, the whole sweep in ``make test-sweeps``.

A sweep over seeds is how a guarantee about a sampled model is shown (every answer that says
``stop`` parses, every required tool call validates). The full sweeps cost minutes of local-model
time, so the suite runs a handful of seeds and ``TRELLIS_TEST_SWEEP=full`` (``make test-sweeps``)
runs them all.
"""

from __future__ import annotations

import os

FULL = os.environ.get("TRELLIS_TEST_SWEEP") == "full"


def seeds(quick: int, full: int) -> range:
    """Seeds 0..n-1: ``quick`` of them normally, ``full`` when the full sweep is asked for."""
    return range(full if FULL else quick)
