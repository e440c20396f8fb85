"""``trellis workflow …``, run in-process against a real embedded data directory.

No server runs in these tests: ``run --follow``/``--wait``, ``retry --follow`` and ``events
--follow`` execute the steps with the command's own worker; the other commands only queue. (One
exception: ``retry`` nudges the runtime's unstarted worker and then reads the run again, which gives
that worker a moment to claim it before the command closes; see ``runtime.build_workflows``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from tests.cli.test_commands import cli, flat, ok_json
from trellis.cli.workflow import StatusChoice
from trellis.workflows.schemas import RunStatus

GREET = """\
description: Greets someone.
input_schema:
  type: object
  required: [name]
  properties: {name: {type: string}}
steps:
  - id: greet
    type: transform
    with: {value: "Hello, {{ input.name }}!"}
  - id: shout
    type: transform
    with: {value: "{{ steps.greet.output | upper }}"}
output: {greeting: "{{ steps.greet.output }}", loud: "{{ steps.shout.output }}"}
"""

SLEEPY = """\
steps:
  - id: nap
    type: wait
    with: {seconds: "{{ input.seconds }}"}
  - id: done
    type: transform
    with: {value: "rested {{ input.seconds }}"}
"""

BROKEN = """\
steps:
  - id: first
    type: transform
    with: {value: ok}
  - id: second
    type: transform
    with: {value: "{{ input.missing }}"}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def apply(tmp_path: Path, name: str, text: str, *args: str) -> dict[str, Any]:
    saved: dict[str, Any] = ok_json("workflow", "apply", write(tmp_path, name, text), *args)
    return saved


def test_apply_versions_show_list_delete(cli_data_dir: Path, tmp_path: Path) -> None:
    first = apply(tmp_path, "greet.yaml", GREET)
    assert (first["name"], first["version"], first["latest_version"], first["changed"]) == ("greet", 1, 1, True)
    assert first["definition"]["steps"][0]["with"] == {"value": "Hello, {{ input.name }}!"}

    # The same definition again (even as JSON, reformatted): no new version.
    as_json = json.dumps(first["definition"], indent=2)
    same = ok_json("workflow", "apply", write(tmp_path, "greet.json", as_json))
    assert (same["version"], same["changed"]) == (1, False)
    readable = cli("workflow", "apply", write(tmp_path, "greet.yml", GREET))
    assert readable.exit_code == 0, readable.output
    assert "Workflow greet unchanged: version 1 is the same." in flat(readable.stdout)

    changed = cli("workflow", "apply", write(tmp_path, "greet.yaml", GREET.replace("Greets someone.", "Says hi.")))
    assert changed.exit_code == 0, changed.output
    assert "Updated workflow greet: version 2 (was 1)." in flat(changed.stdout)

    # --name overrides the file's stem; stdin needs it.
    other = apply(tmp_path, "whatever.yaml", SLEEPY, "--name", "sleepy")
    assert (other["name"], other["version"]) == ("sleepy", 1)
    piped = cli("workflow", "apply", "-", "--name", "piped", "--json", input=GREET)
    assert piped.exit_code == 0, piped.output
    created = cli("workflow", "apply", write(tmp_path, "fresh.yaml", GREET))
    assert "Created workflow fresh (version 1)." in flat(created.stdout)

    listed = ok_json("workflow", "list")
    assert [item["name"] for item in listed["items"]] == ["fresh", "greet", "piped", "sleepy"]
    assert listed["items"][1]["latest_version"] == 2
    assert listed["items"][1]["description"] == "Says hi."
    table = cli("workflow", "list")
    assert table.exit_code == 0, table.output
    assert "Says hi." in table.stdout

    latest = ok_json("workflow", "show", "greet")
    assert (latest["version"], latest["definition"]["description"]) == (2, "Says hi.")
    older = ok_json("workflow", "show", "greet", "--version", "1")
    assert (older["version"], older["latest_version"], older["definition"]["description"]) == (1, 2, "Greets someone.")
    shown = cli("workflow", "show", "greet")
    assert shown.exit_code == 0, shown.output
    assert "greet  version 2 of 2" in shown.stdout
    assert "type: transform" in shown.stdout  # the definition, as YAML
    assert "value: Hello, {{ input.name }}!" in shown.stdout
    missing = cli("workflow", "show", "greet", "--version", "7")
    assert missing.exit_code == 1
    assert "workflow 'greet' has no version 7" in flat(missing.stderr)

    deleted = cli("workflow", "delete", "greet")
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted workflow greet." in flat(deleted.stdout)
    gone = cli("workflow", "show", "greet")
    assert gone.exit_code == 1
    assert "no workflow named 'greet'" in flat(gone.stderr)
    assert ok_json("workflow", "delete", "fresh") == {"name": "fresh", "deleted": True}
    # The name can be used again: version 1 of a new workflow.
    assert apply(tmp_path, "greet.yaml", GREET)["version"] == 1


def test_apply_lists_each_problem_and_saves_nothing(cli_data_dir: Path, tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "bad.yaml",
        """\
steps:
  - id: a
    type: transfrom
  - id: b
    type: transform
    needs: [nowhere]
    with: {value: 1}
  - id: c
    type: wait
    with: {}
""",
    )
    result = cli("workflow", "apply", bad)
    assert result.exit_code == 1
    err = flat(result.stderr)
    assert f"Error: {bad} is not a valid workflow definition (3 problems):" in err
    assert "• steps.0.type: step 'a': unknown step type 'transfrom'; known:" in err
    assert "• steps.1.needs.0: step 'b': no step named 'nowhere'" in err
    assert "• steps.2.with: step 'c':" in err
    assert "give either seconds" in err

    one = cli("workflow", "apply", write(tmp_path, "one.yaml", "steps: [{id: x, type: transform, with: {}}]"))
    assert one.exit_code == 1
    assert "(1 problem):" in flat(one.stderr)
    assert "• steps.0.with.value: step 'x': Field required" in flat(one.stderr)

    for name, text, message in [
        ("broken.yaml", "steps: [", "broken.yaml: not valid YAML or JSON"),
        ("list.yaml", "- 1\n- 2\n", "list.yaml: the file must hold a mapping"),
        ("empty.yaml", "", "empty.yaml: the file must hold a mapping"),
    ]:
        result = cli("workflow", "apply", write(tmp_path, name, text))
        assert result.exit_code == 1, name
        assert message in flat(result.stderr), (name, result.stderr)

    for args, message in [
        (("workflow", "apply", str(tmp_path / "absent.yaml")), "cannot read the definition"),
        (("workflow", "apply", write(tmp_path, "bad name!.yaml", GREET)), "pass one with --name"),
        (("workflow", "apply", "-"), "give the workflow's name with --name"),
    ]:
        result = cli(*args)
        assert result.exit_code == 1, args
        assert message in flat(result.stderr), (args, result.stderr)
    assert ok_json("workflow", "list")["items"] == []


def test_run_follow_to_success_and_to_failure(cli_data_dir: Path, tmp_path: Path) -> None:
    apply(tmp_path, "greet.yaml", GREET)
    followed = cli("workflow", "run", "greet", "-i", "name=Ada", "--follow")
    assert followed.exit_code == 0, followed.output
    assert json.loads(followed.stdout) == {"greeting": "Hello, Ada!", "loud": "HELLO, ADA!"}
    # The progress display goes to stderr (a log, not a terminal, gets its final state once).
    display = flat(followed.stderr)
    assert "greet v1 succeeded" in display
    assert "100%" in display
    assert "✓ greet succeeded" in display
    assert "✓ shout succeeded" in display

    detail = ok_json("workflow", "run", "greet", "--input", '{"name": "Bo"}', "--follow")
    assert detail["status"] == "succeeded"
    assert detail["result"] == {"greeting": "Hello, Bo!", "loud": "HELLO, BO!"}
    assert [(s["key"], s["status"], s["attempt"]) for s in detail["steps"]] == [
        ("greet", "succeeded", 1),
        ("shout", "succeeded", 1),
    ]

    apply(tmp_path, "broken.yaml", BROKEN)
    failed = cli("workflow", "run", "broken", "--follow")
    assert failed.exit_code == 1
    err = flat(failed.stderr)
    assert "broken v1 failed" in err
    assert "✓ first succeeded" in err
    assert "✗ second failed" in err
    assert "Error: run run_" in err
    assert "failed: step 'second' failed:" in err
    assert "has no attribute 'missing'" in err
    assert failed.stdout == ""
    as_json = cli("workflow", "run", "broken", "--follow", "--json")
    assert as_json.exit_code == 1
    failed_detail = json.loads(as_json.stdout)
    assert failed_detail["status"] == "failed"
    assert failed_detail["error"]["step"] == "second"
    assert failed_detail["progress"] == 0.5


def test_run_input_options_and_idempotency(cli_data_dir: Path, tmp_path: Path) -> None:
    apply(
        tmp_path,
        "echo.yaml",
        "steps: [{id: echo, type: transform, with: {value: '{{ input }}'}}]",
    )
    source = write(tmp_path, "input.yaml", "name: Ada\ntags: [a, b]\n")
    out = ok_json(
        "workflow",
        "run",
        "echo",
        "--input-file",
        source,
        "-i",
        "n=3",
        "-i",
        "flag=true",
        "-i",
        "who=Bo",
        "--wait",
        "10",
    )
    assert out["result"] == {"name": "Ada", "tags": ["a", "b"], "n": 3, "flag": True, "who": "Bo"}
    quoted = ok_json("workflow", "run", "echo", "-i", 'zip="01234"', "-i", "eq=a=b", "--wait", "10")
    assert quoted["result"] == {"zip": "01234", "eq": "a=b"}
    scalar = ok_json("workflow", "run", "echo", "--input", "[1, 2]", "--wait", "10")
    assert scalar["result"] == [1, 2]
    stdin = cli("workflow", "run", "echo", "--input-file", "-", "--wait", "10", "--json", input='{"x": 1}')
    assert stdin.exit_code == 0, stdin.output
    assert json.loads(stdin.stdout)["result"] == {"x": 1}

    first = ok_json("workflow", "run", "echo", "-i", "a=1", "--idempotency-key", "once")
    assert (first["status"], first["created"]) == ("queued", True)
    again = ok_json("workflow", "run", "echo", "-i", "a=2", "--idempotency-key", "once")
    assert (again["id"], again["created"]) == (first["id"], False)
    text = cli("workflow", "run", "echo", "--idempotency-key", "once")
    assert f"Run {first['id']} already exists for this idempotency key (queued)." in flat(text.stdout)

    for args, message in [
        (("--input", "{oops"), "--input is not valid JSON"),
        (("--input", "{}", "--input-file", source), "not both"),
        (("--input", "[1]", "-i", "a=1"), "-i KEY=VALUE adds to a JSON object"),
        (("--input-file", str(tmp_path / "absent.json")), "cannot read the input"),
        (("--input-file", write(tmp_path, "bad.yaml", "a: [")), "is not valid JSON or YAML"),
        (("--version", "9"), "workflow 'echo' has no version 9"),
    ]:
        result = cli("workflow", "run", "echo", *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in flat(result.stderr), (args, result.stderr)
    usage = cli("workflow", "run", "echo", "-i", "novalue")
    assert usage.exit_code == 2
    assert "expected KEY=VALUE" in flat(usage.output)
    missing = cli("workflow", "run", "nothing-here")
    assert missing.exit_code == 1
    assert "no workflow named 'nothing-here'" in flat(missing.stderr)


def test_input_schema_problems_are_listed(cli_data_dir: Path, tmp_path: Path) -> None:
    apply(
        tmp_path,
        "greet.yaml",
        GREET.replace(
            "properties: {name: {type: string}}", "properties: {name: {type: string}}\n  additionalProperties: false"
        ),
    )
    one = cli("workflow", "run", "greet")
    assert one.exit_code == 1
    assert "Error: input does not match the workflow's input_schema: 'name' is a required property" in flat(one.stderr)
    several = cli("workflow", "run", "greet", "-i", "name=3", "-i", "extra=x")
    assert several.exit_code == 1
    err = flat(several.stderr)
    assert "• input: Additional properties are not allowed ('extra' was unexpected)" in err
    assert "• input.name: 3 is not of type 'string'" in err
    assert ok_json("workflow", "history")["items"] == []


def test_wait_status_events_history(cli_data_dir: Path, tmp_path: Path) -> None:
    apply(tmp_path, "sleepy.yaml", SLEEPY)
    apply(tmp_path, "greet.yaml", GREET)
    # --wait shorter than the run: exit 1, the run keeps going (it waits in the database).
    short = cli("workflow", "run", "sleepy", "-i", "seconds=30", "--wait", "2")
    assert short.exit_code == 1
    assert "is still waiting after 2 s" in flat(short.stderr)
    run_id = flat(short.stderr).split("Error: run ")[1].split()[0]
    detail = ok_json("workflow", "status", run_id)
    assert detail["status"] == "waiting"
    assert [(s["key"], s["status"]) for s in detail["steps"]] == [("nap", "waiting"), ("done", "pending")]
    assert detail["steps"][0]["waiting_for"]["until"]
    status = cli("workflow", "status", run_id)
    assert status.exit_code == 0, status.output
    text = flat(status.stdout)
    assert run_id in text
    assert "sleepy v1 waiting" in text
    assert "nap waiting" in text
    assert "s to go" in text

    waited = cli("workflow", "run", "greet", "-i", "name=Cy", "--wait", "10")
    assert waited.exit_code == 0, waited.output
    assert json.loads(waited.stdout)["greeting"] == "Hello, Cy!"

    queued = ok_json("workflow", "run", "greet", "-i", "name=Di")
    assert queued["status"] == "queued"  # nothing runs it: no server, and this command does not wait
    assert ok_json("workflow", "status", queued["id"])["status"] == "queued"

    # events --follow runs it (this command's worker) and prints until it ends.
    followed = cli("workflow", "events", queued["id"], "--follow")
    assert followed.exit_code == 0, followed.output
    lines = followed.stdout.splitlines()
    kinds = [line.split()[2] for line in lines]
    assert kinds[0] == "run.queued"
    assert kinds[-1] == "run.succeeded"
    assert "step.succeeded" in kinds
    assert any("greet" in line and '"output":"Hello, Di!"' in line for line in lines)
    as_lines = cli("workflow", "events", queued["id"], "--follow", "--json")
    events = [json.loads(line) for line in as_lines.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(lines) + 1))
    page = ok_json("workflow", "events", queued["id"], "--after", "2")
    assert [e["seq"] for e in page["items"]] == list(range(3, len(lines) + 1))
    assert page["last_seq"] == len(lines)
    readable = cli("workflow", "events", queued["id"])
    assert readable.stdout.splitlines() == lines

    history = ok_json("workflow", "history")
    assert len(history["items"]) == 3
    by_id = {item["id"]: item for item in history["items"]}
    assert by_id[queued["id"]]["status"] == "succeeded"
    assert by_id[run_id]["status"] == "waiting"
    only_greet = ok_json("workflow", "history", "--workflow", "greet", "--status", "succeeded")
    assert {item["workflow"] for item in only_greet["items"]} == {"greet"}
    assert {item["status"] for item in only_greet["items"]} == {"succeeded"}
    assert len(only_greet["items"]) == 2
    waiting = ok_json("workflow", "history", "--status", "waiting", "--status", "queued")
    assert [item["id"] for item in waiting["items"]] == [run_id]
    first_page = ok_json("workflow", "history", "-n", "2")
    assert len(first_page["items"]) == 2
    rest = ok_json("workflow", "history", "--cursor", first_page["next_cursor"])
    assert len(rest["items"]) == 1
    # --owner (issue 16): the admin's "all" and its own id list the same three runs; another id none.
    everyone = ok_json("workflow", "history", "--owner", "all")
    assert {item["id"] for item in everyone["items"]} == set(by_id)
    owner = everyone["items"][0]["owner_id"]
    assert {item["id"] for item in ok_json("workflow", "history", "--owner", owner)["items"]} == set(by_id)
    assert ok_json("workflow", "history", "--owner", "usr_nobody")["items"] == []
    table = cli("workflow", "history")
    assert table.exit_code == 0
    assert run_id in table.stdout
    bad = cli("workflow", "history", "--status", "sleeping")
    assert bad.exit_code == 2
    missing = cli("workflow", "status", "run_missing")
    assert missing.exit_code == 1
    assert "workflow run not found" in flat(missing.stderr)
    printed = cli("workflow", "run", "greet", "-i", "name=Ed")
    assert printed.exit_code == 0
    assert "Queued run run_" in flat(printed.stdout)
    assert "(greet v1)" in flat(printed.stdout)


def test_cancel_and_retry(cli_data_dir: Path, tmp_path: Path) -> None:
    apply(tmp_path, "greet.yaml", GREET)
    queued = ok_json("workflow", "run", "greet", "-i", "name=Ada")
    cancelled = cli("workflow", "cancel", queued["id"])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"Cancelled run {queued['id']}." in flat(cancelled.stdout)
    again = cli("workflow", "cancel", queued["id"])
    assert again.exit_code == 1
    assert "the run is cancelled; only queued, running or waiting runs can be cancelled" in flat(again.stderr)
    detail = ok_json("workflow", "status", queued["id"])
    assert detail["status"] == "cancelled"
    assert {s["status"] for s in detail["steps"]} == {"cancelled"}

    # Retry from where it stopped, following it to the end.
    retried = cli("workflow", "retry", queued["id"], "--follow")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout) == {"greeting": "Hello, Ada!", "loud": "HELLO, ADA!"}
    not_again = cli("workflow", "retry", queued["id"])
    assert not_again.exit_code == 1
    assert "only failed or cancelled runs can be retried" in flat(not_again.stderr)
    kinds = [e["type"] for e in ok_json("workflow", "events", queued["id"])["items"]]
    assert kinds[:4] == ["run.queued", "run.cancel_requested", "run.cancelled", "run.retried"]
    assert kinds[-1] == "run.succeeded"

    # A failed run retried fails the same way (same input): exit 1.
    apply(tmp_path, "broken.yaml", BROKEN)
    waited = cli("workflow", "run", "broken", "--wait", "10", "--json")
    assert waited.exit_code == 1
    failed = json.loads(waited.stdout)
    assert failed["status"] == "failed"
    refollowed = cli("workflow", "retry", failed["id"], "--follow", "--json")
    assert refollowed.exit_code == 1
    again_failed = json.loads(refollowed.stdout)
    assert (again_failed["id"], again_failed["status"]) == (failed["id"], "failed")
    assert [s["attempt"] for s in again_failed["steps"]] == [1, 2]  # the step that succeeded is kept
    out = ok_json("workflow", "retry", failed["id"])
    assert out["id"] == failed["id"]
    # Queued for a server; the command itself may already have started it (see the module docstring).
    assert out["status"] in ("queued", "running", "failed")


def test_runs_are_the_keys_owners(cli_data_dir: Path, tmp_path: Path) -> None:
    apply(tmp_path, "greet.yaml", GREET)
    mine = ok_json("workflow", "run", "greet", "-i", "name=Ada", "--wait", "10")
    bob = ok_json("users", "create", "bob")
    bob_key = ok_json("keys", "create", "--user", bob["id"])["key"]
    for args in (
        ("workflow", "status", mine["id"]),
        ("workflow", "events", mine["id"]),
        ("workflow", "cancel", mine["id"]),
        ("workflow", "retry", mine["id"]),
    ):
        result = cli(*args, "--api-key", bob_key)
        assert result.exit_code == 1, args
        assert "workflow run not found" in flat(result.stderr), args
    assert cli("workflow", "run", "greet", "--api-key", bob_key).exit_code == 1
    assert ok_json("workflow", "list", "--api-key", bob_key)["items"] == []
    assert ok_json("workflow", "history", "--api-key", bob_key)["items"] == []
    bobs = ok_json("workflow", "apply", write(tmp_path, "greet.yaml", GREET), "--api-key", bob_key)
    assert bobs["version"] == 1  # his own "greet"


def test_help_has_examples(cli_data_dir: Path) -> None:
    group = cli("workflow", "--help")
    assert group.exit_code == 0
    assert "trellis workflow apply examples/workflows/hello.yaml" in group.stdout
    for command in ("apply", "list", "show", "delete", "run", "status", "history", "cancel", "retry", "events"):
        result = cli("workflow", command, "--help")
        assert result.exit_code == 0, command
        assert f"trellis workflow {command}" in result.stdout, command
    assert {choice.value for choice in StatusChoice} == set(get_args(RunStatus))
