"""DSPy modules end to end on the real local model (SmolLM2-135M), through REST."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import Harness
from trellis.episodic.models import EpisodicLog


async def test_model_switcher_runs_on_the_local_model_and_is_logged(harness: Harness) -> None:
    user_id, key = await harness.user_with_key("alice")
    response = await harness.client.post(
        "/api/v1/dspy/modules/model_switcher/run",
        headers=harness.auth(key),
        json={"inputs": {"task": "Name a primary color.", "complexity": "simple"}},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["success"] is True
    assert data["module"] == "model_switcher"
    assert data["module_type"] == "ModelSwitcher"
    assert data["model"] == "smollm2-135m"
    assert data["data"]["model"] == "smollm2-135m"
    assert "smollm2-135m fits a simple execution task" in data["data"]["reason"]
    assert data["execution_time"] > 0

    await harness.runtime.logs.flush()
    async with harness.runtime.database.session() as session:
        rows = (await session.execute(select(EpisodicLog).where(EpisodicLog.door == "dspy"))).scalars().all()
    assert rows, "the module's model call is in the episodic log"
    assert {row.owner_id for row in rows} == {user_id}
    assert {row.module for row in rows} == {"model_switcher"}
    assert all(row.prompt_tokens > 0 and row.completion_tokens > 0 for row in rows)
    assert all(row.served_model == "smollm2-135m" for row in rows)


async def test_native_function_calling_on_the_local_model(harness: Harness) -> None:
    """DSPy's JSON adapter passes the signature's tools natively; the local model's call is
    grammar-constrained to the function's schema and comes back as DSPy's ``ToolCalls``."""
    import dspy

    from tests.dspy.test_engine import AskWithTools, weather
    from trellis.dspy.engine import CallIdentity
    from trellis.dspy.interface import call_scope

    _, key = await harness.user_with_key("alice")
    principal = await harness.runtime.auth.authenticate(key)
    with call_scope(CallIdentity(principal, "tools"), harness.runtime.dspy.lm_for(None)):
        result = await dspy.Predict(AskWithTools).acall(
            question="What is the weather in Lima?", tools=[dspy.Tool(weather)]
        )
    [call] = result.calls.tool_calls
    assert call.name == "weather"
    assert set(call.args) == {"city"}
    assert isinstance(call.args["city"], str)
    assert call.execute(functions=[dspy.Tool(weather)]) == f"Sunny in {call.args['city']}"
