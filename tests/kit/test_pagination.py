"""The generic page every list endpoint answers with: its JSON, its schema name, its builder."""

from __future__ import annotations

from pydantic import BaseModel, TypeAdapter

from trellis.kit.pagination import Page


class ThingOut(BaseModel):
    name: str

    @classmethod
    def of(cls, row: tuple[str, int]) -> ThingOut:
        return cls(name=row[0])


class ThingPage(Page[ThingOut]):
    pass


def test_a_page_is_items_and_the_next_cursor_on_the_wire() -> None:
    page = ThingPage.of([("a", 1), ("b", 2)], "c2", ThingOut.of)
    assert isinstance(page, ThingPage)
    assert page.model_dump(mode="json") == {"items": [{"name": "a"}, {"name": "b"}], "next_cursor": "c2"}
    assert ThingPage.of([], None, ThingOut.of).model_dump(mode="json") == {"items": [], "next_cursor": None}


def test_a_named_page_keeps_its_name_in_the_schema() -> None:
    schema = TypeAdapter(ThingPage).json_schema()
    assert schema["title"] == "ThingPage"
    assert schema["required"] == ["items", "next_cursor"]
    assert schema["properties"]["items"]["items"] == {"$ref": "#/$defs/ThingOut"}
    assert "Page_" not in str(schema)
