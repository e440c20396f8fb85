"""Relational storage: the async engine, the ORM base, Alembic migrations."""
