"""Does the gateway keep the local model's speed?

Generates with SmolLM2-135M (model ``smollm2-135m``) two ways, in the same run:

* **direct**: ``llama-cpp-python`` in a child process, with the same model file and the same
  constructor settings the server uses (``n_ctx`` 2048, the provider's defaults otherwise),
  through ``create_chat_completion`` (so the same chat template), non-streamed; and, as a
  diagnostic, streamed, consumed piece by piece the way the server's provider does;
* **server**: ``POST /api/v1/ai/generate`` on one ``trellis serve`` (cache bypassed).

Same prompts, same ``max_tokens``, temperature 0 (greedy: both must produce the same text),
``top_p`` 1 (the gateway's default), the context reset before every generation (as the server's
provider does, so no run reuses an earlier prompt's KV cache). Both processes are pinned to the
same CPU(s) and stay up; generations alternate between them, strictly one at a time, so they never
compete for CPU and slow drifts of the machine hit both alike. The HTTP client runs on another
CPU. Prints median tokens/s per prompt and overall, and the ratio server/direct against the target
(at least 0.9).

    .venv/bin/python bench/local_model.py            # 4 prompts x 3 repetitions, about a minute
    .venv/bin/python bench/local_model.py --quick    # 2 prompts x 2 repetitions
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    NOISE_WARN_PCT,
    REPO,
    BenchError,
    median,
    new_admin_key,
    render_table,
    result_header,
    stop_on_signals,
    unlimited_rate_limits,
    write_results,
)
from _cpu import CpuMeter, own_cpu_seconds, process_cpu_seconds, wait_until_quiet
from _server import STOP_TIMEOUT_S, die_with_parent, find_trellis, running_server, server_env, stop_process_group

MODEL = "smollm2-135m"
GENERATE = "/api/v1/ai/generate"
PROMPTS = (
    "Explain what a hash table is, in a few sentences.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Give three tips for writing clear commit messages.",
    "Describe the water cycle to a ten-year-old.",
)
MAX_TOKENS = 128
TEMPERATURE = 0.0
TOP_P = 1.0  # what the gateway sends when the caller does not say
TARGET_RATIO = 0.9
RATE_LIMITS = unlimited_rate_limits("default", "ai")
GENERATE_TIMEOUT_S = 300.0


@dataclass
class Run:
    """One generation."""

    mode: str  # "direct", "direct-stream" or "server"
    prompt: int  # index into PROMPTS
    repetition: int
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    # Seconds the client waited: around create_chat_completion (direct), around the HTTP call (server).
    wall_s: float
    # Server only: the gateway's own response_time (model call, without HTTP, auth, token counting).
    response_time_s: float | None
    text: str

    @property
    def tps_wall(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tps(self) -> float:
        """Tokens/s: from the API's response_time for the server, from the wall time for direct."""
        seconds = self.response_time_s if self.response_time_s is not None else self.wall_s
        return self.completion_tokens / seconds if seconds > 0 else 0.0


# --- direct: a child process -------------------------------------------------------------------


def direct_worker() -> None:
    """In the child: load the model like the server does; answer one JSON line per JSON line."""
    from trellis.gateway.providers.llamacpp import model_path, quiet_llama_cpp
    from trellis.settings.gateway import default_models

    model = default_models()[MODEL]
    path = model_path(model)  # the file the server loads
    quiet_llama_cpp()
    from llama_cpp import Llama

    # Exactly the server's constructor arguments (trellis.gateway.providers.llamacpp._Pool._load).
    options: dict[str, Any] = {"n_ctx": model.context_window, "verbose": False}
    options.update({k: v for k, v in model.options.items() if k in {"n_threads", "n_batch", "seed"}})
    llama = Llama(model_path=str(path), **options)

    def generate(prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "stop": None,
        }
        llama.reset()  # as the server's provider does before every generation
        started = time.perf_counter()
        if not stream:
            result: Any = llama.create_chat_completion(**arguments)
            wall = time.perf_counter() - started
            choice = result["choices"][0]
            return {
                "prompt_tokens": result["usage"]["prompt_tokens"],
                "completion_tokens": result["usage"]["completion_tokens"],
                "finish_reason": choice["finish_reason"],
                "wall_s": wall,
                "text": choice["message"]["content"],
            }
        parts: list[str] = []
        finish = "stop"
        for chunk in llama.create_chat_completion(**arguments, stream=True):
            choice = chunk["choices"][0]
            delta = choice.get("delta", {}).get("content") or ""
            if delta:
                parts.append(delta)
            finish = choice.get("finish_reason") or finish
        wall = time.perf_counter() - started
        # Counted the way the server's provider counts: one streamed text piece per token.
        return {
            "prompt_tokens": llama.n_tokens - len(parts),
            "completion_tokens": len(parts),
            "finish_reason": finish,
            "wall_s": wall,
            "text": "".join(parts),
        }

    info = {
        "model_path": str(path),
        "n_ctx": llama.n_ctx(),
        "n_threads": llama.n_threads,
        "n_threads_batch": llama.n_threads_batch,
        "n_batch": llama.n_batch,
        "chat_format": llama.chat_format,
    }
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        print(json.dumps(generate(ask["prompt"], ask["max_tokens"], ask["stream"])), flush=True)


class DirectModel:
    """The direct run: a child process holding one ``Llama``, pinned like the server, idle between calls."""

    def __init__(self, cpus: str, workdir: Path) -> None:
        self._command = ["taskset", "-c", cpus, sys.executable, str(Path(__file__).resolve()), "--direct-worker"]
        self._stderr_path = workdir / "direct.stderr"
        self.process: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        with self._stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                process_group=0,
                preexec_fn=die_with_parent,
            )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(STOP_TIMEOUT_S)
            tail = self._stderr_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"the direct llama-cpp-python process exited ({self.process.returncode}):\n{tail}")
        result: dict[str, Any] = json.loads(line)
        return result

    def generate(self, prompt: str, max_tokens: int, *, stream: bool) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"prompt": prompt, "max_tokens": max_tokens, "stream": stream}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def cpu_seconds(self) -> float | None:
        return None if self.process is None else process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()  # the worker's loop ends
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_process_group(process)
        if process.stdout is not None:
            process.stdout.close()


# --- the server --------------------------------------------------------------------------------


def _generate(port: int, prompt: str, auth: dict[str, str], max_tokens: int) -> tuple[dict[str, Any], float]:
    """One generation on a fresh connection (connected before the clock starts); returns data and wall time."""
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "cache": "bypass",
    }
    conn = http.client.HTTPConnection(HOST, port, timeout=GENERATE_TIMEOUT_S)
    try:
        conn.connect()
        started = time.perf_counter()
        conn.request("POST", GENERATE, body=json.dumps(body), headers={"Content-Type": "application/json", **auth})
        response = conn.getresponse()
        payload = response.read()
        wall = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 200:
        raise BenchError(f"POST {GENERATE} answered {response.status}: {payload[:500]!r}")
    data: dict[str, Any] = json.loads(payload)["data"]
    if data["cached"] or data["model"] != MODEL or data["provider"] != "llamacpp":
        raise BenchError(f"POST {GENERATE} was not a fresh local generation: {data}")
    return data, wall


def measure(
    args: argparse.Namespace, prompts: Sequence[str], trellis: Path
) -> tuple[list[Run], dict[str, Any], list[float | None]]:
    """Both processes stay up; generations alternate between them, one at a time."""
    admin_key = new_admin_key()
    auth = {"Authorization": f"Bearer {admin_key}"}
    runs: list[Run] = []
    noise_pct: list[float | None] = []
    with tempfile.TemporaryDirectory(prefix="trellis-local-bench-") as tmp:
        direct = DirectModel(args.cpus, Path(tmp))
        env = server_env(Path(tmp) / "data", admin_key, rate_limits=RATE_LIMITS, gateway__cache_enabled=False)
        try:
            print(f"== direct: llama-cpp-python in a child process on CPU(s) {args.cpus}: loading", flush=True)
            direct.start()
            info = direct.info
            print(
                f"   n_ctx {info['n_ctx']}, n_threads {info['n_threads']}, n_threads_batch {info['n_threads_batch']},"
                f" n_batch {info['n_batch']}, chat format {info['chat_format']}",
                flush=True,
            )
            print(f"== server: trellis serve on CPU(s) {args.cpus}, POST {GENERATE}", flush=True)
            # A taskset CPU list, as for the direct process.
            with running_server(trellis, env, Path(tmp), args.cpus) as server:
                # Warm-up, not measured: the server loads the model (and its tokenizer) on first use.
                direct.generate(prompts[0], args.max_tokens, stream=False)
                _generate(server.port, prompts[0], auth, args.max_tokens)
                modes = ["direct", *(["direct-stream"] if args.direct_stream else []), "server"]
                for repetition in range(args.repetitions):
                    if args.quiet_wait > 0:
                        wait_until_quiet(args.quiet_wait)
                    # Everything but the two model processes and this one (the HTTP client) is noise.
                    with CpuMeter(server=server.cpu_seconds, direct=direct.cpu_seconds, own=own_cpu_seconds) as noise:
                        # Alternate which side goes first, so neither always runs right after the other.
                        order = modes if repetition % 2 == 0 else modes[::-1]
                        for index, prompt in enumerate(prompts):
                            for mode in order:
                                runs.append(_one(mode, index, repetition, prompt, direct, server.port, auth, args))
                    noise_pct.append(noise.other_pct)
                    other = "-" if noise.other_pct is None else f"{noise.other_pct:.0f}%"
                    print(
                        f"   repetition {repetition + 1}/{args.repetitions}: {len(prompts) * len(modes)} generations"
                        f" (other processes' CPU: {other} of a core)",
                        flush=True,
                    )
        finally:
            direct.stop()
    return runs, info, noise_pct


def _one(
    mode: str,
    index: int,
    repetition: int,
    prompt: str,
    direct: DirectModel,
    port: int,
    auth: dict[str, str],
    args: argparse.Namespace,
) -> Run:
    if mode == "server":
        data, wall = _generate(port, prompt, auth, args.max_tokens)
        return Run(
            mode=mode,
            prompt=index,
            repetition=repetition,
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            finish_reason=data["finish_reason"],
            wall_s=wall,
            response_time_s=data["response_time"],
            text=data["response"],
        )
    out = direct.generate(prompt, args.max_tokens, stream=mode == "direct-stream")
    return Run(mode=mode, prompt=index, repetition=repetition, response_time_s=None, **out)


# --- report ------------------------------------------------------------------------------------


def render_runs(runs: Sequence[Run], prompts: Sequence[str]) -> str:
    modes = [m for m in ("direct", "direct-stream") if any(r.mode == m for r in runs)]
    header = ["prompt", "tokens", "direct tok/s", *(["direct-stream tok/s"] if "direct-stream" in modes else [])]
    header += ["server tok/s", "server wall tok/s", "ratio", "ratio wall", "same text"]
    rows: list[list[str]] = []

    def cells(label: str, selected: Sequence[Run]) -> list[str]:
        direct = [r.tps for r in selected if r.mode == "direct"]
        stream = [r.tps for r in selected if r.mode == "direct-stream"]
        server = [r for r in selected if r.mode == "server"]
        server_tps = median([r.tps for r in server])
        server_wall = median([r.tps_wall for r in server])
        direct_tokens = sorted({r.completion_tokens for r in selected if r.mode == "direct"})
        server_tokens = sorted({r.completion_tokens for r in server})
        tokens = "/".join(str(t) for t in direct_tokens)
        if server_tokens != direct_tokens:
            tokens += " vs " + "/".join(str(t) for t in server_tokens)
        same = all(
            s.text == d.text
            for s in server
            for d in selected
            if d.mode == "direct" and d.prompt == s.prompt and d.repetition == s.repetition
        )
        row = [label, tokens if label[0].isdigit() else "", f"{median(direct):.1f}"]
        if "direct-stream" in modes:
            row.append(f"{median(stream):.1f}")
        row += [
            f"{server_tps:.1f}",
            f"{server_wall:.1f}",
            f"{server_tps / median(direct):.3f}",
            f"{server_wall / median(direct):.3f}",
            "yes" if same else "NO",
        ]
        return row

    for index, prompt in enumerate(prompts):
        short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
        rows.append(cells(f"{index + 1}. {short}", [r for r in runs if r.prompt == index]))
    rows.append(cells("all (median of every run)", runs))
    return render_table(header, rows)


def render_verdict(runs: Sequence[Run]) -> str:
    direct = median([r.tps for r in runs if r.mode == "direct"])
    server = [r for r in runs if r.mode == "server"]
    server_tps, server_wall = median([r.tps for r in server]), median([r.tps_wall for r in server])
    ratio, ratio_wall = server_tps / direct, server_wall / direct
    lines = [
        f"Target: the server keeps at least {TARGET_RATIO:g} of direct llama-cpp-python tokens/s",
        f"  median tokens/s: direct {direct:.1f}, server {server_tps:.1f} (API response_time),"
        f" {server_wall:.1f} (client wall time)",
        f"  ratio server/direct: {ratio:.3f} by response_time -> {'met' if ratio >= TARGET_RATIO else 'MISSED'};"
        f" {ratio_wall:.3f} by client wall time -> {'met' if ratio_wall >= TARGET_RATIO else 'MISSED'}",
    ]
    # Cross-check, robust to a machine that is busy now and then: each server generation against
    # the direct one of the same prompt and repetition, which ran right next to it.
    pairs = [
        (s.tps / d.tps, s.tps_wall / d.tps)
        for s in server
        for d in runs
        if d.mode == "direct" and (d.prompt, d.repetition) == (s.prompt, s.repetition) and d.tps > 0
    ]
    if pairs:
        lines.append(
            f"  paired (each server run / the direct run of the same prompt next to it), median of {len(pairs)}:"
            f" {median([p[0] for p in pairs]):.3f} by response_time, {median([p[1] for p in pairs]):.3f} by wall time"
            f" (range {min(p[0] for p in pairs):.2f}-{max(p[0] for p in pairs):.2f})"
        )
    mismatched = {
        (s.prompt, s.repetition, s.completion_tokens, d.completion_tokens)
        for s in server
        for d in runs
        if d.mode == "direct" and (d.prompt, d.repetition) == (s.prompt, s.repetition)
        if s.completion_tokens != d.completion_tokens
    }
    if mismatched:
        lines.append(
            f"  note: completion_tokens differ between server and direct for {len(mismatched)} run(s)"
            " (the server counts streamed text pieces)"
        )
    return "\n".join(lines)


def write_json(runs: Sequence[Run], info: dict[str, Any], noise: list[float | None], args: argparse.Namespace) -> Path:
    import llama_cpp

    document: dict[str, Any] = {
        **result_header("local_model", args.started),
        "llama_cpp_python": llama_cpp.__version__,
        "settings": {
            "cpus": args.cpus,
            "client_cpu": args.client_cpu,
            "max_tokens": args.max_tokens,
            "repetitions": args.repetitions,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "prompts": list(PROMPTS[: args.prompts]),
        },
        "llama": info,
        "other_cpu_pct": noise,
        "runs": [asdict(r) | {"tps": r.tps, "tps_wall": r.tps_wall} for r in runs],
    }
    return write_results("local_model", args.started, document)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 prompts x 2 repetitions")
    parser.add_argument("--prompts", type=int, default=None, help=f"how many prompts (1-{len(PROMPTS)}; default all)")
    parser.add_argument("--repetitions", type=int, default=None, help="generations per prompt and mode (default 3)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"default {MAX_TOKENS}")
    parser.add_argument(
        "--direct-stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time direct streamed generation, the way the server's provider consumes it (default on)",
    )
    parser.add_argument("--cpus", default="0", help="CPU list (taskset syntax) for the model, in both runs (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for this process, the HTTP client (default 1)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each phase, wait up to this many seconds for other processes to go below "
        f"{NOISE_WARN_PCT:g}%% of a core (0: do not wait)",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/local_model-*.json")
    parser.add_argument("--direct-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prompts is None:
        args.prompts = 2 if args.quick else len(PROMPTS)
    if args.repetitions is None:
        args.repetitions = 2 if args.quick else 3
    if not 1 <= args.prompts <= len(PROMPTS) or args.repetitions < 1 or args.max_tokens < 1:
        parser.error(f"--prompts must be 1-{len(PROMPTS)}, --repetitions and --max-tokens at least 1")
    args.started = datetime.now(UTC)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.direct_worker:
        direct_worker()
        return 0
    stop_on_signals()
    prompts = PROMPTS[: args.prompts]
    try:
        trellis = find_trellis()
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.client_cpu})  # the HTTP client, away from the model's CPU
        runs, info, noise = measure(args, prompts, trellis)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; server and direct process stopped", file=sys.stderr)
        return 130
    print(
        f"\nTrellis local model throughput: {MODEL} ({Path(info['model_path']).name}), max_tokens {args.max_tokens},"
        f" temperature {TEMPERATURE:g}, {len(prompts)} prompts x {args.repetitions} repetition(s),"
        f" model on CPU(s) {args.cpus} (direct and server alternating, never at once)\n"
    )
    print(render_runs(runs, prompts))
    print()
    print(render_verdict(runs))
    noisy = [pct for pct in noise if pct is not None and pct > NOISE_WARN_PCT]
    if noisy:
        print(
            f"\nWARNING: other processes used more than {NOISE_WARN_PCT:g}% of a core during {len(noisy)} of"
            f" {len(noise)} repetition(s) (up to {max(noisy):.0f}%): rerun on a quiet machine."
        )
    if not args.no_json:
        print(f"\nJSON: {write_json(runs, info, noise, args).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
