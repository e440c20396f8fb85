"""The base of every request body: unknown fields refused, and every value taken as its JSON type.

Pydantic's default (lax) mode turns ``"3"`` into 3 and ``"true"`` into True; a client that sends
the wrong type then learns nothing until another server refuses it. Strict mode refuses them with
a 400 naming the field. Enum fields are the exception (Pydantic's strict mode wants enum instances
where JSON can only carry their values): they are declared ``Field(strict=False)``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
