"""``kit/heap.py``: a served app sets the collector's young threshold and freezes its startup heap,
once per process, so full garbage collections stop walking the imported modules; what is allocated
later is still collected. In a child process (this one may have started apps already)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, gc, sys, weakref

    from trellis.app import create_app
    from trellis.kit import heap
    from trellis.settings import Settings
    from trellis.storage import migrate

    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == 700  # CPython's
    settings = Settings(data_dir=sys.argv[1], jwt_secret=sys.argv[2], log_level="WARNING", gc_young_threshold=12_345)
    app = create_app(settings)

    async def served() -> int:
        await migrate.upgrade(app.state.runtime.database)
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    frozen = asyncio.run(served())
    assert gc.get_threshold() == (12_345, 10, 10), gc.get_threshold()  # the setting; older generations: CPython's
    assert not heap.tune_collector(999)  # once per process
    assert gc.get_threshold()[0] == 12_345
    assert frozen > 50_000, frozen  # the imported modules, the settings, the runtime
    before = gc.get_freeze_count()  # fewer than frozen: what the app's shutdown freed
    assert heap.freeze_startup_heap() == 0  # once per process: a second app freezes nothing more
    assert gc.get_freeze_count() == before

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after the freeze
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
    print("ok", frozen)
    """
)


def test_collector_tuned_and_startup_heap_frozen_once_new_garbage_still_collected(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "data"), JWT_SECRET],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok ")
