"""``trellis context add|get|rm|link``, run in-process against a real embedded data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.test_commands import cli, flat, ok_json


def add(*args: str) -> dict[str, Any]:
    created: dict[str, Any] = ok_json("context", "add", *args)
    return created


def test_add_get_link_rm(cli_data_dir: Path, tmp_path: Path) -> None:
    first = add("Use [bold]SQLite[/bold] by default", "--type", "decision", "--metadata", '{"adr": 1}')
    assert first["id"].startswith("ctx_")
    assert (first["type"], first["version"], first["metadata"]) == ("decision", 1, {"adr": 1})
    assert first["relationships"] == []

    source = tmp_path / "notes.md"
    source.write_text("# Notes\n\nFrom a file.\n")
    second = add("--file", str(source), "--link", f"{first['id']}:depends_on:0.5")
    assert second["type"] == "note"
    assert second["content"] == "# Notes\n\nFrom a file.\n"
    [rel] = second["relationships"]
    assert (rel["target_id"], rel["relationship_type"], rel["strength"]) == (first["id"], "depends_on", 0.5)

    piped = cli("context", "add", "--file", "-", "--type", "code", "--json", input="print('hi')\n")
    assert piped.exit_code == 0, piped.output

    got = ok_json("context", "get", first["id"])
    assert got["content"] == "Use [bold]SQLite[/bold] by default"
    readable = cli("context", "get", first["id"])
    assert readable.exit_code == 0, readable.output
    # Content is printed as is: no markup interpretation.
    assert "Use [bold]SQLite[/bold] by default" in readable.stdout
    assert first["id"] in readable.stdout
    assert '"adr": 1' in readable.stdout

    linked = ok_json("context", "link", first["id"], second["id"], "--type", "explains", "--strength", "0.9")
    assert (linked["source_id"], linked["target_id"], linked["direction"]) == (first["id"], second["id"], "outgoing")
    text = cli("context", "link", second["id"], first["id"], "--type", "mentions")
    assert text.exit_code == 0, text.output
    assert f"{second['id']} -[mentions 1]-> {first['id']}" in flat(text.stdout)

    removed = cli("context", "rm", first["id"])
    assert removed.exit_code == 0, removed.output
    assert f"Deleted {first['id']} and 3 relationships" in flat(removed.stdout)
    gone = cli("context", "get", first["id"])
    assert gone.exit_code == 1
    assert "Context not found" in flat(gone.stderr)


def test_cli_errors_are_readable(cli_data_dir: Path) -> None:
    ctx = add("hello")
    for args, message in [
        (("context", "add", "x", "--metadata", "[1, 2]"), "--metadata must be a JSON object"),
        (("context", "add", "x", "--metadata", "{oops"), "not valid JSON"),
        (("context", "add", "x", "--type", "not valid!"), "type"),
        (("context", "add", "   "), "content must not be empty"),
        (("context", "add"), "give the content"),
        (("context", "add", "x", "--link", "nocolon"), "TARGET_ID:TYPE"),
        (("context", "add", "x", "--link", "ctx_missing:depends_on"), "Relationship target not found"),
        (("context", "link", ctx["id"], ctx["id"]), "cannot have a relationship with itself"),
        (("context", "link", ctx["id"], "ctx_missing", "--strength", "2"), "strength"),
        (("context", "rm", ctx["id"], "--if-version", "2"), "Version conflict"),
        (("context", "add", "--file", "/nonexistent/file"), "cannot read"),
        (("context", "add", "x", "--file", "/nonexistent/file"), "one of them"),
    ]:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Error:" in flat(result.stderr), args
        assert message in flat(result.stderr), (args, result.stderr)
    assert ok_json("context", "get", ctx["id"])["version"] == 1

    other = add("other")
    ok_json("context", "link", ctx["id"], other["id"])
    duplicate = cli("context", "link", ctx["id"], other["id"])
    assert duplicate.exit_code == 1
    assert "already exists" in flat(duplicate.stderr)


def test_cli_acts_as_the_keys_owner(cli_data_dir: Path) -> None:
    admins = add("the admin's")
    bob = ok_json("users", "create", "bob")
    bob_key = ok_json("keys", "create", "--user", bob["id"])["key"]
    hidden = cli("context", "get", admins["id"], "--api-key", bob_key)
    assert hidden.exit_code == 1
    assert "Context not found" in flat(hidden.stderr)
    bobs = ok_json("context", "add", "bob's", "--api-key", bob_key)
    assert bobs["owner_id"] == bob["id"]
    # Bob cannot point at the admin's context, nor the admin at Bob's.
    assert cli("context", "link", bobs["id"], admins["id"], "--api-key", bob_key).exit_code == 1
    assert cli("context", "link", admins["id"], bobs["id"]).exit_code == 1
    assert cli("context", "rm", bobs["id"]).exit_code == 1
    # The admin reads Bob's context and lists everyone's (issue 16); Bob may not list the admin's.
    assert ok_json("context", "get", bobs["id"])["content"] == "bob's"
    assert {item["id"] for item in ok_json("context", "list", "--owner", "all")["items"]} == {admins["id"], bobs["id"]}
    assert [item["id"] for item in ok_json("context", "list", "--owner", bob["id"])["items"]] == [bobs["id"]]
    refused = cli("context", "list", "--owner", "all", "--api-key", bob_key)
    assert refused.exit_code == 1
    assert "only an admin" in flat(refused.stderr)
    assert ok_json("context", "rm", bobs["id"], "--api-key", bob_key)["deleted"] is True


def test_list_pages_and_filters(cli_data_dir: Path) -> None:
    ids = [add(f"note {n}", "--type", "note" if n % 2 else "decision")["id"] for n in range(5)]
    listed = ok_json("context", "list")
    assert {item["id"] for item in listed["items"]} == set(ids)
    assert listed["next_cursor"] is None
    decisions = ok_json("context", "list", "--type", "decision", "--sort", "created")
    assert [item["id"] for item in decisions["items"]] == [ids[0], ids[2], ids[4]]
    first = ok_json("context", "list", "--limit", "2", "--sort", "created")
    assert [item["id"] for item in first["items"]] == ids[:2]
    rest = ok_json("context", "list", "--sort", "created", "--cursor", first["next_cursor"])
    assert [item["id"] for item in rest["items"]] == ids[2:]
    table = cli("context", "list", "--limit", "2")
    assert table.exit_code == 0, table.output
    assert "more: --cursor" in table.stderr
    bad = cli("context", "list", "--sort", "size")
    assert bad.exit_code == 1
    assert "sort" in flat(bad.stderr)
