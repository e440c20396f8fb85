"""``trellis ask`` and ``trellis models`` with no configuration and no server: the real local model,
in-process, against a fresh embedded data directory the command migrates itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.episodic.support import logged_calls
from trellis.auth.secrets import ADMIN_KEY_FILE
from trellis.cli.main import app


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(path))
    monkeypatch.setenv("TRELLIS_CONFIG", str(tmp_path / "nonexistent.toml"))
    # Nothing listens on port 1: `ask` finds no server and runs the model in-process.
    monkeypatch.setenv("TRELLIS_SERVER", "http://127.0.0.1:1")
    return path


def cli(*args: str) -> Result:
    # catch_exceptions=False: a traceback is a failure, never a "non-zero exit" that passes.
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    """Rich wraps long lines; compare messages with whitespace collapsed."""
    return " ".join(text.split())


def test_ask_in_process_with_json(data_dir: Path) -> None:
    assert not data_dir.exists()
    result = cli("ask", "Name a primary color.", "--max-tokens", "8", "--temperature", "0", "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["response"].strip()
    assert data["model"] == "smollm2-135m"
    assert data["provider"] == "llamacpp"
    assert 0 < data["completion_tokens"] <= 8
    assert data["prompt_tokens"] > 10
    assert data["tokens_used"] == data["prompt_tokens"] + data["completion_tokens"]
    assert data["cached"] is False
    # It migrated the embedded database and created the admin on the way.
    assert (data_dir / "trellis.db").is_file()
    assert (data_dir / ADMIN_KEY_FILE).is_file()

    # The call is in the episodic log, from the CLI door, with the tokens it reported.
    [row] = logged_calls()
    assert row.door == "cli"
    assert (row.requested_model, row.served_model, row.provider) == ("smollm2-135m", "smollm2-135m", "llamacpp")
    assert row.status == "ok"
    assert (row.prompt_tokens, row.completion_tokens) == (data["prompt_tokens"], data["completion_tokens"])
    assert row.response == data["response"]
    assert row.messages == [{"role": "user", "content": "Name a primary color."}]


def test_ask_streams_in_process(data_dir: Path) -> None:
    result = cli("ask", "Say hello.", "--max-tokens", "8", "--temperature", "0", "--stream")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    [row] = logged_calls()
    assert row.door == "cli"
    assert row.status == "ok"
    assert row.response is not None
    assert row.response.strip() == result.stdout.strip()
    assert 0 < row.completion_tokens <= 8
    assert row.ttft_ms is not None


def test_ask_plain_text(data_dir: Path) -> None:
    result = cli("ask", "Say hello.", "--max-tokens", "8", "--temperature", "0", "--model", "cursor-native-ai")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert "smollm2-135m" in result.stderr  # the model line goes to stderr, the answer alone to stdout


def test_models_json(data_dir: Path) -> None:
    result = cli("models", "--json")
    assert result.exit_code == 0, result.output
    models = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(models) == {"smollm2-135m", "minilm-l6", "bge-small-en"}
    assert models["smollm2-135m"]["provider"] == "llamacpp"
    assert set(models["smollm2-135m"]["aliases"].split(", ")) == {
        "cursor-native-ai",
        "external-model",
        "specialized-agent",
    }
    assert models["minilm-l6"]["provider"] == "onnx-embed"
    assert models["minilm-l6"]["capabilities"] == "embed"
    assert models["bge-small-en"]["provider"] == "onnx-embed"
    assert models["bge-small-en"]["capabilities"] == "embed"


def test_ask_unknown_model_is_a_readable_error(data_dir: Path) -> None:
    result = cli("ask", "Hi", "--model", "no-such-model", "--max-tokens", "8")
    assert result.exit_code != 0
    message = flat(result.stderr)
    assert "Unknown model 'no-such-model'" in message
    for name in ("smollm2-135m", "minilm-l6", "cursor-native-ai"):
        assert name in message
    assert "Traceback" not in result.output


def test_ask_embedding_model_is_a_readable_error(data_dir: Path) -> None:
    result = cli("ask", "Hi", "--model", "minilm-l6", "--max-tokens", "8")
    assert result.exit_code != 0
    assert "cannot do chat" in flat(result.stderr)
    assert "Traceback" not in result.output
