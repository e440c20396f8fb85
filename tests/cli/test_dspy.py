"""``trellis dspy modules|workflows|run`` in-process, against a fresh embedded data directory; the
module's model calls go to a scriptable fake upstream configured through the environment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.dspy.capitals import requested_fields
from tests.dspy.support import answer, upstream_model
from tests.gateway.upstream import Computed, FakeUpstream, Ok
from trellis.cli.main import app


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_data_dir: Path, upstream: FakeUpstream) -> Path:
    monkeypatch.setenv("TRELLIS_MODELS", json.dumps({"up": upstream_model(upstream)}))
    monkeypatch.setenv("TRELLIS_DSPY__DEFAULT_MODEL", "up")
    return cli_data_dir


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_modules_and_workflows_are_listed(data_dir: Path) -> None:
    result = cli("dspy", "modules", "--json")
    assert result.exit_code == 0, result.output
    names = {m["name"] for m in json.loads(result.output)}
    assert {"model_switcher", "context_synthesis", "role_refinement"} <= names
    result = cli("dspy", "workflows", "--json")
    assert result.exit_code == 0, result.output
    flows = {w["name"]: w for w in json.loads(result.output)}
    assert [s["module"] for s in flows["documentation_retrieval"]["stages"]][-1] == "context_synthesis"


def test_run_a_module(data_dir: Path, upstream: FakeUpstream) -> None:
    upstream.chat(answer(result="Blue."))
    result = cli("dspy", "run", "model_switcher", "-i", "task=Name a color.", "-i", "complexity=simple", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["data"]["result"] == "Blue."
    assert out["data"]["model"] == "up"
    assert out["module_type"] == "ModelSwitcher"


def test_bad_inputs_and_unknown_modules_are_one_line_errors(data_dir: Path) -> None:
    result = cli("dspy", "run", "model_switcher", "-i", "task=5")
    assert result.exit_code == 1
    assert "inputs.task" in result.output
    result = cli("dspy", "run", "nope", "-i", "task=x")
    assert result.exit_code == 1
    assert "No DSPy module named 'nope'" in " ".join(result.output.split())
    result = cli("dspy", "run", "model_switcher", "--inputs", "[1]")
    assert result.exit_code == 1


# --- datasets and programs ------------------------------------------------------------------------------

REWRITES = {
    "how do I deploy trellis on a server": "deploy trellis server",
    "where are the workflow runs stored": "workflow runs storage",
    "which models does the gateway serve": "gateway models",
    "how to rotate an api key": "rotate api key",
    "what does the breaker do when a model fails": "breaker model failure",
    "how are contexts searched": "contexts searched",
    "how to export the episodic log": "export episodic log",
    "what is a dspy program version": "dspy program version",
    "how do hooks resume a run": "hooks resume run",
    "where is the metrics endpoint": "metrics endpoint",
}


def rewrites_when_shown_examples(body: dict[str, Any]) -> Ok:
    """Answers the question's keywords only when the prompt carries worked examples; else words
    that share nothing with the question (the module then falls back to the question itself)."""
    question = body["messages"][-1]["content"]
    query = next(q for q in REWRITES if q in question)
    knows = len(body["messages"]) > 2
    return Ok(json.dumps({"processed_query": REWRITES[query] if knows else "zzz"}))


def test_datasets_programs_optimize_deploy_and_rollback(data_dir: Path, upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.default["chat"] = Computed(rewrites_when_shown_examples)
    lines = tmp_path / "rewrites.jsonl"
    bad = tmp_path / "bad.jsonl"
    lines.write_text("\n".join(json.dumps({"query": q, "processed_query": k}) for q, k in REWRITES.items()))
    bad.write_text('{"query": "a", "processed_query": "b"}\n{"query": 3, "processed_query": "b"}\n')

    result = cli("dspy", "datasets", "upload", "bad", str(bad), "-m", "documentation_query")
    assert result.exit_code == 1
    assert "line 2.query" in result.output
    result = cli("dspy", "datasets", "upload", "rewrites", str(lines), "-m", "documentation_query", "--json")
    assert result.exit_code == 0, result.output
    dataset = json.loads(result.output)
    assert dataset["size"] == 10
    result = cli("dspy", "programs", "create", "rewriter", "-m", "documentation_query", "--json")
    assert result.exit_code == 0, result.output

    result = cli("dspy", "optimize", "rewriter", "--dataset", dataset["id"], "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # DSPy's optimizer prints its own progress (to stderr here)
    assert out["status"] == "succeeded"
    assert (out["result"]["version"], out["result"]["deployed"]) == (1, True)
    assert out["result"]["scores"]["baseline"]["test"] == 0.0
    assert out["result"]["scores"]["optimized"]["test"] == 1.0

    result = cli("dspy", "programs", "run", "rewriter", "-i", "query=how are contexts searched", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["data"]["processed_query"] == "contexts searched"

    result = cli("dspy", "optimize", "rewriter", "--dataset", dataset["id"], "--seed", "1", "--no-deploy")
    assert result.exit_code == 0, result.output
    assert "Version 2: test 0.000 → 1.000; not deployed (v1 stays)" in result.output
    result = cli("dspy", "deploy", "rewriter", "2")
    assert result.exit_code == 1
    assert "does not beat version 1" in " ".join(result.output.split())
    result = cli("dspy", "deploy", "rewriter", "2", "--force", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deployed_version"] == 2
    result = cli("dspy", "rollback", "rewriter", "1", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["deployed_version"] == 1
    assert [v["version"] for v in shown["versions"]] == [1, 2]

    result = cli("dspy", "programs", "show", "rewriter")
    assert result.exit_code == 0, result.output
    assert "deployed v1, 2 version(s)" in result.output
    result = cli("dspy", "datasets", "delete", dataset["id"])
    assert result.exit_code == 1  # versions were compiled from it
    result = cli("dspy", "optimize", "rewriter", "--dataset", dataset["id"], "--max-model-calls", "999999")
    assert result.exit_code == 1
    assert "max_model_calls" in result.output


HINT = "Keep only the question's keywords and drop the rest."


def rewrites_when_taught(body: dict[str, Any]) -> Ok:
    """The rewriter's calls: right when shown worked examples or given the hint as instruction.
    Any other call (GEPA's reflection, MIPROv2's proposals) answers the hint in every field."""
    fields = requested_fields(body)
    if fields != ["processed_query"]:
        return Ok(json.dumps(dict.fromkeys(fields, HINT)))
    question = body["messages"][-1]["content"]
    query = next(q for q in REWRITES if q in question)
    knows = len(body["messages"]) > 2 or HINT in body["messages"][0]["content"]
    return Ok(json.dumps({"processed_query": REWRITES[query] if knows else "zzz"}))


def test_optimize_with_gepa_and_bad_optimizer_options(data_dir: Path, upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.default["chat"] = Computed(rewrites_when_taught)
    lines = tmp_path / "rewrites.jsonl"
    lines.write_text("\n".join(json.dumps({"query": q, "processed_query": k}) for q, k in REWRITES.items()))
    result = cli("dspy", "datasets", "upload", "rewrites", str(lines), "-m", "documentation_query", "--json")
    assert result.exit_code == 0, result.output
    dataset = json.loads(result.output)["id"]
    assert cli("dspy", "programs", "create", "rewriter", "-m", "documentation_query").exit_code == 0

    for options, field in (
        (["--optimizer", "simba"], "optimizer"),
        (["--optimizer", "gepa", "--max-metric-calls", "20", "--max-rounds", "2"], "max_rounds"),
        (["--optimizer", "miprov2_light", "--max-metric-calls", "20"], "max_metric_calls"),
        (["--optimizer", "gepa", "--max-metric-calls", "20", "--max-model-calls", "30"], "max_model_calls"),
    ):
        result = cli("dspy", "optimize", "rewriter", "--dataset", dataset, *options)
        assert result.exit_code == 1, options
        assert field in result.output, (options, result.output)
    assert upstream.calls("chat") == []

    options = ["--optimizer", "gepa", "--max-metric-calls", "20", "--reflection-minibatch-size", "2"]
    result = cli("dspy", "optimize", "rewriter", "--dataset", dataset, "--seed", "1", *options, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "succeeded", out
    assert out["result"]["scores"]["baseline"]["test"] == 0.0
    assert out["result"]["scores"]["optimized"]["test"] == 1.0
    result = cli("dspy", "programs", "show", "rewriter", "--json")
    assert result.exit_code == 0, result.output
    (version,) = json.loads(result.output)["versions"]
    assert version["optimizer"] == "gepa"
    assert (
        version["optimizer_params"]["max_metric_calls"],
        version["optimizer_params"]["reflection_minibatch_size"],
    ) == (
        20,
        2,
    )
    result = cli("dspy", "programs", "show", "rewriter")
    assert "gepa" in result.output
    result = cli("dspy", "programs", "delete", "rewriter")
    assert result.exit_code == 0, result.output
    assert "Deleted program prg_" in result.output
    result = cli("dspy", "programs", "show", "rewriter")
    assert result.exit_code != 0
    assert "rewriter" in result.output
