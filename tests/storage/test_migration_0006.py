"""Migration 0006 picks the HNSW graph by pgvector version (the real upgrade and downgrade run in
tests/context/test_vectors_contract.py, on pgvector 0.8; older versions cannot be installed there)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from trellis.storage.migrate import MIGRATIONS_DIR


def _migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "migration_0006", MIGRATIONS_DIR / "versions" / "0006_hnsw_halfvec.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_half_precision_graph_from_pgvector_0_7() -> None:
    migration = _migration()
    assert migration.graph_expression(384, (0, 7, 0)) == "((embedding::halfvec(384)) halfvec_cosine_ops)"
    assert migration.graph_expression(768, (0, 8, 5)) == "((embedding::halfvec(768)) halfvec_cosine_ops)"


def test_float32_graph_before_pgvector_0_7() -> None:
    """halfvec does not exist before 0.7: the graph stays float32 (the rows still move inline)."""
    migration = _migration()
    assert migration.graph_expression(384, (0, 6, 2)) == "(embedding vector_cosine_ops)"
    assert migration.graph_expression(384, (0, 5, 1)) == "(embedding vector_cosine_ops)"
