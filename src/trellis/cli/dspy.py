"""``trellis dspy modules|workflows|run``: DSPy modules through the same service as
``/api/v1/dspy``, in-process, acting as the owner of an API key (``--api-key``,
``TRELLIS_API_KEY``, or the saved admin key). ``--json`` prints what the API's ``data`` holds."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from trellis.cli.common import ApiKeyOption, JsonOption, acting, console, fail, print_json, run
from trellis.dspy.schemas import ModuleOut, ModuleRunOut, WorkflowOut, WorkflowRunOut
from trellis.runtime import Runtime

dspy_app = typer.Typer(help="DSPy modules on the gateway: list them, run them.", no_args_is_help=True)


def _inputs(raw: str | None, pairs: list[str] | None) -> dict[str, Any]:
    data: Any = {}
    if raw is not None:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            fail(f"--inputs is not valid JSON: {exc}")
        if not isinstance(data, dict):
            fail("--inputs must be a JSON object of the module's input fields")
    for spec in pairs or []:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{spec!r}: expected KEY=VALUE", param_hint="-i")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    return dict(data)


@dspy_app.command("modules")
def modules(as_json: JsonOption = False) -> None:
    """The registered modules and their signature fields."""

    async def work(runtime: Runtime) -> list[ModuleOut]:
        return runtime.dspy.list_modules()

    found = run(work)
    if as_json:
        console.print_json(json.dumps([m.model_dump(mode="json") for m in found]))
        return
    table = Table("name", "inputs", "outputs", "description")
    for module in found:
        inputs = ", ".join(f"{f.name}{'' if f.required else '?'}: {f.type}" for f in module.inputs)
        outputs = ", ".join(f"{f.name}: {f.type}" for f in module.outputs)
        table.add_row(module.name, escape(inputs), escape(outputs), module.description)
    console.print(table)


@dspy_app.command("workflows")
def workflows(as_json: JsonOption = False) -> None:
    """The registered module workflows and their stages."""

    async def work(runtime: Runtime) -> list[WorkflowOut]:
        return runtime.dspy.list_workflows()

    found = run(work)
    if as_json:
        console.print_json(json.dumps([w.model_dump(mode="json") for w in found]))
        return
    table = Table("name", "stages", "runnable", "description")
    for flow in found:
        table.add_row(flow.name, " → ".join(s.module for s in flow.stages), str(flow.runnable), flow.description)
    console.print(table)


@dspy_app.command("run")
def run_module(
    name: Annotated[
        str, typer.Argument(help="A module's name (see `trellis dspy modules`), or a workflow's with --workflow.")
    ],
    inputs_json: Annotated[str | None, typer.Option("--inputs", help="The inputs as a JSON object.")] = None,
    values: Annotated[
        list[str] | None,
        typer.Option("-i", help="Set one input: KEY=VALUE (repeatable); VALUE is read as JSON when it parses."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="The gateway model the module uses.")] = None,
    workflow: Annotated[bool, typer.Option("--workflow", help="NAME is a module workflow: run its stages.")] = False,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a DSPy module (or a module workflow) as yourself; its model calls go through the gateway."""
    inputs = _inputs(inputs_json, values)

    async def work(runtime: Runtime) -> ModuleRunOut | WorkflowRunOut:
        actor = await acting(runtime, api_key)
        if workflow:
            return await runtime.dspy.run_workflow(actor, name, inputs, model=model)
        return await runtime.dspy.run_module(actor, name, inputs, model=model)

    out = run(work)
    if as_json:
        print_json(out)
        return
    data = out.data or {}
    for key, value in data.items():
        shown = value if isinstance(value, str) else json.dumps(value, indent=2)
        console.print(f"[bold]{escape(key)}[/bold]: {escape(str(shown))}")
    console.print(f"[dim]{out.execution_time:.2f}s[/dim]")
