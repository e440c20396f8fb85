"""``trellis dspy modules|workflows|run``, ``datasets``, ``programs``, ``optimize``, ``deploy``,
``rollback``: DSPy modules and programs through the same services as ``/api/v1/dspy``, in-process,
acting as the owner of an API key (``--api-key``, ``TRELLIS_API_KEY``, or the saved admin key).
``--json`` prints what the API's ``data`` holds.

``optimize`` queues the cycle as a workflow run (as the REST door does) and follows it with a
progress bar fed by the run's events; on an embedded setup (no ``[workflow] queue_url``) this
process runs it, elsewhere the server's workers do. A program is named by its id or its name."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from trellis.auth.schemas import Principal
from trellis.cli.common import (
    ApiKeyOption,
    JsonOption,
    acting,
    console,
    err_console,
    fail,
    print_json,
    run,
    settings,
)
from trellis.dspy.schemas import (
    DatasetCreate,
    DatasetOut,
    DeployRequest,
    ModuleOut,
    ModuleRunOut,
    OptimizeRequest,
    ProgramCreate,
    ProgramOut,
    RollbackRequest,
    WorkflowOut,
    WorkflowRunOut,
)
from trellis.runtime import Runtime

dspy_app = typer.Typer(
    help="DSPy modules on the gateway: list them, run them; datasets, programs, optimization, deploys.",
    no_args_is_help=True,
)
datasets_app = typer.Typer(help="Datasets of labelled examples for a module.", no_args_is_help=True)
programs_app = typer.Typer(help="Programs: a module optimized and deployed in versions.", no_args_is_help=True)
dspy_app.add_typer(datasets_app, name="datasets")
dspy_app.add_typer(programs_app, name="programs")


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


# --- datasets ------------------------------------------------------------------------------------------


def _print_datasets(rows: list[DatasetOut]) -> None:
    table = Table("id", "name", "module", "examples", "created")
    for row in rows:
        table.add_row(row.id, row.name, row.module, str(row.size), row.created_at.isoformat(timespec="seconds"))
    console.print(table)


@datasets_app.command("list")
def datasets_list(api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Your datasets."""

    async def work(runtime: Runtime) -> list[DatasetOut]:
        return await runtime.dspy_programs.list_datasets(await acting(runtime, api_key))

    rows = run(work)
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    _print_datasets(rows)


@datasets_app.command("upload")
def datasets_upload(
    name: Annotated[str, typer.Argument(help="The dataset's name (unique among yours).")],
    path: Annotated[
        Path, typer.Argument(help="A .jsonl file (one example per line) or a .json list.", exists=True, dir_okay=False)
    ],
    module: Annotated[str, typer.Option("--module", "-m", help="The module whose signature the examples fit.")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload labelled examples; each is checked against the module's signature (errors name the line)."""
    content = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            examples = json.loads(content)
        except json.JSONDecodeError as exc:
            fail(f"{path} is not valid JSON: {exc}")
        if not isinstance(examples, list):
            fail(f"{path} must hold a JSON list of examples (or use a .jsonl file)")
        data = DatasetCreate(name=name, module=module, examples=examples)
    else:
        data = DatasetCreate(name=name, module=module, jsonl=content)

    async def work(runtime: Runtime) -> DatasetOut:
        return await runtime.dspy_programs.create_dataset(await acting(runtime, api_key), data)

    out = run(work)
    if as_json:
        print_json(out)
        return
    console.print(f"Dataset [bold]{escape(out.name)}[/bold] ({out.id}): {out.size} examples for {out.module}")


@datasets_app.command("show")
def datasets_show(
    dataset_id: Annotated[str, typer.Argument(help="The dataset's id.")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One dataset and its examples."""

    async def work(runtime: Runtime) -> DatasetOut:
        return await runtime.dspy_programs.get_dataset(await acting(runtime, api_key), dataset_id)

    out = run(work)
    if as_json:
        print_json(out)
        return
    _print_datasets([out])
    for example in out.examples or []:
        console.print(escape(json.dumps(example, ensure_ascii=False)))


@datasets_app.command("delete")
def datasets_delete(
    dataset_id: Annotated[str, typer.Argument(help="The dataset's id.")], api_key: ApiKeyOption = None
) -> None:
    """Delete a dataset (refused while program versions were compiled from it)."""

    async def work(runtime: Runtime) -> None:
        await runtime.dspy_programs.delete_dataset(await acting(runtime, api_key), dataset_id)

    run(work)
    console.print(f"Deleted dataset {dataset_id}")


# --- programs ------------------------------------------------------------------------------------------


async def _program_id(runtime: Runtime, actor: Principal, ref: str) -> str:
    """A program's id, from its id or its name."""
    if ref.startswith("prg_"):
        return ref
    found = await runtime.dspy_programs.program_id_by_name(actor, ref)
    return found if found is not None else ref  # the service answers the 404


def _print_program(program: ProgramOut) -> None:
    deployed = f"v{program.deployed_version}" if program.deployed_version else "none"
    console.print(
        f"[bold]{escape(program.name)}[/bold] ({program.id}): module {program.module}, "
        f"deployed {deployed}, {program.latest_version} version(s)"
    )
    if not program.versions:
        return
    table = Table(
        "version", "deployed", "baseline test", "optimized test", "optimized dev", "optimizer", "demos", "intact"
    )
    for v in program.versions:
        scores = v.scores or {}
        table.add_row(
            str(v.version),
            "✓" if v.deployed else "",
            f"{scores['baseline']['test']:.3f}" if scores else "?",
            f"{scores['optimized']['test']:.3f}" if scores else "?",
            f"{scores['optimized']['dev']:.3f}" if scores else "?",
            v.optimizer or "?",
            str(v.demos) if v.demos is not None else "?",
            "yes" if v.intact else "[red]NO: refused[/red]",
        )
    console.print(table)


@programs_app.command("list")
def programs_list(api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Your programs."""

    async def work(runtime: Runtime) -> list[ProgramOut]:
        return await runtime.dspy_programs.list_programs(await acting(runtime, api_key))

    rows = run(work)
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    table = Table("id", "name", "module", "deployed", "versions")
    for row in rows:
        table.add_row(row.id, row.name, row.module, str(row.deployed_version or "-"), str(row.latest_version))
    console.print(table)


@programs_app.command("create")
def programs_create(
    name: Annotated[str, typer.Argument(help="The program's name (unique among yours).")],
    module: Annotated[str, typer.Option("--module", "-m", help="The module it optimizes.")],
    description: Annotated[str | None, typer.Option("--description")] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a program."""

    async def work(runtime: Runtime) -> ProgramOut:
        actor = await acting(runtime, api_key)
        return await runtime.dspy_programs.create_program(
            actor, ProgramCreate(name=name, module=module, description=description)
        )

    out = run(work)
    if as_json:
        print_json(out)
        return
    _print_program(out)


@programs_app.command("show")
def programs_show(
    program: Annotated[str, typer.Argument(help="The program's id or name.")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """A program with its versions and their scores."""

    async def work(runtime: Runtime) -> ProgramOut:
        actor = await acting(runtime, api_key)
        return await runtime.dspy_programs.get_program(actor, await _program_id(runtime, actor, program))

    out = run(work)
    if as_json:
        print_json(out)
        return
    _print_program(out)


@programs_app.command("delete")
def programs_delete(
    program: Annotated[str, typer.Argument(help="The program's id or name.")], api_key: ApiKeyOption = None
) -> None:
    """Delete a program and all its versions (its datasets are kept)."""

    async def work(runtime: Runtime) -> str:
        actor = await acting(runtime, api_key)
        program_id = await _program_id(runtime, actor, program)
        await runtime.dspy_programs.delete_program(actor, program_id)
        return program_id

    console.print(f"Deleted program {run(work)}")


@programs_app.command("run")
def programs_run(
    program: Annotated[str, typer.Argument(help="The program's id or name.")],
    inputs_json: Annotated[str | None, typer.Option("--inputs", help="The inputs as a JSON object.")] = None,
    values: Annotated[list[str] | None, typer.Option("-i", help="Set one input: KEY=VALUE (repeatable).")] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the program's deployed version."""
    inputs = _inputs(inputs_json, values)

    async def work(runtime: Runtime) -> ModuleRunOut:
        actor = await acting(runtime, api_key)
        return await runtime.dspy_programs.run(actor, await _program_id(runtime, actor, program), inputs)

    out = run(work)
    if as_json:
        print_json(out)
        return
    for key, value in (out.data or {}).items():
        shown = value if isinstance(value, str) else json.dumps(value, indent=2)
        console.print(f"[bold]{escape(key)}[/bold]: {escape(str(shown))}")


# The cycle's phases as the run's events report them, and how far along each puts it.
_PHASES = {
    "dspy.split": (0.05, "evaluating the module"),
    "dspy.evaluated": (0.0, ""),  # baseline → compiling; optimized → storing (see _advance)
    "dspy.compiling": (0.35, "compiling"),
    "dspy.compiled": (0.7, "evaluating the compiled program"),
    "dspy.stored": (1.0, "stored"),
}


def _advance(kind: str, data: dict[str, Any]) -> tuple[float, str] | None:
    if kind == "dspy.evaluated":
        if data.get("program") == "baseline":
            return 0.3, f"baseline: dev {data.get('dev', 0):.2f}, test {data.get('test', 0):.2f}"
        return 0.95, f"optimized: dev {data.get('dev', 0):.2f}, test {data.get('test', 0):.2f}"
    return _PHASES.get(kind)


async def _follow(runtime: Runtime, actor: Principal, run_id: str, *, show: bool) -> Any:
    """Follow the run's events with a progress bar (on stderr, when ``show``) until it ends; returns the run."""
    seq = 0
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False, disable=not show) as progress:
        task = progress.add_task("queued", total=1.0)
        while True:
            row = await runtime.workflows.wait_for(run_id, 0.25)
            for event in await runtime.workflows.events(actor, run_id, after=seq, limit=100):
                seq = event.seq
                step = _advance(event.type, dict(event.data or {}))
                if step is not None:
                    progress.update(task, completed=step[0], description=step[1])
            if row.status in ("succeeded", "failed", "cancelled"):
                if row.status == "succeeded":
                    progress.update(task, completed=1.0)
                return row
            await asyncio.sleep(0)


@dspy_app.command("optimize")
def optimize(
    program: Annotated[str, typer.Argument(help="The program's id or name.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="The dataset's id.")],
    optimizer: Annotated[
        str, typer.Option(help="bootstrap_few_shot, labeled_few_shot, miprov2_light or gepa.")
    ] = "bootstrap_few_shot",
    seed: Annotated[int, typer.Option(help="The split's seed.")] = 0,
    max_model_calls: Annotated[int | None, typer.Option(help="The run's model-call budget.")] = None,
    model: Annotated[str | None, typer.Option(help="The gateway model.")] = None,
    max_bootstrapped_demos: Annotated[
        int | None, typer.Option(help="bootstrap_few_shot, miprov2_light: traces kept as demos (default 4).")
    ] = None,
    max_labeled_demos: Annotated[
        int | None, typer.Option(help="bootstrap_few_shot, labeled_few_shot, miprov2_light: demos from train.")
    ] = None,
    max_rounds: Annotated[int | None, typer.Option(help="bootstrap_few_shot: passes over train (default 1).")] = None,
    max_metric_calls: Annotated[
        int | None, typer.Option(help="gepa: module runs its search may make (default: GEPA's light budget).")
    ] = None,
    reflection_model: Annotated[
        str | None, typer.Option(help="gepa: the gateway model that reflects (default: --model).")
    ] = None,
    reflection_minibatch_size: Annotated[
        int | None, typer.Option(help="gepa: examples per reflection (default 3).")
    ] = None,
    deploy: Annotated[bool, typer.Option("--deploy/--no-deploy", help="Deploy the result if it is better.")] = True,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Show progress until the run ends.")] = True,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Optimize a program on a dataset: a workflow run; shows its progress and the scores. An option
    the chosen optimizer does not read is refused, naming it."""
    try:
        request = OptimizeRequest(
            dataset_id=dataset,
            optimizer=optimizer,  # type: ignore[arg-type]
            seed=seed,
            max_model_calls=max_model_calls,
            model=model,
            deploy=deploy,
            max_bootstrapped_demos=max_bootstrapped_demos,
            max_labeled_demos=max_labeled_demos,
            max_rounds=max_rounds,
            max_metric_calls=max_metric_calls,
            reflection_model=reflection_model,
            reflection_minibatch_size=reflection_minibatch_size,
        )
    except ValueError as exc:
        fail(f"invalid option: {exc}")

    async def work(runtime: Runtime) -> tuple[str, Any, ProgramOut | None]:
        actor = await acting(runtime, api_key)
        program_id = await _program_id(runtime, actor, program)
        started = await runtime.dspy_programs.start_optimization(actor, program_id, request)
        if not follow:
            return started.run_id, None, None
        if not as_json:
            err_console.print(
                f"[dim]run {started.run_id}: up to {started.estimated_model_calls} model calls[/dim]", highlight=False
            )
        row = await _follow(runtime, actor, started.run_id, show=not as_json or err_console.is_terminal)
        return started.run_id, row, await runtime.dspy_programs.get_program(actor, program_id)

    embedded = settings().workflow.queue_url is None
    run_id, row, shown = run(work, workflow_worker=follow and embedded)
    if row is None:
        console.print(f"Queued run {run_id}: follow it with `trellis workflow events {run_id} --follow`")
        return
    if as_json:
        console.print_json(
            json.dumps({"run_id": run_id, "status": row.status, "result": row.result, "error": row.error})
        )
    elif row.status == "succeeded":
        result = row.result or {}
        console.print(
            f"Version {result.get('version')}: test {result['scores']['baseline']['test']:.3f} → "
            f"{result['scores']['optimized']['test']:.3f}; "
            + ("deployed" if result.get("deployed") else f"not deployed (v{result.get('deployed_version')} stays)")
        )
        if shown is not None:
            _print_program(shown)
    if row.status != "succeeded":
        if not as_json:
            err_console.print(f"[red]Error:[/red] run {run_id} {row.status}: {row.error}", highlight=False)
        raise typer.Exit(1)


@dspy_app.command("deploy")
def deploy_version(
    program: Annotated[str, typer.Argument(help="The program's id or name.")],
    version: Annotated[int, typer.Argument(help="The version to deploy.")],
    force: Annotated[bool, typer.Option("--force", help="Even if it does not beat the deployed one on test.")] = False,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy a version, if it beats the deployed one on the held-out test split."""

    async def work(runtime: Runtime) -> ProgramOut:
        actor = await acting(runtime, api_key)
        program_id = await _program_id(runtime, actor, program)
        return await runtime.dspy_programs.deploy(actor, program_id, DeployRequest(version=version, force=force))

    out = run(work)
    if as_json:
        print_json(out)
        return
    _print_program(out)


@dspy_app.command("rollback")
def rollback_version(
    program: Annotated[str, typer.Argument(help="The program's id or name.")],
    version: Annotated[int, typer.Argument(help="An earlier version to deploy again.")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy an earlier version again."""

    async def work(runtime: Runtime) -> ProgramOut:
        actor = await acting(runtime, api_key)
        return await runtime.dspy_programs.rollback(
            actor, await _program_id(runtime, actor, program), RollbackRequest(version=version)
        )

    out = run(work)
    if as_json:
        print_json(out)
        return
    _print_program(out)
