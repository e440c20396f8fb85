"""Tables of DSPy programs: labelled datasets, programs, and their compiled versions.

A dataset is a user's labelled examples for one module (validated against its signature when
uploaded). A program is a named, owned use of one module; each optimization cycle that finishes
adds a version, and ``deployed_version`` says which one ``POST .../run`` uses.

A version's ``document`` is the canonical JSON of everything that defines it (the compiled state
from DSPy's ``dump_state``, the dataset id and split, the optimizer and its parameters, the scores)
and ``tag`` is an HMAC-SHA256 over it: a row edited by anything but Trellis no longer matches its
tag and is refused (``ProgramIntegrityError``). Nothing is pickled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, SafeJSON, UTCDateTime


class DSPyDataset(Base):
    __tablename__ = "dspy_datasets"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_dspy_datasets_owner_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    module: Mapped[str] = mapped_column(String(200))
    examples: Mapped[list[dict[str, Any]]] = mapped_column(SafeJSON)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DSPyProgram(Base):
    __tablename__ = "dspy_programs"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_dspy_programs_owner_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    module: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    deployed_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DSPyProgramVersion(Base):
    __tablename__ = "dspy_program_versions"

    program_id: Mapped[str] = mapped_column(ForeignKey("dspy_programs.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The signed document (canonical JSON text, kept byte for byte) and its HMAC-SHA256 (hex).
    document: Mapped[str] = mapped_column(Text)
    tag: Mapped[str] = mapped_column(String(64))
    # Which dataset it was compiled from (also inside the document); a dataset in use is not deleted.
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    # The workflow run that made it (one version per run: a repeated attempt finds it).
    run_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
