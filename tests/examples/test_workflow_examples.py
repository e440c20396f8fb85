"""The workflows in ``examples/workflows/`` run as the README says: ``trellis workflow apply FILE``
then ``trellis workflow run NAME ...``, in-process against a fresh embedded data directory, with no
server (the command's own worker runs the steps) and, for ``ask-docs``, the real local model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_commands import cli, flat, ok_json
from tests.episodic.support import logged_calls

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def run_followed(*args: str) -> dict[str, Any]:
    result = cli("workflow", "run", *args, "--follow", "--json")
    assert result.exit_code == 0, result.output
    detail: dict[str, Any] = json.loads(result.stdout)
    assert detail["status"] == "succeeded", detail
    return detail


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_applies(cli_data_dir: Path, path: Path) -> None:
    saved = ok_json("workflow", "apply", str(path))
    assert (saved["name"], saved["version"], saved["changed"]) == (path.stem, 1, True)
    assert saved["definition"]["description"]
    assert saved["definition"]["input_schema"]["type"] == "object"


def test_the_examples_are_the_ones_the_readme_names() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == {"hello.yaml", "pause.yaml", "ask-docs.yaml"}
    readme = (EXAMPLES.parents[1] / "README.md").read_text()
    assert "trellis workflow apply examples/workflows/hello.yaml" in readme
    assert "trellis workflow run hello -i name=Ada --follow" in readme


def test_hello(cli_data_dir: Path) -> None:
    ok_json("workflow", "apply", str(EXAMPLES / "hello.yaml"))
    detail = run_followed("hello", "-i", "name=Ada")
    assert detail["result"] == {"greeting": "Hello, Ada!", "letters": 3}
    # As a person would type it: the result on stdout, exit 0.
    readable = cli("workflow", "run", "hello", "-i", "name=Grace Hopper", "--follow")
    assert readable.exit_code == 0, readable.output
    assert json.loads(readable.stdout) == {"greeting": "Hello, Grace Hopper!", "letters": 12}
    # The input_schema holds: a missing name is refused before anything runs.
    refused = cli("workflow", "run", "hello")
    assert refused.exit_code == 1
    assert "'name' is a required property" in flat(refused.stderr)


@pytest.mark.parametrize("seconds", ["0", "1"])
def test_pause(cli_data_dir: Path, seconds: str) -> None:
    ok_json("workflow", "apply", str(EXAMPLES / "pause.yaml"))
    detail = run_followed("pause", "-i", f"seconds={seconds}")
    # "{{ input.seconds }}" reached the wait step as a number (a string would fail its config).
    assert detail["result"] == {"waited_seconds": float(seconds), "message": f"Waited {seconds} seconds."}
    [pause, report] = detail["steps"]
    assert (pause["key"], pause["output"]) == ("pause", {"waited_seconds": float(seconds)})
    assert report["status"] == "succeeded"
    events = [e["type"] for e in ok_json("workflow", "events", detail["id"])["items"]]
    if seconds != "0":
        assert "step.waiting" in events  # the run was parked in the database, not in a sleeping worker
        assert "run.resumed" in events
    refused = cli("workflow", "run", "pause", "-i", "seconds=soon")
    assert refused.exit_code == 1
    assert "'soon' is not of type 'number'" in flat(refused.stderr)


def test_ask_docs_with_the_local_model(cli_data_dir: Path) -> None:
    facts = ok_json(
        "context",
        "add",
        "Trellis keeps workflow runs, their steps and their events in its database.",
        "--type",
        "note",
    )
    ok_json("context", "add", "The gateway retries failed model calls with capped exponential backoff.")
    ok_json("workflow", "apply", str(EXAMPLES / "ask-docs.yaml"))
    question = "Where does Trellis keep workflow runs?"
    detail = run_followed("ask-docs", "-i", f"question={question}", "-i", "max_tokens=12")
    result = detail["result"]
    assert result["answer"].strip()
    assert result["model"] == "smollm2-135m"
    assert result["sources"][0] == facts["id"]  # the best hit first
    search = detail["steps"][0]
    assert search["key"] == "search"
    assert [hit["id"] for hit in search["output"]["hits"]] == result["sources"]
    answer = detail["steps"][1]["output"]
    assert 0 < answer["completion_tokens"] <= 12
    # The model saw the found contexts: the call is in the episodic log, from the workflow door.
    [call] = [row for row in logged_calls() if row.door == "workflow" and row.served_model == "smollm2-135m"]
    prompt = json.dumps(call.messages)
    assert "Trellis keeps workflow runs, their steps and their events in its database." in prompt
    assert question in prompt
    assert call.response == answer["response"]
