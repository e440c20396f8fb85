"""What ingestion answers: one result per file, and the response of ``POST /api/context/ingest``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class IngestStatus(StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    REPLACED = "replaced"


class IngestResult(BaseModel):
    source: str = Field(description="The file's name or path, as given; the document's source.")
    document_id: str
    chunks: int = Field(description="How many chunk contexts the document has.")
    status: IngestStatus


class IngestResponse(BaseModel):
    files: list[IngestResult]
