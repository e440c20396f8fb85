"""REST door for ingestion: ``POST /api/context/ingest`` (multipart/form-data).

The form is parsed by hand, after the guard: a caller without a valid key is refused before the
upload is read (a declared ``File()`` parameter would make FastAPI parse the body first). The
route has its own body limit (``[context] ingest_max_request_bytes``, see ``trellis.app``) instead
of the global ``max_body_bytes``; each file is also held to ``ingest_max_file_bytes``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from trellis.auth.deps import RuntimeDep, Writer
from trellis.context.ingest.schemas import IngestResponse
from trellis.context.ingest.service import IngestFile
from trellis.kit.envelope import Envelope, ok
from trellis.kit.errors import FieldError, UnsupportedMediaType, ValidationFailed

INGEST_PATH = "/api/context/ingest"
MAX_FILES_PER_REQUEST = 1000
_FIELDS = {"files", "type"}

router = APIRouter(prefix="/api/context", tags=["context"])


_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more files (UTF-8 text: markdown, plain text or code); "
                            "each file's name is its source.",
                        },
                        "type": {
                            "type": "string",
                            "description": "Type for the documents and their chunks (default: document / chunk).",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/ingest",
    summary="Ingest files: each becomes a document plus chunk contexts linked part_of to it",
    description="Markdown is split along headings, code along top-level definitions, text by paragraphs. "
    "Re-sending a file with the same name and bytes changes nothing; a changed file replaces its "
    "document's content and all its chunks atomically. The whole request is validated before anything "
    "is written: 415 for an unsupported file type, 400 for a file that is not UTF-8 text, 413 for a "
    "file over the per-file limit, each naming the file.",
    openapi_extra=_REQUEST_BODY,
    responses={
        413: {"description": "The request, or one file, is over its limit (payload_too_large_error)"},
        415: {"description": "Not multipart/form-data, or a file of a type that cannot be ingested"},
    },
)
async def ingest(request: Request, principal: Writer, runtime: RuntimeDep) -> Envelope[IngestResponse]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send multipart/form-data with one or more 'files' parts",
            details={"content_type": content_type},
        )
    files: list[IngestFile] = []
    async with request.form(max_files=MAX_FILES_PER_REQUEST, max_fields=len(_FIELDS) + 10) as form:
        unknown = sorted(set(form.keys()) - _FIELDS)
        if unknown:
            message = "unknown form field; send 'files' and optionally 'type'"
            raise ValidationFailed.of_fields(
                [FieldError(field=name, message=message, location="body", type="extra") for name in unknown],
                summary=f"Invalid request parameters: {', '.join(unknown)} ({message})",
            )
        types = form.getlist("type")
        if len(types) > 1 or any(not isinstance(t, str) for t in types):
            raise ValidationFailed.of(
                "type", "at most one text value", summary="Invalid request parameters: type (at most one text value)"
            )
        type_override = types[0] if types and isinstance(types[0], str) and types[0] else None
        for part in form.getlist("files"):
            if not isinstance(part, UploadFile):
                message = "each part must be a file, with a filename"
                raise ValidationFailed.of("files", message, summary=f"Invalid request parameters: files ({message})")
            files.append((part.filename or "", await part.read()))
    if not files:
        message = "at least one file is required"
        raise ValidationFailed.of(
            "files", message, type="missing", summary=f"Invalid request parameters: files ({message})"
        )
    results = await runtime.ingest.ingest(principal, files, type_override=type_override)
    return ok(IngestResponse(files=results))
