"""``trellis ask`` and ``trellis models``: the model gateway from the command line. ``ask`` uses a
running server when there is one, else the gateway in-process (its call logged like any other)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from trellis.cli.common import (
    ApiKeyOption,
    JsonOption,
    acting,
    answer_stream,
    api_key_for,
    console,
    err_console,
    fail,
    parse,
    prepare_embedded,
    run,
    settings,
)
from trellis.runtime import Runtime
from trellis.settings import Settings

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="TRELLIS_SERVER", help="A running Trellis (default: the configured host and port)."
    ),
]


def _server_url(settings: Settings, server: str | None) -> str:
    return (server or f"http://{settings.host}:{settings.port}").rstrip("/")


def _server_is_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def ask(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name or alias (see `trellis models`).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Longest answer, in tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(min=0, max=2, help="0 for deterministic answers.")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated.")] = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask a model. Uses a running server when there is one, else runs the model in-process."""
    from trellis.gateway.schemas import GenerateRequest

    loaded = settings()
    body = parse(
        GenerateRequest, prompt=prompt, model=model, max_tokens=max_tokens, temperature=temperature, stream=stream
    )
    url = _server_url(loaded, server)
    if _server_is_up(url):
        _ask_server(url, api_key_for(loaded, api_key), body, as_json)
        return

    async def work(runtime: Runtime) -> Any:
        from trellis.gateway import tasks
        from trellis.gateway.service import CallContext, StreamOutcome

        if runtime.settings.embedded_database:
            await prepare_embedded(runtime)
        actor = await acting(runtime, api_key)
        prepared = await tasks.prepare_generate(runtime.gateway, body)
        ctx = CallContext(principal=actor, door="cli")
        if not stream:
            return await tasks.run(runtime.gateway, ctx, prepared)
        out = answer_stream()
        chunks = runtime.gateway.stream(ctx, prepared.model_name, prepared.model, prepared.request, StreamOutcome())
        try:
            async for chunk in chunks:
                out.write(chunk.delta)
                out.flush()
        finally:
            await chunks.aclose()
        out.write("\n")
        return None

    result = run(work)
    if result is not None:
        _print_generation(result.model_dump(), as_json)


def _print_generation(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(data))
        return
    sys.stdout.write(str(data["response"]).strip() + "\n")
    err_console.print(
        f"[dim]{data['model']} · {data['prompt_tokens']}+{data['completion_tokens']} tokens · "
        f"{data['response_time']:.2f}s{' · cached' if data['cached'] else ''}[/dim]"
    )


def _ask_server(url: str, key: str, body: Any, as_json: bool) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    payload = body.model_dump(exclude_none=True)
    with httpx.Client(timeout=httpx.Timeout(300, connect=5)) as client:
        if not body.stream:
            response = client.post(f"{url}/api/v1/ai/generate", json=payload, headers=headers)
            envelope = response.json()
            if not envelope.get("success"):
                fail(envelope["error"]["message"])
            _print_generation(envelope["data"], as_json)
            return
        with client.stream("POST", f"{url}/api/v1/ai/generate", json=payload, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                fail(response.json()["error"]["message"])
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "delta":
                        sys.stdout.write(data["text"])
                        sys.stdout.flush()
                    elif event == "error":
                        sys.stdout.write("\n")
                        fail(data["message"])
            sys.stdout.write("\n")


def models(as_json: JsonOption = False) -> None:
    """List the configured models, their aliases and capabilities."""
    loaded = settings()
    rows = [
        {
            "name": name,
            "provider": m.provider,
            "model_id": m.model_id,
            "aliases": ", ".join(m.aliases),
            "capabilities": ", ".join(m.capabilities),
            "context_window": m.context_window,
            "fallbacks": ", ".join(m.fallbacks),
        }
        for name, m in sorted(loaded.all_models().items())
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("name", "provider", "model_id", "aliases", "capabilities", "context", "fallbacks")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
