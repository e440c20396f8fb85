"""Full-text search sees where a context sits: its source (file name) and heading path.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

A chunk of a README rarely repeats its package's name, and a file name (``nnapi_supported_ops.md``)
was in no searchable text at all: a question naming either could not find it by its words. Each
context's *title* — ``source``, the markdown ``heading_path`` and the code ``definition`` from its
metadata — is now indexed beside its type and content:

* SQLite: ``contexts_fts`` gets a third column, ``title``. It stays an external-content table, now
  over the view ``context_search_text`` (the contexts with their title computed), kept in sync by the
  same three triggers, and is rebuilt from it. (The heading path is indexed as its JSON text: the
  tokenizer drops the brackets and quotes.)
* PostgreSQL: the generated ``search_vector`` is redefined to include the title (the source with
  ``/ . _ -`` read as spaces, so the parser sees its words rather than one file-path token); the
  table is rewritten once and the GIN index rebuilt.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _title(row: str) -> str:
    return (
        f"coalesce({row}.source, '') || ' ' || coalesce(json_extract({row}.metadata, '$.heading_path'), '') "
        f"|| ' ' || coalesce(json_extract({row}.metadata, '$.definition'), '')"
    )


_SQLITE_TRIGGERS = ("contexts_fts_insert", "contexts_fts_delete", "contexts_fts_update")

_PG_TITLE = (
    "translate(coalesce(source, ''), '/._-', '    ') || ' ' || coalesce(metadata->>'heading_path', '') "
    "|| ' ' || coalesce(metadata->>'definition', '')"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS contexts_fts")
        op.execute(
            "CREATE VIEW context_search_text AS SELECT rowid AS rowid, type, content, "
            "TITLE AS title FROM contexts".replace("TITLE", _title("contexts"))
        )
        op.execute(
            "CREATE VIRTUAL TABLE contexts_fts USING fts5(type, content, title, "
            "content='context_search_text', content_rowid='rowid', tokenize='porter unicode61')"
        )
        insert = (
            "INSERT INTO contexts_fts(rowid, type, content, title) "
            "VALUES (new.rowid, new.type, new.content, TITLE);".replace("TITLE", _title("new"))
        )
        delete = (
            "INSERT INTO contexts_fts(contexts_fts, rowid, type, content, title) "
            "VALUES ('delete', old.rowid, old.type, old.content, TITLE);".replace("TITLE", _title("old"))
        )
        op.execute(f"CREATE TRIGGER contexts_fts_insert AFTER INSERT ON contexts BEGIN {insert} END")
        op.execute(f"CREATE TRIGGER contexts_fts_delete AFTER DELETE ON contexts BEGIN {delete} END")
        op.execute(f"CREATE TRIGGER contexts_fts_update AFTER UPDATE ON contexts BEGIN {delete} {insert} END")
        op.execute("INSERT INTO contexts_fts(contexts_fts) VALUES ('rebuild')")
    elif bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE contexts DROP COLUMN search_vector")  # its GIN index goes with it
        op.execute(
            "ALTER TABLE contexts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
            f"(to_tsvector('english', type || ' ' || content || ' ' || {_PG_TITLE})) STORED"
        )
        op.execute("CREATE INDEX ix_contexts_search_vector ON contexts USING gin (search_vector)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS contexts_fts")
        op.execute("DROP VIEW IF EXISTS context_search_text")
        op.execute(
            "CREATE VIRTUAL TABLE contexts_fts USING fts5("
            "type, content, content='contexts', content_rowid='rowid', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER contexts_fts_insert AFTER INSERT ON contexts BEGIN "
            "INSERT INTO contexts_fts(rowid, type, content) VALUES (new.rowid, new.type, new.content); END"
        )
        op.execute(
            "CREATE TRIGGER contexts_fts_delete AFTER DELETE ON contexts BEGIN "
            "INSERT INTO contexts_fts(contexts_fts, rowid, type, content) "
            "VALUES ('delete', old.rowid, old.type, old.content); END"
        )
        op.execute(
            "CREATE TRIGGER contexts_fts_update AFTER UPDATE ON contexts BEGIN "
            "INSERT INTO contexts_fts(contexts_fts, rowid, type, content) "
            "VALUES ('delete', old.rowid, old.type, old.content); "
            "INSERT INTO contexts_fts(rowid, type, content) VALUES (new.rowid, new.type, new.content); END"
        )
        op.execute("INSERT INTO contexts_fts(contexts_fts) VALUES ('rebuild')")
    elif bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE contexts DROP COLUMN search_vector")
        op.execute(
            "ALTER TABLE contexts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', type || ' ' || content)) STORED"
        )
        op.execute("CREATE INDEX ix_contexts_search_vector ON contexts USING gin (search_vector)")
