"""The app factories: what ``trellis serve`` runs (``served_app``) and what tests build (``create_app``)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest

from trellis.app import create_app, served_app
from trellis.settings import Settings


async def test_served_app_freezes_what_start_up_left(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trellis serve`'s app ends its start-up with gc.freeze(): the objects of start-up are left out
    of every later collection, so a full collection walks only what requests left behind."""
    settings = make_settings()
    monkeypatch.setattr("trellis.app.load_settings", lambda: settings)
    gc.unfreeze()
    try:
        app = served_app()
        assert gc.get_freeze_count() == 0  # not when built: when its start-up is over
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
            assert frozen > 10_000, frozen  # the modules, the app and the runtime at least
            leftover: list[Any] = [object()]
            assert gc.is_tracked(leftover)
            gc.collect()
            assert gc.get_freeze_count() == frozen  # what a request makes later is not frozen
    finally:
        gc.unfreeze()


async def test_create_app_leaves_the_collector_alone(make_settings: Callable[..., Settings]) -> None:
    """Tests build many apps in one process: frozen objects are never freed, so only `trellis serve` freezes."""
    gc.unfreeze()
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
